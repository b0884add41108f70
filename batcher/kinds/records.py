"""Result records: the lines of results.jsonl and errors.jsonl (the journal), from which every other
output is derived (outputs/sinks.py). A result's first keys (id, row_number, usage, cost_usd) keep their
order: resume reads them fast.
"""

from __future__ import annotations

from typing import Any

from batcher.errors import AnswerInvalid, RequestFailed
from batcher.kinds.choices import choice_fields
from batcher.kinds.completion import Completion

#: Names a result line already uses; input columns named so cannot be kept.
RESERVED_COLUMNS = (
    "id",
    "row_number",
    "cost_usd",
    "content",
    "tool_calls",
    "finish_reason",
    "choices",
    "logprobs",
    "usage",
    "model",
    "latency_ms",
    "attempts",
    "error",
    "response",
    "reused_from",
)


def result_record(
    row_id: str,
    row_number: int,
    completion: Completion,
    attempts: int,
    kept: dict[str, Any],
    answer: dict[str, Any] | None = None,
    *,
    cost: float | None,
    with_response: bool,
    reused_from: str | None = None,
) -> dict[str, Any]:
    """A results line. Its first keys (id, row_number, usage, cost_usd) keep this order: resume
    reads them fast. `choices` and `logprobs` come only with an answer that has them (choices.py)."""
    record = {
        "id": row_id,
        "row_number": row_number,
        "usage": None if reused_from else result_usage(completion.usage),  # a reused answer cost nothing
        "cost_usd": cost,
        "content": completion.content,
        "tool_calls": completion.tool_calls,
        "finish_reason": completion.finish_reason,
        "model": completion.model,
        "latency_ms": completion.latency_ms,
        "attempts": attempts,
        **(answer or {}),
        **kept,
    }
    extra = choice_fields(completion.body)
    if extra is not None:
        record.update(extra)
    if reused_from:
        record["reused_from"] = reused_from
    if with_response:
        record["response"] = {
            "status_code": 200,
            "request_id": completion.request_id,
            "body": completion.body,
        }
    return record


def error_record(
    row_id: str,
    row_number: int,
    error: RequestFailed,
    attempts: int,
    kept: dict[str, Any],
    *,
    cost: float | None = None,
) -> dict[str, Any]:
    record = {"id": row_id, "row_number": row_number, "error": error.as_record(), "attempts": attempts}
    if isinstance(error, AnswerInvalid):  # the server answered: keep what it said, and what it cost
        record["usage"] = result_usage(error.usage)
        record["cost_usd"] = cost
        record["content"] = error.content
    return {**record, **kept}


def result_usage(usage: dict[str, Any] | None) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }

"""Every choice of a chat answer, and its logprobs, as fields of the result record.

A result's `content`, `tool_calls` and `finish_reason` are the first choice's. An answer to a
request with `n` > 1 adds `choices` (every choice, the first included, in the answer's order);
one to a request with `logprobs` adds `logprobs` (the first choice's, as the API returns it).
The common answer, one choice without logprobs, adds no key: it costs one look at the body.
"""

from __future__ import annotations

from typing import Any


def choice_fields(body: Any) -> dict[str, Any] | None:
    """The `choices` and `logprobs` an answer's body adds to its result; None when it adds neither."""
    try:
        choices = body["choices"]
        logprobs = choices[0].get("logprobs")
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    if len(choices) == 1 and not logprobs:
        return None
    fields: dict[str, Any] = {}
    if len(choices) > 1:
        fields["choices"] = [_choice(choice) for choice in choices]
    if logprobs:
        fields["logprobs"] = logprobs
    return fields


def _choice(choice: Any) -> dict[str, Any]:
    """One choice as a result keeps it: its index, text, tool calls, finish reason and logprobs."""
    if not isinstance(choice, dict):
        return {"index": None, "content": None, "tool_calls": None, "finish_reason": None}
    message = choice.get("message") or {}
    kept = {
        "index": choice.get("index"),
        "content": message.get("content"),
        "tool_calls": message.get("tool_calls") or None,
        "finish_reason": choice.get("finish_reason"),
    }
    if choice.get("logprobs"):
        kept["logprobs"] = choice["logprobs"]
    return kept

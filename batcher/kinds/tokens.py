"""Estimating a request's tokens before it is sent, corrected by the usage that comes back.

Prompts are counted at CHARS_PER_TOKEN characters a token (the ratio corrected from each
answer's `usage.prompt_tokens`), plus the tokens OpenAI adds for a request and each message, and
the JSON of the tools and of a structured-output schema, which OpenAI bills as prompt. The figure
was measured with OpenAI's own tokenizers (o200k, cl100k) on the shipped jobs' prompts and schemas
(benchmarks/token_estimates.py, docs/estimates.md). Completions count at `max_tokens`, which is what
OpenAI-like providers charge against a tokens-per-minute limit at admission; a dry run also shows
what they are expected to use (`expected_completion`). Exact counting (tiktoken) needs files from
the network; rate limiting needs only an estimate that errs a little high.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: Tokens a request is assumed to generate when it sets no max_tokens, until
#: the usage coming back says otherwise.
DEFAULT_COMPLETION_TOKENS = 256
#: Characters a token before any answer says otherwise: o200k counted 4.36 to 4.59 on the shipped
#: prompts, 4.3 on their schemas' JSON; cl100k 4.41 on the articles embedded.
CHARS_PER_TOKEN = 4.4
#: Tokens OpenAI counts for a request, for each message (its role and framing), and for an image
#: part (low detail), as its cookbook counts them and the simulator bills them.
REQUEST_TOKENS, MESSAGE_TOKENS, IMAGE_TOKENS = 3, 4, 85
#: The same, as characters (what prompt_chars counts, so that the ratio learnt from usage corrects them).
_REQUEST_CHARS, _MESSAGE_CHARS, _IMAGE_CHARS = (
    round(tokens * CHARS_PER_TOKEN) for tokens in (REQUEST_TOKENS, MESSAGE_TOKENS, IMAGE_TOKENS)
)
#: A max_tokens at most this is expected to be used whole (a label, a number, a word or two).
SHORT_CAP = 16
#: The share of a longer max_tokens an answer is expected to use: caps are set with room to spare
#: (answers of the shipped jobs used 16 to 26% on the simulator; see docs/estimates.md).
EXPECTED_SHARE = 1 / 3


def compact_json(value: Any) -> str:
    """`value` as compact JSON, as a server reads the tools and the schema a request carries."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def schema_of(body: dict[str, Any]) -> Any:
    """The JSON Schema of a body's structured-output `response_format`, or None."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    described = fmt.get("json_schema")
    return described.get("schema") if isinstance(described, dict) else None


def expected_completion(max_tokens: int, answer_chars: int | None = None) -> int:
    """Completion tokens an answer capped at `max_tokens` is expected to use: those of an answer of
    known length (`answer_chars`: a label), else all of a short cap and a share of a longer one."""
    if answer_chars is not None:
        return min(max_tokens, round(answer_chars / CHARS_PER_TOKEN) + 1)
    if max_tokens <= SHORT_CAP:
        return max_tokens
    return round(max_tokens * EXPECTED_SHARE)


def choices_asked(body: dict[str, Any]) -> int:
    """The choices a chat request asks for (`n`): each may run to max_tokens, and each is paid."""
    n = body.get("n")
    return n if type(n) is int and n > 1 else 1


class TokenEstimator:
    """Estimates a request's tokens before sending; calibrated by returned usage.

    The prompt is estimated from its characters (CHARS_PER_TOKEN for English),
    with the ratio corrected by each response's `usage.prompt_tokens`; the
    completion counts as max_tokens, which is what OpenAI-like providers charge at
    admission, or as the mean completion seen so far when a request sets none.
    """

    __slots__ = ("chars_per_token", "mean_completion", "_seen", "_json")

    def __init__(self) -> None:
        self.chars_per_token = CHARS_PER_TOKEN
        self.mean_completion = float(DEFAULT_COMPLETION_TOKENS)
        self._seen = 0
        #: (value, its compact JSON's length) of the tools and schema last measured: every row of a
        #: job carries the same objects, measured once.
        self._json: dict[str, tuple[Any, int]] = {}

    def prompt_chars(self, body: dict[str, Any]) -> int:
        """The characters of a body's prompt, with the framing OpenAI counts (as characters at
        CHARS_PER_TOKEN, so that the ratio learnt from usage corrects them too)."""
        chars = _REQUEST_CHARS
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        chars += len(part["text"])
                    else:
                        chars += _IMAGE_CHARS
            chars += _MESSAGE_CHARS  # role and message framing
        tools = body.get("tools")
        if tools is not None:
            chars += self._json_chars("tools", tools)
        schema = schema_of(body)
        if schema is not None:
            chars += self._json_chars("schema", schema)
        return chars

    def _json_chars(self, name: str, value: Any) -> int:
        known = self._json.get(name)
        if known is None or known[0] is not value:
            known = self._json[name] = (value, len(compact_json(value)))
        return known[1]

    def estimate(self, body: dict[str, Any], prompt_chars: int) -> int:
        prompt, completion = self.parts(body, prompt_chars)
        return prompt + completion + 1

    def parts(self, body: dict[str, Any], prompt_chars: int) -> tuple[int, int]:
        """(prompt, completion) tokens expected: the completion at its max_tokens where set, for each
        of the `n` choices asked."""
        completion = body.get("max_completion_tokens") or body.get("max_tokens") or self.mean_completion
        return int(prompt_chars / self.chars_per_token), int(completion) * choices_asked(body)

    def observe(self, prompt_chars: int, usage: dict[str, Any] | None) -> None:
        """Fold one response's usage into the estimates (exponential moving average)."""
        if not usage:
            return
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        weight = max(0.05, 1.0 / (self._seen + 1))
        self._seen += 1
        if isinstance(prompt_tokens, int) and prompt_tokens > 0 and prompt_chars > 0:
            ratio = prompt_chars / prompt_tokens
            self.chars_per_token += weight * (ratio - self.chars_per_token)
            self.chars_per_token = min(max(self.chars_per_token, 0.5), 16.0)
        if isinstance(completion_tokens, int) and completion_tokens >= 0:
            self.mean_completion += weight * (completion_tokens - self.mean_completion)


def admission_charge(body: Mapping[str, Any], usage: Mapping[str, Any]) -> int:
    """The tokens a server charged an answered request at admission, as far as the client can
    tell: its prompt and max_tokens, not only the tokens generated."""
    most = body.get("max_completion_tokens") or body.get("max_tokens")
    return (usage.get("prompt_tokens") or 0) + (most or usage.get("completion_tokens") or 0)

"""Estimating a request's tokens before it is sent, corrected by the usage that comes back.

Prompts are counted at about 4 characters a token (the ratio corrected from each
answer's `usage.prompt_tokens`), completions at `max_tokens`, which is what
OpenAI-like providers charge against a tokens-per-minute limit at admission.
Exact counting (tiktoken) needs files from the network; rate limiting needs only
an estimate that errs a little high.
"""

from __future__ import annotations

from typing import Any

#: Tokens a request is assumed to generate when it sets no max_tokens, until
#: the usage coming back says otherwise.
DEFAULT_COMPLETION_TOKENS = 256


class TokenEstimator:
    """Estimates a request's tokens before sending; calibrated by returned usage.

    The prompt is estimated from its characters (about 4 per token for English),
    with the ratio corrected by each response's `usage.prompt_tokens`; the
    completion counts as max_tokens, which is what OpenAI-like providers charge at
    admission, or as the mean completion seen so far when a request sets none.
    """

    __slots__ = ("chars_per_token", "mean_completion", "_seen")

    def __init__(self) -> None:
        self.chars_per_token = 4.0
        self.mean_completion = float(DEFAULT_COMPLETION_TOKENS)
        self._seen = 0

    def prompt_chars(self, body: dict[str, Any]) -> int:
        chars = 0
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
                        chars += 85 * 4  # an image part: a low-detail image's tokens
            chars += 16  # role and message framing
        for key in ("tools", "response_format"):
            if key in body:
                chars += len(str(body[key]))
        return chars

    def estimate(self, body: dict[str, Any], prompt_chars: int) -> int:
        prompt, completion = self.parts(body, prompt_chars)
        return prompt + completion + 1

    def parts(self, body: dict[str, Any], prompt_chars: int) -> tuple[int, int]:
        """(prompt, completion) tokens expected: the completion at its max_tokens where set."""
        completion = body.get("max_completion_tokens") or body.get("max_tokens") or self.mean_completion
        return int(prompt_chars / self.chars_per_token), int(completion)

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

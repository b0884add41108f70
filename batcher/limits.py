"""Requests- and tokens-per-minute pacing, and the cool-down every worker shares.

Each limit is an aiolimiter bucket holding about one second of the per-minute
rate (`burst_seconds`), so admissions are spread evenly over the minute instead
of a full minute's worth at once. Tokens are admitted first come, first served.
A request larger than the token bucket waits for its whole share in
bucket-sized steps rather than being refused. A 429 sets a cool-down that every
worker waits out before its next request. Limits the user does not give are
learned from the server's `x-ratelimit-limit-*` headers. See
docs/rate-limits.md for the trade-offs.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping
from typing import Any

from aiolimiter import AsyncLimiter

#: Tokens a request is assumed to generate when it sets no max_tokens, until
#: the usage coming back says otherwise.
DEFAULT_COMPLETION_TOKENS = 256


def _limit(value: str | None) -> float | None:
    try:
        limit = float(value) if value else None
    except ValueError:
        return None
    return limit if limit and limit > 0 and math.isfinite(limit) else None


def _bucket(per_minute: float, burst_seconds: float) -> AsyncLimiter:
    # The bucket must hold at least one acquisition of 1, so slow rates get a
    # longer period (e.g. 10 RPM -> one request per 6 s).
    period = max(burst_seconds, 60.0 / per_minute)
    return AsyncLimiter(per_minute / 60.0 * period, period)


class RateLimits:
    """RPM and TPM buckets plus a shared cool-down after 429s.

    A limit the user did not give is learned from the server's
    `x-ratelimit-limit-requests` / `-tokens` headers as answers arrive.
    """

    __slots__ = (
        "_requests",
        "_tokens",
        "_token_turn",
        "_cooldown_until",
        "_burst",
        "_learn_rpm",
        "_learn_tpm",
        "rpm",
        "tpm",
    )

    def __init__(self, rpm: float | None, tpm: float | None, *, burst_seconds: float = 1.0):
        self._burst = burst_seconds
        self.rpm, self.tpm = rpm, tpm
        self._learn_rpm, self._learn_tpm = rpm is None, tpm is None
        self._requests = _bucket(rpm, burst_seconds) if rpm else None
        self._tokens = _bucket(tpm, burst_seconds) if tpm else None
        # aiolimiter wakes its smallest waiter first, so a stream of short requests
        # could hold a long one back for good; asyncio.Lock hands turns out in order.
        self._token_turn = asyncio.Lock()
        self._cooldown_until = 0.0

    def learn(self, headers: Mapping[str, str]) -> None:
        """Adopt the limits a server announces, for those the user left open."""
        if self._learn_rpm:
            limit = _limit(headers.get("x-ratelimit-limit-requests"))
            if limit and limit != self.rpm:
                self.rpm = limit
                self._requests = _bucket(limit, self._burst)
        if self._learn_tpm:
            limit = _limit(headers.get("x-ratelimit-limit-tokens"))
            if limit and limit != self.tpm:
                self.tpm = limit
                self._tokens = _bucket(limit, self._burst)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of about `tokens` tokens may be sent."""
        await self._wait_cooldown()
        if self._requests is not None:
            await self._requests.acquire()
        if self._tokens is not None:
            await self.charge_tokens(tokens)

    async def charge_tokens(self, tokens: float) -> None:
        """Take `tokens` from the token bucket, in bucket-sized steps if needed."""
        if self._tokens is None:
            return
        async with self._token_turn:  # first come, first served
            while tokens > 0:
                step = min(tokens, self._tokens.max_rate)
                await self._tokens.acquire(step)
                tokens -= step

    def has_room(self, tokens: int) -> bool:
        """Whether a request of about `tokens` could be admitted right now."""
        if time.monotonic() < self._cooldown_until:
            return False
        if self._requests is not None and not self._requests.has_capacity(1):
            return False
        return self._tokens is None or self._tokens.has_capacity(min(tokens, self._tokens.max_rate))

    def cool_down(self, seconds: float) -> None:
        """Hold every worker back for `seconds` (after a 429)."""
        self._cooldown_until = max(self._cooldown_until, time.monotonic() + seconds)

    async def _wait_cooldown(self) -> None:
        while (remaining := self._cooldown_until - time.monotonic()) > 0:
            # A little jitter so the workers do not all fire in the same instant.
            await asyncio.sleep(remaining + random.uniform(0, min(0.25, remaining)))


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

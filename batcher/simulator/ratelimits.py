"""RPM and TPM limits as OpenAI keeps them: token buckets that answer 429 with how long to wait.

A request is charged on admission for its prompt plus its max_tokens (256 when unset), as
OpenAI counts toward TPM. Each bucket holds only `burst_seconds` of its per-minute rate, so
`x-ratelimit-remaining-*` says what may be sent right now, not what is left of the minute.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from batcher.simulator.config import SimulatorConfig
from batcher.simulator.contract import error_response

#: The completion tokens charged for a request that does not set max_tokens.
_UNSET_MAX_TOKENS = 256


def admission_tokens(body: dict[str, Any], prompt_tokens: int) -> int:
    """The tokens a request is charged on admission: its prompt and the most it may be answered."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return prompt_tokens + (max_tokens or _UNSET_MAX_TOKENS)


class Bucket:
    """A token bucket holding `burst_seconds` of a per-minute rate."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, burst_seconds: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` fits (0 if it fits now)."""
        self._refill()
        amount = min(amount, self.capacity)
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)

    def reset_in(self) -> float:
        return (self.capacity - self.level) / self.rate


class RateLimits:
    """The simulator's requests and tokens buckets (each only if its limit is set)."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        #: (kind, bucket, per-minute limit), requests before tokens.
        self._buckets = [
            (kind, Bucket(limit, config.burst_seconds), limit)
            for kind, limit in (("requests", config.rpm), ("tokens", config.tpm))
            if limit
        ]

    def admit(self, tokens: int) -> web.Response | None:
        """Take one request and `tokens` from the buckets, or answer 429 saying how long to wait."""
        amounts = {"requests": 1, "tokens": tokens}
        waits = [(kind, bucket.wait_for(amounts[kind]), limit) for kind, bucket, limit in self._buckets]
        blocked = [(kind, wait, limit) for kind, wait, limit in waits if wait > 0]
        if blocked:
            return self._refusal(*max(blocked, key=lambda waiting: waiting[1]))
        for kind, bucket, _ in self._buckets:
            bucket.take(amounts[kind])
        return None

    def headers(self) -> dict[str, str]:
        """The `x-ratelimit-*` headers this simulator announces (see `rate_limit_headers`)."""
        headers: dict[str, str] = {}
        announce = self.config.rate_limit_headers
        if announce == "none":
            return headers
        for kind, bucket, limit in self._buckets:
            # Remaining is what may be sent right now: the bucket holds only a burst of the limit.
            if announce == "all":
                headers[f"x-ratelimit-limit-{kind}"] = f"{limit:g}"
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = duration(bucket.reset_in())
        return headers

    def _refusal(self, kind: str, wait: float, limit: float) -> web.Response:
        headers = self.headers()
        if self.config.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{self.config.retry_after_ms:g}"
        else:
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        return error_response(
            429,
            "rate_limit_error",
            f"Rate limit reached for {kind} per min (RPM/TPM): Limit {limit:g}. "
            f"Please try again in {duration(wait)}.",
            code="rate_limit_exceeded",
            headers=headers,
        )


def duration(seconds: float) -> str:
    """OpenAI's reset format: '1s', '6m0s', '20ms'."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"

"""When to try a failed request again, and how long to wait first.

Exponential backoff with full jitter (a uniform draw between 0 and
`base * 2**attempt`, capped), which spreads retries of many workers apart
instead of letting them return in step. A server's own `retry-after` wins when
it asks for longer, up to `max_delay`. Only `Retryable` failures are retried,
at most `max_retries` times per row. See docs/retries.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import RequestFailed


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 8
    base_delay: float = 0.5
    max_delay: float = 60.0

    def should_retry(self, error: RequestFailed, attempt: int) -> bool:
        """`attempt` is the 1-based number of the attempt that just failed."""
        return error.retryable and attempt <= self.max_retries

    def delay(self, error: RequestFailed, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1`."""
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if error.retry_after is not None:
            return min(self.max_delay, max(error.retry_after, backoff))
        return backoff

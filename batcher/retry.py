"""When to try a failed request again, and how long to wait first.

Exponential backoff with full jitter (a uniform draw between 0 and
`base * 2**n`, capped), which spreads retries of many workers apart instead of
letting them return in step. When the server names a wait (`retry-after`), that
wait is used, plus up to 10% jitter, capped at `max_delay`. Rate limits (429)
are expected in a batch and do not use up `max_retries`: they have their own,
larger allowance, so a 429 storm delays rows instead of failing them. See
docs/retries.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import RateLimited, RequestFailed


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: Retries of one row for errors other than 429.
    max_retries: int = 8
    #: Retries of one row answered 429.
    max_rate_limited: int = 50
    base_delay: float = 0.5
    max_delay: float = 60.0

    def should_retry(self, error: RequestFailed, failures: int, rate_limited: int) -> bool:
        """Whether to try again after `failures` non-429 and `rate_limited` 429 failed attempts."""
        if not error.retryable:
            return False
        if isinstance(error, RateLimited):
            return rate_limited <= self.max_rate_limited
        return failures <= self.max_retries

    def delay(self, error: RequestFailed, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt."""
        if error.retry_after is not None:
            wait = min(self.max_delay, error.retry_after)
            return wait + random.uniform(0, wait / 10)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (max(failures, 1) - 1)))

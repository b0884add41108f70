"""When to try a failed request again, and how long to wait first.

Exponential backoff with full jitter (a uniform draw between 0 and
`base * 2**n`, capped), which spreads retries of many workers apart instead of
letting them return in step. When the server names a wait (`retry-after`), that
wait is used, plus up to 10% jitter, capped at `max_delay`. A 429 and a server
that cannot be reached are the run's signal, not the row's failure: they never
use up `max_retries`; the limiter slows every worker after a 429, and the run
stops, resumably, only when nothing has succeeded for `patience` seconds. See
docs/retries.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from batcher.errors import AnswerInvalid, RateLimited, RequestFailed, Unreachable


@dataclass(slots=True)
class Tries:
    """One row's attempts so far, by what became of them."""

    attempts: int = 0
    #: Failures counted against max_retries.
    failures: int = 0
    #: Answers that did not parse, counted against parse_retries.
    parse_failures: int = 0
    #: 429s and failed connections: the run's, not the row's.
    waits: int = 0

    def count(self, failure: RequestFailed) -> None:
        if isinstance(failure, AnswerInvalid):
            self.parse_failures += 1
        elif isinstance(failure, (RateLimited, Unreachable)):
            self.waits += 1
        else:
            self.failures += 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: Retries of one row for errors other than 429 and unreachable servers.
    max_retries: int = 8
    #: Times an answer that does not parse or validate is asked for again.
    parse_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 60.0

    def next_delay(self, failure: RequestFailed, tries: Tries, *, elsewhere: bool = False) -> float | None:
        """Seconds to wait before trying again, or None when the row has failed for good.

        `elsewhere`: another endpoint may answer what this one could not.
        """
        if isinstance(failure, AnswerInvalid):
            return 0.0 if failure.retryable and tries.parse_failures <= self.parse_retries else None
        if isinstance(failure, RateLimited):
            return 0.0  # the limiter holds every worker back for the retry-after
        if isinstance(failure, Unreachable):
            # Equal jitter: never at once (the server is down), never in step.
            cap = min(self.max_delay, self.base_delay * 2 ** (max(tries.waits, 1) - 1))
            return random.uniform(cap / 2, cap)
        if not (failure.retryable or (failure.endpoint_fault and elsewhere)):
            return None
        if tries.failures > self.max_retries:
            return None
        return self.delay(failure, tries.failures)

    def delay(self, error: RequestFailed, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt."""
        if error.retry_after is not None:
            wait = min(self.max_delay, error.retry_after)
            return wait + random.uniform(0, wait / 10)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (max(failures, 1) - 1)))

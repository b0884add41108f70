"""Counters of a run, latency percentiles, and summary.json.

Row counts (ok, failed) advance only when a row is durable, so what the progress
bar and the summary report as done is on disk. Nothing here grows with the rows:
latencies go into a histogram. Token totals cover every session
of the run directory; requests, retries, 429s and latencies cover this session.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

#: A latency bin's width, in log1p(ms): bins 2% wide.
_BIN_WIDTH = math.log(1.02)
_log1p = math.log1p


class LatencyHistogram:
    """Latencies in log-spaced bins 2% wide: percentiles within 2%, in constant memory."""

    __slots__ = ("_counts", "count")
    _BASE = _BIN_WIDTH

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.count = 0

    def add(self, ms: float) -> None:
        slot = int(_log1p(ms) / _BIN_WIDTH) if ms > 0.0 else 0
        counts = self._counts
        counts[slot] = counts.get(slot, 0) + 1
        self.count += 1

    def percentile(self, fraction: float) -> float | None:
        """The nearest-rank percentile, as the middle of its bin (None when empty)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for slot in sorted(self._counts):
            seen += self._counts[slot]
            if seen >= rank:
                return self.bin_ms(slot)
        return None

    @property
    def counts(self) -> dict[int, int]:
        """Count per bin (see `bin_ms`)."""
        return self._counts

    @classmethod
    def bin_ms(cls, slot: int) -> float:
        """The middle of a bin, in milliseconds."""
        return round(math.expm1((slot + 0.5) * cls._BASE), 1)


@dataclass
class RunStats:
    total: int = 0
    #: Rows already done (ok or, without retry_failed, failed) when this session began.
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    #: Rows done (ok or failed) in this session, durable.
    done_now: int = 0
    #: Requests tried; of them, those the server answered (any status), those that got no answer
    #: (no connection, a dropped one, a timeout) and, of those, the ones that never connected.
    requests: int = 0
    answers: int = 0
    connection_failures: int = 0
    never_connected: int = 0
    retries: int = 0
    rate_limited: int = 0
    #: Rows of this session answered by an identical request's answer, or from the cache.
    deduplicated: int = 0
    from_cache: int = 0
    #: Answers of this session cut at max_tokens (finish_reason: length): the silent failure.
    cut: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: USD of the answers kept, all sessions; answers of a model with no price are counted apart.
    cost_usd: float = 0.0
    unpriced: int = 0
    #: Tokens and USD of this session's durable rows only.
    session_tokens: int = 0
    session_cost_usd: float = 0.0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: Per-endpoint figures of this session, when a job has several endpoints.
    endpoints: dict[str, Any] | None = None
    #: A Batch API run's deadline and its latest estimate (transports/batchapi/deadline.py).
    deadline: dict[str, Any] | None = None
    #: Rows of this session a batch answered while cancelling that were answered online too.
    paid_twice: int = 0
    #: The deadline as summary.json tells it, with the bill (outputs/bill.py), once the session ends.
    deadline_bill: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.ok - self.failed)

    @property
    def wall_time(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def count_attempt(self, *, answered: bool, connected: bool) -> None:
        """Count what became of one request tried: answered, or not (and whether it ever connected)."""
        if answered:
            self.answers += 1
            return
        self.connection_failures += 1
        if not connected:
            self.never_connected += 1

    def record_durable(self, ok: bool, record: dict[str, Any], retried_failure: bool) -> None:
        """Count a row whose line just became durable."""
        self.done_now += 1
        if ok:
            self.ok += 1
            if retried_failure:
                self.failed -= 1
            if record.get("finish_reason") == "length":
                self.cut += 1
            if reused := record.get("reused_from"):
                if reused == "cache":
                    self.from_cache += 1
                else:
                    self.deduplicated += 1
        elif not retried_failure:
            self.failed += 1
        usage = record.get("usage")
        if isinstance(usage, dict):  # a result, or an answer that did not parse: both paid for
            prompt = usage.get("prompt_tokens") or 0
            completion = usage.get("completion_tokens") or 0
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.session_tokens += prompt + completion
            cost = record.get("cost_usd")
            if isinstance(cost, (int, float)):
                self.cost_usd += cost
                self.session_cost_usd += cost
            else:
                self.unpriced += 1

    def summary(self, status: str) -> dict[str, Any]:
        wall = self.wall_time
        return {
            "status": status,
            "rows_total": self.total,
            "rows_ok": self.ok,
            "rows_failed": self.failed,
            "rows_remaining": self.remaining,
            "rows_skipped": self.skipped,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "answers_unpriced": self.unpriced,
            "session": {
                "rows_done": self.done_now,
                "attempts": self.requests,
                # (a request that could not connect was never sent)
                "requests_sent": self.requests - self.never_connected,
                "answers": self.answers,
                "connection_failures": self.connection_failures,
                "retries": self.retries,
                "rate_limited_429": self.rate_limited,
                "answers_cut_at_max_tokens": self.cut,
                "rows_deduplicated": self.deduplicated,
                "rows_from_cache": self.from_cache,
                "tokens": self.session_tokens,
                "cost_usd": round(self.session_cost_usd, 6),
                "wall_time_s": round(wall, 3),
                "rows_per_s": round(self.done_now / wall, 2) if wall > 0 else None,
                "tokens_per_s": round(self.session_tokens / wall, 1) if wall > 0 else None,
                "latency_ms_p50": self.latency.percentile(0.50),
                "latency_ms_p95": self.latency.percentile(0.95),
                **({"endpoints": self.endpoints} if self.endpoints else {}),
            },
        }

"""One rate limit for many processes on a Ray cluster: a named actor that hands out capacity in leases.

Ray Data's own LLM stage paces each actor on its own, so N actors send N times
the limit. Here every worker's `RayLimiter` (a `limits.ratelimits.Limiter`) draws from one
`LimitsKeeper`, held by a named Ray actor (`num_cpus=0`), in **leases**: a block
of requests and tokens (a tenth of a second of the rate, shared out), not a
round trip per request. Capacity a worker leaves unused for that tenth of a
second lapses: saved up, it would join a later lease's requests in a burst the
server would refuse. The keeper paces the leases with the same GCRA pacers
as one process does (limits/pacing.py), so the cluster as a whole sends at the rate
with at most one burst. A 429 anywhere pauses every worker for its retry-after
and drops the capacity they hold; a lower limit any worker reads in
`x-ratelimit-limit-*` headers becomes everyone's.

A limit nobody announced is found by the keeper for the cluster, as one process finds it
(limits/adaptive.py), from what the workers tell it: their answers, requests sent and places
returned with their next lease, their 429s at once. Slow start is one window of requests in
flight for the whole cluster (1 at first, growing with the answers and doubling every
`adaptive.RAMP_SECONDS`), leased out as places, not a rate. A 429 ends it: the rate becomes
`cut` of what came back over the last second (or, where the answers lag far behind, of what was
sent). From then on a congestion event cuts once: to `cut` of what the server let through over
the last second, if that is lower than the rate in force (the bucket's drain lets an overshoot
through for a while), never below `cut` squared of it; its other 429s, those of requests leased
before the cut or before the first answer to one leased after it, cut no more. Answers climb the
rate back along CUBIC's curve. Tuned on a model of the cluster in virtual time
(benchmarks/cluster_model.py) and measured on Ray (benchmarks/ray_bench.py found; docs/ray.md).

`LimitsKeeper` is a plain class, tested on a virtual clock; Ray is imported only
by `keeper_actor`, which a Ray run calls (the `ray` extra).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batcher.limits.adaptive import AdaptiveRate
from batcher.limits.headers import announced, is_per_minute
from batcher.limits.pacing import Pacer
from batcher.limits.ratelimits import DEFAULT_PAUSE, Permit, Verdict

#: The cluster's burst: half of a second of the rate, where one process allows a second. Workers
#: start, connect and send a little after their leases, and a server's bucket of a second must
#: absorb that jitter too (with a second's burst, a cold cluster's first second drew 429s).
CLUSTER_BURST_SECONDS = 0.5
#: A lease is this many seconds of the rate, at the least one request...
LEASE_SECONDS = 0.1
#: ...and of at most this many requests (a rate found by slow start may be far beyond the cluster's).
MAX_LEASE = 1000
#: In slow start, a worker the window has no room for asks again this many seconds later.
SLOW_START_POLL = 0.02
#: What the server let through is measured over this many seconds (a second: what a bucket holds,
#: so the first second's burst does not read as the rate)...
THROUGHPUT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Lease:
    """Capacity handed to one worker: usable `wait` seconds from when it was asked for."""

    wait: float
    requests: int
    tokens: int
    #: The keeper's count of 429 pauses: capacity leased before a pause is dropped.
    generation: int
    rpm: float | None
    tpm: float | None
    #: On the keeper's clock: when it was issued, and when the rate was last cut (answers to
    #: requests leased before the cut say nothing of the new rate; limits/adaptive.py).
    issued_at: float = 0.0
    last_cut: float = -math.inf


class LimitsKeeper:
    """The cluster's one budget: given limits, lowered by announced ones and by what 429s allow."""

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None,
        *,
        burst_seconds: float = CLUSTER_BURST_SECONDS,
        max_window: int = MAX_LEASE,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`max_window`: the requests the cluster's workers can have in flight (workers x concurrency)."""
        self._given = {"requests": rpm, "tokens": tpm}
        self._announced: dict[str, float | None] = {"requests": None, "tokens": None}
        self._burst = burst_seconds
        self._clock = clock
        self._pacers: dict[str, Pacer | None] = {"requests": None, "tokens": None}
        self._paused_until = -math.inf
        self.generation = 0
        #: Slow start's window, then the rate the 429s allow (limits/adaptive.py), on the keeper's clock.
        self.control = AdaptiveRate(max_window=max_window)
        #: Requests leased and not yet told back (answered, refused, failed, or lapsed unused).
        self.outstanding = 0
        #: Answers told over the last `THROUGHPUT_SECONDS`: (when, how many).
        self._answers: deque[tuple[float, int]] = deque()
        #: Requests the workers sent, told over the last `THROUGHPUT_SECONDS`: (when, how many).
        self._sent: deque[tuple[float, int]] = deque()
        self._first_answer: float | None = None
        #: Whether the last cut awaits its first answer to a request leased after it (a recovery).
        self._recovering = False
        self._update()

    def _per_minute(self, kind: str) -> float | None:
        known = [v for v in (self._given[kind], self._announced[kind]) if v]
        return min(known) if known else None

    def request_rate(self, now: float) -> float | None:
        """Requests a second in force: the given or announced limit, lowered by what the 429s allow;
        None in slow start, where the window bounds the requests in flight instead."""
        per_minute = self._per_minute("requests")
        known = [r for r in (per_minute / 60 if per_minute else None, self.control.rate) if r]
        return min(known) if known else None

    def _update(self) -> None:
        if self._per_minute("requests") is not None:
            self.control.release()  # a rate spreads the requests: no window needed
        for kind, pacer in self._pacers.items():
            per_second = self.request_rate(self._clock()) if kind == "requests" else None
            if kind == "tokens" and (per_minute := self._per_minute(kind)):
                per_second = per_minute / 60
            if per_second is None:
                self._pacers[kind] = None
            elif pacer is None:
                self._pacers[kind] = Pacer(per_second, self._burst)
            else:
                pacer.per_second = per_second

    def lease(
        self,
        tokens_needed: int = 0,
        answered: int = 0,
        leased_at: float = math.inf,
        owed: int = 0,
        returned: int = 0,
        sent: int = 0,
    ) -> Lease:
        """A block of capacity (enough for a request of `tokens_needed`), and when it may be used.

        Told with it: `answered`, the asker's answers since its last lease, to requests leased at
        `leased_at` or later (the keeper's clock), which grow the window or the rate if that is
        after the last cut; `owed`, tokens its requests used beyond what they were leased (see
        `charge`); `returned`, its leased requests that ended (any way) or lapsed unused; `sent`,
        the requests it sent."""
        self.charge(owed)
        now = self._clock()
        self.outstanding = max(0, self.outstanding - returned)
        if sent:
            self._sent.append((now, sent))
        if answered:
            self._answered(answered, now, counted=leased_at >= self.control.last_cut)
        self._update()
        requests, tokens = self._pacers["requests"], self._pacers["tokens"]
        wait = self._paused_until - now
        if requests is None:  # slow start: as many as the window has room for, at once
            window = self.control.window_at(now)
            if window >= self.control.max_window:  # wide open, and no 429 yet: the workers' own
                window = self.outstanding + self.control.max_window  # windows bound what is in flight
            block_requests = min(MAX_LEASE, window - self.outstanding)
            if block_requests < 1:
                return self._lease(SLOW_START_POLL, 0, 0, now)
        else:
            block_requests = min(MAX_LEASE, max(1, int(requests.per_second * LEASE_SECONDS)))
            wait = max(wait, requests.reserve(block_requests, now))
        block_tokens = max(tokens_needed, int(tokens.per_second * LEASE_SECONDS)) if tokens else 0
        if tokens is not None:
            wait = max(wait, tokens.reserve(block_tokens, now))
        self.outstanding += block_requests
        return self._lease(max(0.0, wait), block_requests, block_tokens, now)

    def _lease(self, wait: float, requests: int, tokens: int, now: float) -> Lease:
        rpm, tpm = self._per_minute("requests"), self._per_minute("tokens")
        return Lease(wait, requests, tokens, self.generation, rpm, tpm, now, self.control.last_cut)

    def _answered(self, count: int, now: float, *, counted: bool) -> None:
        if self._first_answer is None:
            self._first_answer = now
        self._answers.append((now, count))
        if not counted:
            return  # answers to requests leased before the last cut say nothing of the new rate
        self._recovering = False  # the new rate answered: a 429 now is a congestion event of its own
        per_minute = self._per_minute("requests")
        ceiling = per_minute / 60 if per_minute else None
        for _ in range(count):
            self.control.answered(now, now, ceiling)

    def _sent_rate(self, now: float) -> float:
        """Requests a second the workers told they sent over the last `THROUGHPUT_SECONDS`."""
        return _per_second(self._sent, now)

    def throughput(self, now: float) -> float | None:
        """Answers a second over the last `THROUGHPUT_SECONDS` (since the first, if sooner): what
        the server lets through. None before any answer."""
        rate = _per_second(self._answers, now)
        return None if self._first_answer is None else rate

    def throttled(self, retry_after: float | None, leased_at: float | None = None) -> None:
        """A 429 somewhere: every worker waits out its retry-after, then goes at the rate, not a burst.

        A congestion event cuts the rate once (see the module's docstring): its other 429s, those
        of requests leased before the cut or before the first answer to one leased after it, cut
        nothing more."""
        now = self._clock()
        leased_at = now if leased_at is None else leased_at
        if leased_at >= self.control.last_cut and not self._recovering:
            current, through = self.request_rate(now), self.throughput(now)
            if current is None:  # slow start: what came back over the last second, or (where the
                sent = self._sent_rate(now)  # answers lag far behind) what was sent
                current = (through if through and through >= sent / 2 else sent) or None
            elif through:  # (never below `cut` of the rate: a second's answers dip after a pause)
                current = min(current, max(through, self.control.cut * current))
            if self.control.throttled(leased_at, now, current):
                self._recovering = True
                self._update()
        self._paused_until = max(
            self._paused_until, now + (retry_after if retry_after is not None else DEFAULT_PAUSE)
        )
        for pacer in self._pacers.values():
            if pacer is not None:  # (leases already made stand: their holders are not asked again)
                pacer.tat = max(pacer.tat, self._paused_until + pacer.burst)
        self.generation += 1

    def announced(self, kind: str, per_minute: float) -> None:
        """A per-minute limit a server announced: it holds for everyone if lower than what is in force."""
        if self._announced[kind] is None or per_minute < self._announced[kind]:
            self._announced[kind] = per_minute
            self._update()

    def charge(self, tokens: int) -> None:
        """Tokens a request used beyond its lease: later leases wait for them."""
        pacer = self._pacers["tokens"]
        if pacer is not None and tokens > 0:
            pacer.charge(tokens, self._clock())


def _per_second(counts: deque[tuple[float, int]], now: float) -> float:
    """The counts told over the last `THROUGHPUT_SECONDS` (older ones dropped), a second."""
    while counts and counts[0][0] <= now - THROUGHPUT_SECONDS:
        counts.popleft()
    return sum(count for _, count in counts) / THROUGHPUT_SECONDS


def keeper_actor(
    name: str,
    rpm: float | None,
    tpm: float | None,
    *,
    max_window: int = MAX_LEASE,
    namespace: str = "batcher",
) -> Any:
    """The named Ray actor holding the keeper of `name` (made by the first to ask, found by the rest).
    `max_window`: the requests the workers can have in flight (workers x concurrency)."""
    import ray

    actor_class = ray.remote(num_cpus=0, max_concurrency=1)(LimitsKeeper)
    actor = actor_class.options(name=name, namespace=namespace, get_if_exists=True)
    return actor.remote(rpm, tpm, max_window=max_window)


class RayLimiter:
    """A worker's limiter (limits.ratelimits.Limiter): it spends capacity leased from the cluster's keeper."""

    def __init__(
        self,
        keeper: Any,
        *,
        window: asyncio.Semaphore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`keeper`: the keeper's Ray actor handle (or anything whose methods have `.remote`).
        `window`: the worker's places for requests in flight (shared by its endpoints), if bounded."""
        self._keeper = keeper
        self._window = window
        self._clock = clock
        self._requests = 0
        self._tokens = 0
        self._generation = 0
        self._rpm: float | None = None
        self._tpm: float | None = None
        self._leasing = asyncio.Lock()
        self._issued = 0
        #: Answers to requests leased since the keeper's last cut, to tell it with the next lease, and
        #: when the oldest of those requests was leased; the last lease's times (the keeper's clock).
        self._answered = 0
        self._answered_since = math.inf
        #: Tokens answers used beyond their leases, to tell the keeper with the next lease.
        self._owed = 0
        #: Leased requests that ended or lapsed unused since the last lease (the keeper's window),
        #: and requests sent since the last lease.
        self._returned = self._sent = 0
        self._leased_at = 0.0
        self._last_cut = -math.inf
        #: When the capacity held lapses: a lease is for its tenth of a second, not to be saved up.
        self._expires = -math.inf

    async def acquire(self, tokens: int) -> Permit:
        if self._window is not None:
            await self._window.acquire()
        try:
            return await self._acquire(tokens)
        except BaseException:
            if self._window is not None:
                self._window.release()
            raise

    async def _acquire(self, tokens: int) -> Permit:
        async with self._leasing:  # one lease in flight for the worker's coroutines, taken in turn
            if self._clock() > self._expires:  # unused too long: it may not join a later lease's
                self._drop()  # requests in a burst the server would refuse
            while self._requests < 1 or (self._tpm is not None and self._tokens < tokens):
                returned = self._returned + self._requests
                told = (self._answered, self._answered_since, self._owed, returned, self._sent)
                self._answered, self._answered_since, self._owed = 0, math.inf, 0
                self._returned = self._sent = 0
                self._requests = self._tokens = 0  # (what was left is returned with this lease)
                lease: Lease = await self._keeper.lease.remote(tokens, *told)
                if lease.generation != self._generation:  # a 429 since: what was held is void
                    self._generation = lease.generation
                self._rpm, self._tpm = lease.rpm, lease.tpm
                self._leased_at, self._last_cut = lease.issued_at, lease.last_cut
                if lease.wait > 0:
                    await asyncio.sleep(lease.wait)
                self._requests, self._tokens = lease.requests, lease.tokens
                self._expires = self._clock() + LEASE_SECONDS
            self._requests -= 1
            self._tokens -= tokens
            self._issued += 1
            self._sent += 1
            return Permit(tokens, self._leased_at, self._issued, 0.0, self._generation)

    def _drop(self) -> None:
        """Let go of the capacity held (told to the keeper with the next lease)."""
        self._returned += self._requests
        self._requests = self._tokens = 0

    def settle(
        self,
        permit: Permit,
        verdict: Verdict,
        *,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        used_tokens: int | None = None,
        exact: bool = False,
    ) -> None:
        if verdict is Verdict.ANSWERED and permit.sent_at >= self._last_cut:
            self._answered += 1
            self._answered_since = min(self._answered_since, permit.sent_at)
        self._returned += 1
        if verdict is Verdict.THROTTLED:
            self._drop()
            self._keeper.throttled.remote(retry_after, permit.sent_at)
        if used_tokens and used_tokens > permit.tokens and self._tpm is not None:
            self._owed += used_tokens - permit.tokens  # told with the next lease, not a call a request
        if headers:
            self._tell_announced(headers)
        if self._window is not None:
            self._window.release()

    def _tell_announced(self, headers: Mapping[str, str]) -> None:
        known = {"requests": self._rpm, "tokens": self._tpm}
        for kind in ("requests", "tokens"):
            limit, remaining, reset = announced(headers, kind)
            lower = limit is not None and (known[kind] is None or limit < known[kind])
            if lower and is_per_minute(limit, remaining, reset):
                self._keeper.announced.remote(kind, limit)
                if kind == "requests":
                    self._rpm = limit
                else:
                    self._tpm = limit

    def has_room(self, tokens: int) -> bool:
        if self._window is not None and self._window.locked():
            return False
        return self._requests >= 1 and (self._tpm is None or self._tokens >= tokens)

    def limits(self) -> tuple[float | None, float | None]:
        return self._rpm, self._tpm

    def close(self) -> None:
        pass

"""The limiter the workers call: `acquire` before a request, `settle` after it.

`Limiter` is the seam: the online pool asks it for a `Permit` and settles the
permit with the answer's verdict and headers; what stands behind it (one
process's buckets here, a limit shared by the processes on one key in
`shared.py`) is the limiter's business. `RateLimits` combines a request
and a token pacer (GCRA, pacing.py) whose rates are the lowest of what the user
gave, what the server announces and what its 429s allow (adaptive.py); the
first request of a session goes alone, and its answer's headers set where the
buckets start. See docs/rate-limits.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from batcher.limits.adaptive import AdaptiveRate
from batcher.limits.headers import RATE_HEADERS, announced, is_per_minute
from batcher.limits.pacing import Pacer
from batcher.limits.shared import SharedState

log = logging.getLogger("batcher")

#: How long a 429 without retry-after holds every worker back, in seconds.
DEFAULT_PAUSE = 1.0


class Verdict(enum.Enum):
    """What became of a request, as far as the limits care."""

    ANSWERED = "answered"  # the server took it: the pool may grow
    THROTTLED = "throttled"  # a 429: every worker slows down
    FAILED = "failed"  # anything else: the permit's place is freed, nothing learned


@dataclass(slots=True)
class Permit:
    """Leave to send one request, handed back to `settle` with what became of it."""

    #: Tokens charged at admission (prompt estimate + max_tokens).
    tokens: int
    #: When it was admitted (the limiter's clock).
    sent_at: float
    #: Requests and tokens admitted before it, to read a `remaining` header against.
    requests_before: int
    tokens_before: float
    #: The limiter's count of 429 pauses when it was admitted.
    generation: int = 0


class Limiter(Protocol):
    """What the transports need of a rate limit, whoever holds it."""

    async def acquire(self, tokens: int) -> Permit:
        """Wait until a request of about `tokens` tokens may be sent."""

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
        """What became of a permitted request: its verdict, the answer's headers, the tokens it used
        (`exact`: as the server charged them, so that a charge above them is given back)."""

    def has_room(self, tokens: int) -> bool:
        """Whether a request of about `tokens` could go right now."""

    def limits(self) -> tuple[float | None, float | None]:
        """Requests and tokens per minute in force (None where there is none)."""

    def close(self) -> None:
        """The session is over: let go of anything held with others."""


class RateLimits:
    """One endpoint's limits in one process: slow start, pacers, and what 429s and headers say.

    Limits given by the user are ceilings; limits a server announces in
    `x-ratelimit-limit-*` headers lower them (when they are per minute); 429s
    lower the request rate below both (adaptive.py). A 429 also pauses every
    worker for its retry-after, after which requests resume at the rate, never
    in a burst.
    """

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None,
        *,
        concurrency: int = 16,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedState | None = None,
    ):
        """`shared`: the state of a key's limits, held with other processes (shared.py)."""
        self._given = {"requests": rpm, "tokens": tpm}
        self._announced: dict[str, float | None] = {"requests": None, "tokens": None}
        self._burst = burst_seconds
        self._clock = clock
        self.control = AdaptiveRate(concurrency)
        self._pacers: dict[str, Pacer | None] = {"requests": None, "tokens": None}
        #: Whether either pacer exists (kept by _update_pacers: asked twice a request).
        self._paced = False
        self._update_pacers()
        self._in_flight = 0
        self._waiting: deque[asyncio.Future] = deque()
        self._turn = asyncio.Lock()
        self._ramp: asyncio.TimerHandle | None = None
        self._paused_until = -math.inf
        #: Bumped whenever a 429 resets the pacers: reservations made before it are taken again.
        self._generation = 0
        self._issued = 0
        self._issued_tokens = 0.0
        self._warned: set[str] = set()
        self._shared = shared

    # -- what is in force ---------------------------------------------------------

    def _per_minute(self, kind: str) -> float | None:
        values = [self._given[kind], self._announced[kind]]
        if kind == "requests" and self.control.rate is not None:
            values.append(self.control.rate * 60)
        known = [v for v in values if v]
        return min(known) if known else None

    @property
    def rpm(self) -> float | None:
        return self._per_minute("requests")

    @property
    def tpm(self) -> float | None:
        return self._per_minute("tokens")

    def limits(self) -> tuple[float | None, float | None]:
        return self.rpm, self.tpm

    def _update_pacers(self) -> None:
        for kind, pacer in self._pacers.items():
            per_minute = self._per_minute(kind)
            if per_minute is None:
                self._pacers[kind] = None
            elif pacer is None:
                self._pacers[kind] = Pacer(per_minute / 60, self._burst)
            else:
                pacer.per_second = per_minute / 60
        self._paced = self._pacers["requests"] is not None or self._pacers["tokens"] is not None

    # -- acquire --------------------------------------------------------------------

    async def acquire(self, tokens: int) -> Permit:
        now = self._clock()
        if self._in_flight < self.control.window_at(now) and not self._waiting:
            self._in_flight += 1  # a place at once: the common case, without a coroutine of its own
        else:
            await self._enter()
            now = self._clock()
        try:
            if self._shared is not None and self._shared.changed():
                with self._section():  # another run on this key may have found a rate, or a 429
                    pass
            if self._paced or self._paused_until > now:
                # One reservation at a time, in arrival order, each at the rate in force when its
                # turn comes: reservations made ahead would hold the rate they were made at.
                async with self._turn:
                    await self._wait_for_slot(tokens)
                now = self._clock()
        except BaseException:
            self._leave()
            raise
        permit = Permit(tokens, now, self._issued, self._issued_tokens, self._generation)
        self._issued += 1
        self._issued_tokens += tokens
        self.control.sent(now)
        return permit

    async def _wait_for_slot(self, tokens: int) -> None:
        while True:
            generation = self._generation
            with self._section():
                wait = self._reserve(tokens, self._clock())
            if wait <= 0:
                return
            await asyncio.sleep(wait)
            if self._shared is not None and self._shared.changed():
                with self._section():
                    pass
            if generation == self._generation and self._paused_until <= self._clock():
                return  # (a 429 in the meantime voids the reservation: take a new one)

    def _reserve(self, tokens: int, now: float) -> float:
        wait = self._paused_until - now
        for amount, pacer in ((1, self._pacers["requests"]), (tokens, self._pacers["tokens"])):
            if pacer is not None:
                wait = max(wait, pacer.reserve(amount, now))
        return wait

    async def _enter(self) -> None:
        """Take a place in the window (one at first, then ramping up; see adaptive.py)."""
        if self._in_flight < self.control.window_at(self._clock()) and not self._waiting:
            self._in_flight += 1
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append(waiter)
        growth = self.control.next_growth()
        if growth is not None and self._ramp is None:
            self._ramp = loop.call_later(max(0.0, growth - self._clock()), self._ramped)
        try:
            await waiter  # the place is handed over by _wake
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._leave()  # handed a place just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # (_wake may have passed over it already)
                    self._waiting.remove(waiter)
            raise

    def _leave(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _ramped(self) -> None:
        self._ramp = None
        self._wake()
        growth = self.control.next_growth()
        if growth is not None and self._waiting:
            self._ramp = asyncio.get_running_loop().call_later(max(0.0, growth - self._clock()), self._ramped)

    def _wake(self) -> None:
        if not self._waiting:
            return
        window = self.control.window_at(self._clock())
        while self._waiting and self._in_flight < window:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    # -- settle ---------------------------------------------------------------------

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
        if headers is not None:
            for name in RATE_HEADERS:  # (a loop, not any(): no generator a row)
                if name in headers:
                    break
            else:
                headers = None
        try:
            if self._shared is None or not (headers or verdict is Verdict.THROTTLED or self._paced):
                self._settle(permit, verdict, headers, retry_after, used_tokens, exact)
            else:
                with self._section():
                    self._settle(permit, verdict, headers, retry_after, used_tokens, exact)
        finally:
            self._leave()

    def _settle(
        self,
        permit: Permit,
        verdict: Verdict,
        headers: Mapping[str, str] | None,
        retry_after: float | None,
        used_tokens: int | None,
        exact: bool = False,
    ) -> None:
        now = self._clock()
        tokens = self._pacers["tokens"]
        if verdict is Verdict.ANSWERED and used_tokens and tokens is not None:
            if used_tokens > permit.tokens:
                tokens.charge(used_tokens - permit.tokens, now)
            elif exact and permit.generation == self._generation:
                # Estimated high (before the usage of earlier answers corrected the estimate, say):
                # the server took less, so the bucket holds more; but not past what the server says
                # remains (its headers, read next), nor across a 429's pause since.
                tokens.refund(permit.tokens - used_tokens)
        if headers:
            self._observe(headers, permit, now)
        if verdict is Verdict.ANSWERED:
            control = self.control
            control.answered(permit.sent_at, now, self._ceiling() if control.rate is not None else None)
            if self.control.rate is not None:
                self._update_pacers()  # the adaptive rate moved
            if self._paced:
                self.control.release()  # a rate spreads the requests: no window needed
        elif verdict is Verdict.THROTTLED:
            self._throttled(permit, retry_after, now)

    def _ceiling(self) -> float | None:
        """Requests a second the adaptive rate may not pass: the given or announced limit."""
        ceiling = min((v for v in (self._given["requests"], self._announced["requests"]) if v), default=None)
        return ceiling / 60 if ceiling else None

    @contextlib.contextmanager
    def _section(self) -> Iterator[None]:
        """Where the limits change: under the shared state's lock, read before and written after."""
        if self._shared is None:
            yield
            return
        with self._shared.locked() as state:
            self._load(state)
            yield
            self._store(state)

    def _load(self, state: dict) -> None:
        adaptive = state.get("adaptive")
        if adaptive is not None:
            self.control.restore(adaptive)
            self._update_pacers()
        self._paused_until = max(self._paused_until, state.get("paused_until", -math.inf))
        for kind, pacer in self._pacers.items():
            if pacer is not None and f"{kind}_tat" in state:
                pacer.tat = state[f"{kind}_tat"]

    def _store(self, state: dict) -> None:
        state["adaptive"] = self.control.snapshot()
        state["paused_until"] = self._paused_until
        for kind, pacer in self._pacers.items():
            if pacer is not None:
                state[f"{kind}_tat"] = pacer.tat

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()

    def _throttled(self, permit: Permit, retry_after: float | None, now: float) -> None:
        requests = self._pacers["requests"]
        current = requests.per_second if requests is not None else None
        if self.control.throttled(permit.sent_at, now, current):
            log.info("429: request rate cut to %.1f a minute", self.control.rate * 60)
            self._update_pacers()
        pause = retry_after if retry_after is not None else DEFAULT_PAUSE
        self._paused_until = max(self._paused_until, now + pause)
        for pacer in self._pacers.values():
            if pacer is not None:
                pacer.empty_until(self._paused_until)  # then at the rate, not in a burst
        self._generation += 1

    def _observe(self, headers: Mapping[str, str], permit: Permit, now: float) -> None:
        """Learn per-minute limits the server announces; start or hold the buckets at what remains."""
        for kind in ("requests", "tokens"):
            limit, remaining, reset = announced(headers, kind)
            if limit is not None and limit != self._announced[kind]:
                if is_per_minute(limit, remaining, reset):
                    self._announced[kind] = limit
                    self._update_pacers()
                elif kind not in self._warned:
                    self._warned.add(kind)
                    log.warning(
                        "x-ratelimit-limit-%s: %g is not per minute (it resets in %s s); not used",
                        kind,
                        limit,
                        reset,
                    )
            if remaining is None:
                continue
            # What remained when this request was admitted, less what was sent since.
            if kind == "requests":
                since = self._issued - permit.requests_before - 1
            else:
                since = self._issued_tokens - permit.tokens_before - permit.tokens
            left = remaining - since
            pacer = self._pacers[kind]
            if pacer is not None:
                pacer.at_most(left + pacer.per_second * (now - permit.sent_at), now)
            elif left <= 0 and reset:
                self._paused_until = max(self._paused_until, now + reset)  # none left until it resets

    def has_room(self, tokens: int) -> bool:
        now = self._clock()
        if now < self._paused_until or self._in_flight >= self.control.window_at(now):
            return False
        for amount, pacer in ((1, self._pacers["requests"]), (tokens, self._pacers["tokens"])):
            if pacer is not None and pacer.start(amount, now) > now:
                return False
        return True

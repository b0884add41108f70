"""A rate and a burst as one number: the generic cell rate algorithm (GCRA).

A `Pacer` keeps only the theoretical arrival time (`tat`): when the bucket
would be full again if nothing more were sent. Reserving computes the moment a
request may go and moves `tat` on, so waiters are served in the order they
asked (no heap, no starvation), the rate can change between two requests, and
the whole state is one float that a file or an actor can hold for several
processes. A request larger than the bucket waits for a full bucket and the
rest is owed by the requests after it. Time is whatever clock the caller reads
(`time.monotonic` in production, a virtual clock in tests).

    pacer = Pacer(per_second=30, burst_seconds=1.0)
    wait = pacer.reserve(1, now=clock())   # seconds to sleep before sending
"""

from __future__ import annotations

import math


class Pacer:
    """Admits `per_second` units a second, with a bucket holding `burst_seconds` of them."""

    __slots__ = ("per_second", "burst", "tat")

    def __init__(self, per_second: float, burst_seconds: float, *, tat: float = -math.inf):
        if not per_second > 0 or not burst_seconds > 0:
            raise ValueError("a pacer needs a positive rate and burst")
        #: Units a second (requests, or tokens).
        self.per_second = per_second
        #: Seconds of the rate the bucket holds: its capacity is `per_second * burst`.
        self.burst = burst_seconds
        #: When the bucket would be full again; -inf when it is full now.
        self.tat = tat

    @property
    def capacity(self) -> float:
        return self.per_second * self.burst

    def start(self, amount: float, now: float) -> float:
        """The earliest moment `amount` may go, for a request made at `now`."""
        tat = max(self.tat, now)
        # The bucket must hold the amount (or be full, for one larger than the bucket).
        return tat - self.burst + min(amount / self.per_second, self.burst)

    def reserve(self, amount: float, now: float) -> float:
        """Take `amount`; the seconds to wait before sending it (0 when it may go at once)."""
        start = self.start(amount, now)
        self.tat = max(self.tat, now) + amount / self.per_second
        return max(0.0, start - now)

    def charge(self, amount: float, now: float) -> None:
        """Take `amount` after the fact (a request used more than it was charged): later requests wait."""
        self.tat = max(self.tat, now) + amount / self.per_second

    def refund(self, amount: float) -> None:
        """Give back `amount` taken before (a request used less than it was charged)."""
        self.tat -= amount / self.per_second

    def available(self, now: float) -> float:
        """Units that may go at once."""
        return max(0.0, min(self.capacity, (now + self.burst - self.tat) * self.per_second))

    def at_most(self, available: float, now: float) -> None:
        """Hold no more than `available` units now (what a server says remains); never raises it."""
        available = max(0.0, min(available, self.capacity))
        self.tat = max(self.tat, now + self.burst - available / self.per_second)

    def empty_until(self, moment: float) -> None:
        """Admit nothing before `moment`, then only at the rate, not a burst (a cool-down).

        Reservations made before are forgotten: their holders must reserve again.
        """
        self.tat = moment + self.burst

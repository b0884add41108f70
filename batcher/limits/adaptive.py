"""Finding a rate limit nobody announced, from the 429s: slow start, then a cubic climb.

A session starts with one request in flight; once it is answered the window
doubles every `RAMP_SECONDS` (429s come back at once even where answers take
seconds, so the ramp need not wait for answers) until the first 429, which
sets the request rate to what was sent and not refused over the last second. From then on the
rate follows TCP CUBIC's curve, counted in answers rather than seconds: a 429
marks the rate it came at as the peak and cuts to `cut` of it (once per round:
429s of requests sent before the cut say nothing new); answers bring it back
to the peak over `plateau` answers (or 5 s of them, if fewer), flat as it nears it, then probe beyond it
ever faster, so a limit that rose, or was guessed low, is found again in a few
plateaus. Counting answers makes each saw-tooth the same number of requests
at 60 RPM as at 30,000, and so the share of them answered 429. See
docs/rate-limits.md for the figures that chose the constants.
"""

from __future__ import annotations

import math
from collections import deque

#: The lowest rate a run of 429s can push it to, per second (1 request a minute).
MIN_RATE = 1 / 60
#: Seconds in which the window of slow start doubles, once the first request is answered.
RAMP_SECONDS = 0.25
#: A plateau lasts `plateau` answers, or this many seconds of them at the rate, whichever is fewer...
PLATEAU_SECONDS = 5.0
#: ...but never fewer answers than this.
MIN_PLATEAU = 20


class AdaptiveRate:
    """The in-flight window of slow start, then a request rate driven by 429s."""

    __slots__ = (
        "rate",
        "window",
        "max_window",
        "last_cut",
        "cut",
        "plateau",
        "_peak",
        "_answers_since_cut",
        "_answers_to_peak",
        "_sent",
        "_first_answer",
    )

    def __init__(self, max_window: int, *, cut: float = 0.9, plateau: int = 200):
        #: Requests a second the 429s allow; None until the first 429.
        self.rate: float | None = None
        #: Requests that may be in flight: 1 at first, growing by one an answer up to `max_window`.
        self.window = 1
        self.max_window = max_window
        #: When the rate was last cut (a 429 of a request sent before then is of an older round).
        self.last_cut = -math.inf
        self.cut = cut
        #: Answers it takes to climb back to the rate of the last 429.
        self.plateau = plateau
        self._peak = 0.0
        self._answers_since_cut = 0
        self._answers_to_peak = plateau
        #: While the rate is unknown: when requests were sent, to measure the rate when a 429 comes.
        self._sent: deque[float] = deque(maxlen=8192)
        self._first_answer: float | None = None

    def release(self) -> None:
        """End slow start: a rate is known (given or announced), and the pacer spreads the requests."""
        self.window = self.max_window

    def window_at(self, now: float) -> int:
        """Requests that may be in flight at `now`."""
        if self.window >= self.max_window or self._first_answer is None:
            return self.window
        doublings = (now - self._first_answer) / RAMP_SECONDS
        self.window = min(self.max_window, max(self.window, int(2 ** min(doublings + 1, 30) + 1e-9)))
        return self.window

    def next_growth(self) -> float | None:
        """When the window grows next, if it is still ramping."""
        if self.window >= self.max_window or self._first_answer is None:
            return None
        return self._first_answer + RAMP_SECONDS * (math.log2(self.window + 1) - 1) + 1e-6

    def sent(self, now: float) -> None:
        if self.rate is None:
            self._sent.append(now)

    def answered(self, sent_at: float, now: float, ceiling: float | None) -> None:
        """An answer: the window grows in slow start, the rate along its curve (never above `ceiling`)."""
        if self.rate is None:
            if self._first_answer is None:
                self._first_answer = now
            self.window = min(self.max_window, self.window + 1)
            return
        if sent_at < self.last_cut:
            return  # sent at the old rate: says nothing about the new one
        self._answers_since_cut += 1
        x = self._answers_since_cut / self._answers_to_peak - 1
        self.rate = self._peak * (1 + (1 - self.cut) * x**3)
        if ceiling is not None and self.rate > ceiling:
            self.rate = ceiling
            self._answers_since_cut -= 1  # hold the curve where it is while the ceiling holds the rate

    def throttled(self, sent_at: float, now: float, current: float | None) -> bool:
        """A 429 for a request sent at `sent_at`; True when it cut the rate.

        `current` is the rate in force (requests a second), None while none is;
        then the rate sent over the last second stands in for it.
        """
        if sent_at < self.last_cut:
            return False
        if current is None:
            current = self._sent_rate(now)
            if current is None:
                return False  # a lone request refused says nothing about a rate: only wait
        self._peak = max(MIN_RATE, current)
        self.rate = max(MIN_RATE, self._peak * self.cut)
        self._answers_since_cut = 0
        self._answers_to_peak = max(MIN_PLATEAU, min(self.plateau, int(self.rate * PLATEAU_SECONDS)))
        self.last_cut = now
        self.window = self.max_window
        self._sent.clear()
        return True

    def _sent_rate(self, now: float) -> float | None:
        """Requests sent over the last second but this refused one; None when it was the only one."""
        sent = self._sent
        while sent and sent[0] < now - 1.0:
            sent.popleft()
        return len(sent) - 1 if len(sent) > 1 else None

    def snapshot(self) -> dict[str, float] | None:
        """What other processes on the same key need of the rate (None while there is none)."""
        if self.rate is None:
            return None
        return {
            "rate": self.rate,
            "peak": self._peak,
            "last_cut": self.last_cut,
            "since_cut": self._answers_since_cut,
            "to_peak": self._answers_to_peak,
        }

    def restore(self, snapshot: dict[str, float]) -> None:
        """Take the rate another process on the same key has found."""
        self.rate, self._peak, self.last_cut = snapshot["rate"], snapshot["peak"], snapshot["last_cut"]
        self._answers_since_cut = int(snapshot["since_cut"])
        self._answers_to_peak = int(snapshot["to_peak"])  # (the window stays: the first request goes alone)

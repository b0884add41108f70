"""`--deadline WHEN`: the moment by which a Batch API run's rows must all be answered.

WHEN is a duration from the run's first start (`90s`, `45m`, `8h`, `2d`, or several at once:
`1h30m`), or an ISO 8601 time with a zone (`2026-12-07T07:00+01:00`, `2026-12-07T06:00Z`). A time
without a zone is refused rather than guessed: whose 7 a.m. it means is the whole point. How a run
keeps it is in transports/batchapi/deadline.py; docs/batch-api.md ("Deadlines").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from batcher.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


@dataclass(frozen=True)
class Deadline:
    """A deadline as given: a duration from the run's first start, or a moment (epoch seconds)."""

    text: str
    seconds: float | None = None
    at: float | None = None

    def moment(self, first_start: float) -> float:
        """The epoch second it falls at, for a run that first started at `first_start`."""
        return self.at if self.at is not None else first_start + (self.seconds or 0.0)


def parse_deadline(text: str) -> Deadline:
    """`text` as a Deadline; ConfigError saying what a deadline looks like when it is not one."""
    given = text.strip()
    if _DURATION.fullmatch(given):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(given))
        if seconds > 0 and math.isfinite(seconds):
            return Deadline(given, seconds=seconds)
    else:
        try:
            moment = datetime.fromisoformat(given.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is None:
            raise ConfigError(
                f"deadline {given!r} has no time zone: add one (2026-12-07T07:00+01:00, or Z for UTC)"
            )
        if moment is not None:
            return Deadline(given, at=moment.timestamp())
    raise ConfigError(
        f"deadline {text!r} is neither a duration (90s, 45m, 8h, 1h30m) nor an ISO 8601 time with a "
        "zone (2026-12-07T07:00+01:00)"
    )

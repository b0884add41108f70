"""OpenAI's rate-limit headers read: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the
numbers and OpenAI's durations ('6m0s', '20ms'), and whether an announced limit is per minute (Groq's
requests header is per day). Shared by one process's limiter (ratelimits.py) and a Ray worker's
(transports/ray/limits.py). See ../shared/NOTES.md and docs/rate-limits.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

#: A header limit whose window is longer than this is not per minute (Groq's requests per day).
_MINUTE = 61.0
#: The headers whose presence says an answer announces limits.
RATE_HEADERS = tuple(
    f"x-ratelimit-{w}-{kind}" for w in ("remaining", "limit") for kind in ("requests", "tokens")
)


def announced(headers: Mapping[str, str], kind: str) -> tuple[float | None, float | None, float | None]:
    """(limit, remaining, seconds to reset) of `kind` ("requests" or "tokens"), each None where not said."""
    return (
        header_number(headers.get(f"x-ratelimit-limit-{kind}")),
        header_number(headers.get(f"x-ratelimit-remaining-{kind}")),
        header_seconds(headers.get(f"x-ratelimit-reset-{kind}")),
    )


def header_number(value: str | None) -> float | None:
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 and math.isfinite(number) else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def header_seconds(value: str | None) -> float | None:
    """OpenAI's reset durations ('1s', '6m0s', '20ms', '1h2m3.5s'), or plain seconds."""
    if not value:
        return None
    plain = header_number(value)
    if plain is not None:
        return plain
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def is_per_minute(limit: float, remaining: float | None, reset: float | None) -> bool:
    """Whether a limit header is per minute: its bucket must refill within a minute.

    A bucket refilling `limit` in a window refills `limit - remaining` in `reset`, so the window is
    `reset * limit / (limit - remaining)`: 60 s for OpenAI's, a day for Groq's requests header.
    """
    if limit <= 0:
        return False
    if reset is None:
        return True
    if reset > _MINUTE:
        return False
    if remaining is None or remaining >= limit:
        return True
    return reset * limit / (limit - remaining) <= _MINUTE

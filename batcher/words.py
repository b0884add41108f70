"""How figures are said to a user: a count with its noun, a sum of money with the digits that matter,
a moment on the local clock.

One place, so that "1 request" and "$0.0003" read the same in the summary line, `batcher status`,
the dry run, the progress bar and the report.
"""

from __future__ import annotations

import math
import time


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 request`, `2 requests`, `1,000 rows`; `nouns` where adding an s is wrong."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def usd(amount: float) -> str:
    """A sum in US dollars: cents from a dollar up, four decimals down to a cent, and below that
    two significant digits, so a small run's cost shows ($0.0003, not $0.0000)."""
    if amount == 0:
        return "$0.00"
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= 0.01:
        return f"${amount:.4f}"
    decimals = min(12, 1 - math.floor(math.log10(amount)))
    return f"${amount:.{decimals}f}".rstrip("0")


def clock(epoch: float, *, date: bool = False) -> str:
    """A moment (epoch seconds) on this machine's clock: 07:00:00, or 2026-12-07 07:00:00 with `date`."""
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(epoch))

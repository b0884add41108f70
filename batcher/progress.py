"""The progress bar a terminal user watches (tqdm); the core only reports counters."""

from __future__ import annotations

import sys
from typing import Any

from batcher.outputs.stats import RunStats
from batcher.words import clock, usd


class ProgressBar:
    """Rows done of the total, rows/s and ETA (tqdm's own), tokens, errors and 429s."""

    def __init__(self, stats: RunStats):
        from tqdm import tqdm  # (imported with the bar: a quiet run starts without it)

        self._shown = stats.ok + stats.failed
        self._bar = tqdm(
            total=stats.total,
            initial=self._shown,
            unit="row",
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0.1,
            disable=None,
        )  # None: no bar when stderr is not a terminal
        self.update(stats)

    def update(self, stats: RunStats) -> None:
        tokens = stats.prompt_tokens + stats.completion_tokens
        cost = f" cost={usd(stats.cost_usd)}" if stats.cost_usd else ""
        self._bar.set_postfix_str(
            f"tokens={_short(tokens)}{cost} errors={stats.failed} 429s={stats.rate_limited}"
            + _deadline(stats.deadline),
            refresh=False,
        )
        done = stats.ok + stats.failed
        # Counts can go down (a failed row retried to success); tqdm's update takes deltas.
        self._bar.update(done - self._shown)
        self._shown = done

    def close(self) -> None:
        self._bar.close()


class Watch:
    """A session's `on_start` / `on_progress` hooks: a bar when `show`, closed by `close`."""

    def __init__(self, show: bool):
        self.show = show
        self.bar: ProgressBar | None = None

    def on_start(self, runner: Any) -> None:
        if self.show:
            self.bar = ProgressBar(runner.stats)

    def on_progress(self, stats: RunStats) -> None:
        if self.bar is not None:
            self.bar.update(stats)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _deadline(shown: dict[str, Any] | None) -> str:
    """A deadline run's words on the bar: when its rows go online (and the margin kept), or that they have."""
    if not shown:
        return ""
    due = f" deadline={clock(shown['at'])}"
    if shown.get("online_since"):
        return f"{due} online"
    if shown.get("go_online_at") is None:
        return due
    return f"{due} online-at={clock(shown['go_online_at'])} margin={shown['margin_seconds']:.0f}s"


def _short(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)

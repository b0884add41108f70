"""Per-interval counters of every session, kept with the checkpoint for `batcher report`.

Appended every `INTERVAL` seconds and at a session's end; telemetry, not checkpoint: not fsynced,
and a torn line is skipped. See docs/report.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batcher.outputs.stats import RunStats

INTERVAL = 5.0
FILE = "timeline.jsonl"

_COUNTERS = ("requests", "retries", "rate_limited", "done_now", "prompt_tokens", "completion_tokens")


class Timeline:
    """Turns a session's running totals into per-interval lines."""

    def __init__(self, path: Path, stats: RunStats, limits: Callable[[], tuple[float | None, float | None]]):
        self.path = path
        self._stats = stats
        self._limits = limits
        self._session = round(time.time(), 3)
        self._last = self._snapshot()
        self._last_time = time.time()

    def _snapshot(self) -> dict[str, Any]:
        stats = self._stats
        snapshot: dict[str, Any] = {name: getattr(stats, name) for name in _COUNTERS}
        snapshot["ok"], snapshot["failed"] = stats.ok, stats.failed
        snapshot["cost_usd"] = stats.cost_usd
        snapshot["latency"] = dict(stats.latency.counts)
        return snapshot

    def record(self) -> None:
        """Append the interval since the last line (nothing when nothing happened)."""
        now, current = time.time(), self._snapshot()
        last = self._last
        line: dict[str, Any] = {
            "t": round(now, 3),
            "session": self._session,
            "seconds": round(now - self._last_time, 3),
        }
        for name in _COUNTERS:
            line[name] = current[name] - last[name]
        line["rows_done"] = line.pop("done_now")
        line["cost_usd"] = round(current["cost_usd"] - last["cost_usd"], 9)
        line["rows_ok_total"], line["rows_failed_total"] = current["ok"], current["failed"]
        line["latency_ms"] = {
            str(slot): count - last["latency"].get(slot, 0)
            for slot, count in current["latency"].items()
            if count != last["latency"].get(slot, 0)
        }
        line["rpm_limit"], line["tpm_limit"] = self._limits()
        self._last, self._last_time = current, now
        if not any(line[name] for name in ("requests", "rows_done", "retries", "rate_limited")):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
        except OSError:
            pass  # the report loses an interval; the run loses nothing

    async def keep_recording(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            self.record()


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The timeline's whole lines, oldest first."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                continue  # torn by a crash
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("t"), (int, float)):
                yield line


def timeline_path(directory: Path) -> Path:
    return directory / ".batcher" / FILE

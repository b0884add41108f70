"""Where a transport's finished rows go, and the streak of alike failures held back on the way.

A transport (the online pool, the Batch API, a Ray driver) hands every finished row to
a `Recorder`: its line goes to the journal at once, and once durable the row
counts as done (stats), reaches the sink and the caller's `on_record`, and the
progress hook sees the new counters. Every transport thereby keeps the same
checkpoint, outputs, summary and guarantees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from batcher.errors import BatcherError, RequestFailed
from batcher.outputs.sinks import Sink
from batcher.outputs.stats import RunStats
from batcher.store.progress import Progress

Record = dict[str, Any]


class RowStore(Protocol):
    """Where a recorder's finished rows become durable: the run directory's checkpoint
    (store.checkpoint.Checkpoint), or a Ray worker's rows handed back to the driver that journals
    them (ray.transport.Collected)."""

    def add(self, ok: bool, record: Record) -> None:
        """Take a finished row's line (WriteFailed once an earlier write failed)."""

    def check(self) -> None:
        """Raise the WriteFailed of a write that failed since the last call."""

    async def sync(self) -> list[tuple[bool, Record]]:
        """Make every row taken so far durable now; the rows that became so."""

    async def keep_syncing(self, on_durable: Callable[[list[tuple[bool, Record]]], None]) -> None:
        """Make rows durable in batches, handing each batch to `on_durable`, until cancelled."""


class Recorder:
    """A session's finished rows: to the journal now; to stats, sink and caller once durable."""

    def __init__(
        self,
        checkpoint: RowStore,
        progress: Progress,
        stats: RunStats,
        *,
        sink: Sink | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
        on_record: Callable[[bool, Record], None] | None = None,
    ):
        self.checkpoint = checkpoint
        #: What earlier sessions finished: done rows, and failed rows by id (kept current).
        self.progress = progress
        self.stats = stats
        self.sink = sink
        self.on_progress = on_progress or (lambda stats: None)
        self.on_record = on_record
        #: `add(ok, record)`: a finished row, a result (`ok`) or an error record, to the journal now;
        #: raises WriteFailed after a failed write. (The checkpoint's own method: one call a row.)
        self.add: Callable[[bool, Record], None] = checkpoint.add

    def add_failure(self, record: Record, failure: RequestFailed, streak: FailureStreak) -> bool:
        """A row's failure: recorded now if the row failed so before (its own fault), else held in
        `streak`; whether the streak is now long enough to say the job, not the rows, is wrong."""
        previous = self.progress.failed.get(record["id"])
        if previous is not None and previous.get("error") == record["error"]:
            self.add(False, record)
            return False
        for released in streak.hold(record, failure):
            self.add(False, released)
        return streak.reached

    def release(self, streak: FailureStreak) -> None:
        """The failures `streak` held are genuine row failures after all: record them."""
        for record in streak.release():
            self.add(False, record)

    def changed(self) -> None:
        """Counters moved outside the journal (a 429, a retry): tell the progress hook."""
        self.on_progress(self.stats)

    async def keep_syncing(self) -> None:
        """Make rows durable in batches, until cancelled (see Checkpoint.keep_syncing)."""
        await self.checkpoint.keep_syncing(self._on_durable)

    async def stop_syncing(self, syncer: asyncio.Task) -> BatcherError | None:
        """End `keep_syncing` (task `syncer`), then make every row durable; a failed write's error."""
        syncer.cancel()
        await asyncio.gather(syncer, return_exceptions=True)
        try:
            await self.sync()
        except BatcherError as e:
            return e
        return None

    async def sync(self) -> None:
        """Make every row added so far durable now and report it; raise the WriteFailed of a failed write."""
        self._on_durable(await self.checkpoint.sync())
        self.checkpoint.check()

    def _on_durable(self, batch: list[tuple[bool, Record]]) -> None:
        if not batch:
            return
        failed = self.progress.failed
        for ok, record in batch:
            row_id = record["id"]
            self.stats.record_durable(ok, record, retried_failure=row_id in failed)
            if ok:
                if failed:
                    failed.pop(row_id, None)
                if self.sink is not None:
                    self.sink.write_result(record)
            else:
                failed[row_id] = record
            if self.on_record is not None:
                self.on_record(ok, record)
        self.on_progress(self.stats)


class FailureStreak:
    """Row failures held back while they all look alike.

    Many rows in a row failing the same way (same status, type, param and
    message) say the job is wrong (a model name, an account), not the rows: at
    `limit` of them the run stops without marking them failed. A failure of
    another kind releases the held ones as the genuine row failures they were.
    """

    def __init__(self, limit: int | None):
        self.limit = limit
        #: The records held back (empty on the common path: a row answered).
        self.held: list[Record] = []
        self._signature: tuple | None = None

    def hold(self, record: Record, failure: RequestFailed) -> list[Record]:
        """Hold a failed row's record; return the records it releases (of another kind)."""
        signature = (failure.status, failure.type, failure.param, failure.message)
        released = self.release() if self.held and signature != self._signature else []
        self._signature = signature
        self.held.append(record)
        return released

    @property
    def reached(self) -> bool:
        return bool(self.limit) and len(self.held) >= self.limit

    def __len__(self) -> int:
        return len(self.held)

    def release(self) -> list[Record]:
        """The held records, no longer held."""
        held, self.held = self.held, []
        return held

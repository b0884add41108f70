"""The transport seam: how a session's rows become answers.

A transport is handed the rows left to send (`RowsLeft`) and gives every one of
them, answered or failed, to the session's `Recorder` (recording.py), which
keeps the journal, the outputs and the counters. So whatever the transport,
a run directory has the same files, resumes the same way and reports the same
summary. The online worker pool (online/runner.py: requests under the rate
limits, retried one by one), the provider's Batch API (batchapi/: files uploaded,
batches created, polled and downloaded) and a Ray cluster (ray/) meet it.

Adding one: a class with the members of `Transport` that records every row
through the Recorder it is built with, and a branch in session.py that builds it
for the job's mode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Iterator
from typing import Protocol

from batcher.errors import EXIT_ABORTED, BatcherError
from batcher.inputs.idset import IdSet
from batcher.inputs.sources import InputRow, Source
from batcher.job import Job
from batcher.kinds.prompts import RequestBuilder
from batcher.outcome import RunOutcome
from batcher.outputs.stats import RunStats
from batcher.store.progress import Progress
from batcher.transports.stops import Stop

log = logging.getLogger("batcher")


class Transport(Protocol):
    """Sends a session's rows and records what becomes of each."""

    #: The session's counters (the progress bar and summary.json read them).
    stats: RunStats
    #: The run's stop state (stops.Stop), the same in every transport.
    stop: Stop

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: stop taking rows; a second call cuts the drain short (`stop.interrupt`)."""

    async def run(self, rows: RowsLeft) -> RunOutcome:
        """Send `rows` (a None now and then lets the loop breathe) until done or stopped."""


class SkipIds:
    """Which rows to pass over by id: those done (when done is known by id, not by position) and
    those failed, unless the job retries them. A class, not a lambda, so it can travel to the Ray
    tasks that read the input (ray/inputs.py)."""

    def __init__(self, done: IdSet | None, failed: set[str] | None):
        self.done, self.failed = done, failed

    def __call__(self, row_id: str) -> bool:
        return (self.done is not None and row_id in self.done) or (
            self.failed is not None and row_id in self.failed
        )


class RowsLeft:
    """The rows this session sends: all but those done, and those failed unless retried.

    An iterator of them for a transport that reads them here; what it is made of (the source, the
    done positions, the ids passed over) for one that has them read elsewhere (ray/inputs.py)."""

    def __init__(self, job: Job, source: Source, builder: RequestBuilder, progress: Progress):
        self.source, self.builder = source, builder
        self.done = progress.done.positions
        failed = set(progress.failed) if progress.failed and not job.retry_failed else None
        ids = progress.done.ids
        self.skip = SkipIds(ids, failed) if ids is not None or failed else None
        #: The position of the last row to send (`--limit`: the first N rows of the input), or None.
        self.until = source.position_of_row(job.limit) if job.limit is not None else None
        self._rows: Iterator[InputRow | None] | None = None
        self._made_of = job, progress

    def after_batches(self, finished: list[tuple[str, int]]) -> RowsLeft:
        """The rows still left once a deadline's batches have answered what they could: the rows
        `finished` since the last call (id, row number) marked done (the marks stay), and those the
        batches failed for good passed over too (not sent again online)."""
        job, progress = self._made_of
        done = progress.done
        if done.ids is not None:
            for row_id, _ in finished:
                done.ids.add(row_id)
            done.ids.freeze()
        else:
            done.mark_all([number for _, number in finished])
        return RowsLeft(dataclasses.replace(job, retry_failed=False), self.source, self.builder, progress)

    def __iter__(self) -> Iterator[InputRow | None]:
        """The rows themselves (a transport takes them from this iterator: no frame of ours a row)."""
        if self._rows is None:
            rows = self.source.rows(self.builder, done=self.done, skip=self.skip)
            if self.until is not None:
                until = self.until
                rows = itertools.takewhile(lambda row: row is None or row.number <= until, rows)
            self._rows = rows
        return self._rows

    def __next__(self) -> InputRow | None:
        return next(iter(self))


async def drain(
    workers: set[asyncio.Task], busy: set[asyncio.Task], force: asyncio.Event, timeout: float
) -> None:
    """Stopping: cancel the workers that are not `busy` on the wire; give the others `timeout`
    seconds to finish (cut short when `force` is set), then cancel them too (their rows are not
    done and will be sent on resume)."""
    for worker in workers:
        if not worker.done() and worker not in busy:
            worker.cancel()
    waiting = {w for w in workers if not w.done()}
    if not waiting:
        return
    forced = asyncio.create_task(force.wait())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while waiting and not forced.done() and (left := deadline - loop.time()) > 0:
        done, _ = await asyncio.wait({*waiting, forced}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        waiting -= done
    forced.cancel()
    for worker in waiting:
        worker.cancel()


def failure_of_task(task: asyncio.Task) -> BatcherError | None:
    """What a failed task of a transport means for the run: its BatcherError, or an internal error
    (logged with its traceback) that stops the run with exit 3; None if it did not fail."""
    if task.cancelled():
        return None
    error = task.exception()
    if error is None or isinstance(error, BatcherError):
        return error
    log.error("internal error", exc_info=error)
    stop = BatcherError(f"internal error: {type(error).__name__}: {error} (run with --verbose for details)")
    stop.exit_code = EXIT_ABORTED
    return stop

"""A Batch API run with a deadline: its batches first, then online what they did not answer in time.

The Batch API transport waits while its batches pay half and, when the estimate says so
(batchapi/deadline.py), cancels them and collects what they finished; the online pool then sends
the rows left with every online guarantee (limits, retries, 429s, the checkpoint); last, batches
that were still cancelling are collected (the rows they answered that went online as well are
counted, never written twice: the journal takes a row once). docs/batch-api.md, Deadlines.
"""

from __future__ import annotations

from collections.abc import Callable

from batcher.outcome import RunOutcome
from batcher.transports.base import RowsLeft
from batcher.transports.batchapi.transport import BatchTransport
from batcher.transports.online.runner import Runner


class DeadlineTransport:
    """The Batch API transport, then the online pool for what is left (transports.base.Transport)."""

    def __init__(self, batch: BatchTransport, online: Callable[[], Runner]):
        self.batch, self._online = batch, online
        batch.collector.finished_here = []  # (the rows its batches finish: the online rows leave them)
        batch.collector.gone_online = lambda: batch.online
        self.stats, self.stop = batch.stats, batch.stop
        self._sending: BatchTransport | Runner = batch
        self._stopping = False

    def request_stop(self) -> None:
        self._stopping = True
        self._sending.request_stop()

    async def run(self, rows: RowsLeft) -> RunOutcome:
        outcome = await self.batch.run(rows)
        if not self.batch.online or self._stopping or outcome.error is not None:
            return outcome
        runner = self._sending = self._online()
        self.stop = runner.stop
        outcome = await runner.run(rows.after_batches(self.batch.collector.finished_here))
        if self._stopping or outcome.error is not None:
            return outcome
        self._sending, self.stop = self.batch, self.batch.stop
        left = await self.batch.collect_cancelled()
        if left:
            outcome.note = (
                f"{left} cancelled batch(es) had not ended at the provider: the same command collects "
                "them (what they answered is counted, not written: the rows are done)"
            )
        return outcome

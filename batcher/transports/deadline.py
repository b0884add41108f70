"""A Batch API run with a deadline: its batches first, then online what they did not answer in time.

The Batch API transport waits while its batches pay half and, when the estimate says so
(batchapi/deadline.py), cancels them and collects what they finished; the online pool then sends
the rows left with every online guarantee (limits, retries, 429s, the checkpoint); last, batches
that were still cancelling are collected (the rows they answered that went online as well are
counted, never written twice: the journal takes a row once). docs/batch-api.md, Deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator

from batcher.errors import RequestFailed
from batcher.inputs.sources import InputRow
from batcher.outcome import RunOutcome
from batcher.transports.base import RowsLeft
from batcher.transports.batchapi.transport import BatchTransport
from batcher.transports.client import ApiClient
from batcher.transports.online.runner import Runner

log = logging.getLogger("batcher")


class DeadlineTransport:
    """The Batch API transport, then the online pool for what is left (transports.base.Transport)."""

    def __init__(self, batch: BatchTransport, online: Callable[[], Runner], client: ApiClient | None = None):
        """`client`: the endpoint's, to ask the server its limits when the job gives none."""
        self.batch, self._online, self._client = batch, online, client
        batch.collector.finished_here = []  # (the rows its batches finish: the online rows leave them)
        batch.collector.gone_online = lambda: batch.online
        self.stats, self.stop = batch.stats, batch.stop
        self._sending: BatchTransport | Runner = batch
        self._stopping = False

    def request_stop(self) -> None:
        self._stopping = True
        self._sending.request_stop()

    async def run(self, rows: RowsLeft) -> RunOutcome:
        await self._ask_limits()
        outcome = await self.batch.run(rows)
        while self.batch.early and not self._stopping and outcome.error is None:
            outcome = await self._send_early(rows)
        if not self.batch.online or self._stopping or outcome.error is not None:
            return outcome
        left = rows.after_batches(self.batch.collector.take_finished())
        running = await asyncio.to_thread(self.batch.rows_still_running)
        outcome = await self._send_online(last_the_rows_of(left, running))
        if self._stopping or outcome.error is not None:
            return outcome
        still = await self.batch.collect_cancelled()
        if still:
            outcome.note = (
                f"{still} cancelled batch(es) had not ended at the provider: the same command collects "
                "them (what they answered is counted, not written: the rows are done)"
            )
        return outcome

    async def _send_online(self, rows: Iterator[InputRow | None]) -> RunOutcome:
        """`rows` sent by a new online pool, the stops going to it meanwhile."""
        runner = self._sending = self._online()
        self.stop = runner.stop
        try:
            return await runner.run(rows)
        finally:
            self._sending, self.stop = self.batch, self.batch.stop

    async def _ask_limits(self) -> None:
        """With no --rpm or --tpm, one chat request of one token, for the rate-limit headers of its
        answer: the estimate's online rate (a server that announces none leaves it assumed)."""
        job, watch = self.batch.job, self.batch.deadline
        if self._client is None or not watch.needs_rate or job.embeddings or not job.model:
            return
        body = {"model": job.model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
        try:
            watch.learn((await self._client.send(body)).headers)
        except RequestFailed as failure:
            log.info("deadline: the server's limits could not be asked (%s)", failure.message)

    async def _send_early(self, rows: RowsLeft) -> RunOutcome:
        """The rows the provider would not queue, online now; then the batches' passes go on (one
        journal writer at a time: the batch passes wait meanwhile, the batches do not)."""
        early, self.batch.early = set(self.batch.early), []
        collector = self.batch.collector

        def only_early(left: Iterable[InputRow | None]) -> Iterator[InputRow | None]:
            for row in left:
                if row is not None and row.row_id in early:
                    collector.finished_here.append((row.row_id, row.number))  # (done or failed for good)
                    yield row

        outcome = await self._send_online(only_early(rows.after_batches(collector.take_finished())))
        if self._stopping or outcome.error is not None:
            return outcome
        return await self.batch.run(iter(()))


def last_the_rows_of(rows: Iterable[InputRow | None], running: list[str]) -> Iterator[InputRow | None]:
    """`rows`, but those of batches still cancelling (`running`: their ids, in their files' order)
    held back and sent last, from the end of their files: the rows a batch that answers in order
    reaches last, so the fewest are answered by it and online both (held in memory meanwhile:
    at most the rows of the batches still cancelling)."""
    if not running:
        yield from rows
        return
    wanted = set(running)
    held: dict[str, InputRow] = {}
    for row in rows:
        if row is not None and row.row_id in wanted:
            held[row.row_id] = row
        else:
            yield row
    for row_id in reversed(running):
        if (row := held.pop(row_id, None)) is not None:
            yield row

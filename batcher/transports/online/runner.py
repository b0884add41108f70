"""The online worker pool: rows become requests, answers become journal lines.

`concurrency` workers take rows from one iterator (skipping those already
done), each builds its row's request, waits for the limits (charges.py), sends
it, retries what can be retried (retry.py) and appends the outcome to the
checkpoint. Stopping (Ctrl-C, SIGTERM, a refused key) stops the feed, drops
rows still waiting, lets requests already on the wire finish for up to
`drain_timeout` seconds, then makes everything finished durable. A session is
assembled around the pool in batcher/session.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from batcher.errors import (
    AnswerInvalid,
    BatcherError,
    BudgetReached,
    NoEndpointLeft,
    RateLimited,
    RequestFailed,
    Unreachable,
    WriteFailed,
)
from batcher.inputs.sources import InputRow
from batcher.job import BATCH_OUTPUT, Job
from batcher.job.answers import Answers
from batcher.kinds import RequestKind
from batcher.kinds.completion import Completion
from batcher.kinds.records import error_record
from batcher.kinds.reuse import ON_THE_WIRE, Reuse
from batcher.limits.costs import Budget
from batcher.limits.ratelimits import Verdict
from batcher.outcome import RunOutcome
from batcher.transports.base import drain, failure_of_task
from batcher.transports.online.charges import OVER_BUDGET, Charges
from batcher.transports.online.endpoints import Endpoint, Router, job_level_stop
from batcher.transports.online.items import Item, rows_of
from batcher.transports.online.retry import RetryPolicy, Tries
from batcher.transports.recording import FailureStreak, Recorder
from batcher.transports.stops import Patience, Stop, failing_alike

log = logging.getLogger("batcher")


_END = object()
#: A packed request refused for what one of its rows holds: send its halves (see _verdict).
_SPLIT = -1.0


class Runner:
    """The online transport (transports/base.py): a pool of workers sending rows under the limits."""

    def __init__(
        self,
        *,
        job: Job,
        kind: RequestKind,
        router: Router,
        recorder: Recorder,
        retry: RetryPolicy | None = None,
        reuse: Reuse | None = None,
        answers: Answers | None = None,
        budget: Budget | None = None,
    ):
        """`answers`: what makes an answer columns (`Answers`, job/answers.py). `budget`: the run's
        budget, if not the job's against the recorder's figures (a Ray run's: the cluster's)."""
        self.job = job
        self.kind = kind
        self._record = kind.record
        self.router = router
        self.recorder = recorder
        self.stats = stats = recorder.stats
        self.retry = retry or RetryPolicy(max_retries=job.max_retries, parse_retries=job.parse_retries)
        self.estimator = kind.estimator
        #: Rows into packed requests, for a kind that packs them (embeddings); None: a row a request.
        self._packer = kind.packer(reuse)
        self._with_response = job.output_format == BATCH_OUTPUT
        self.reuse = reuse
        #: What makes an answer columns: a parse function, a JSON Schema or labels, or nothing.
        self.answers = answers
        self.charges = Charges(job, kind, router, budget or Budget.of_run(job, stats))
        self.stop = Stop()
        self._in_request: set[asyncio.Task] = set()
        #: Failures held back while they all look alike (see _fail_rows).
        self._streak = FailureStreak(job.stop_after_identical_failures)
        self._systematic = False
        self.patience = Patience(job.patience)

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: the first stops the feed and drains, the second cuts the drain short."""
        self.stop.interrupt()

    async def run(self, rows: Iterator[InputRow | None]) -> RunOutcome:
        syncer = asyncio.create_task(self.recorder.keep_syncing())
        syncer.add_done_callback(self._watch)
        # The workers take rows from the one iterator themselves: no producer task, no queue.
        rows = iter(rows)
        workers = {asyncio.create_task(self._work(rows)) for _ in range(self.job.concurrency)}
        for worker in workers:
            worker.add_done_callback(self._watch)
        stopped = asyncio.create_task(self.stop.stopped.wait())
        await asyncio.wait({stopped, *workers}, return_when=asyncio.FIRST_COMPLETED)
        # Either every worker met the end of the input, or a stop came first.
        while not stopped.done() and not all(w.done() for w in workers):
            await asyncio.wait({stopped, *workers}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        await self._drain(workers)
        syncer.cancel()
        await asyncio.gather(syncer, *workers, return_exceptions=True)
        await self._last_sync()
        return self.stop.outcome(self.stats)

    async def _last_sync(self) -> None:
        """Report every row on disk as done; a write that failed stops the run with its message."""
        try:
            if not self._systematic:
                self._release_streak()
        except WriteFailed as e:  # the rows it held are sent again on resume
            self.stop.fail(e)
        try:
            await self.recorder.sync()
        except BatcherError as e:
            self.stop.fail(e)

    async def _drain(self, workers: set[asyncio.Task]) -> None:
        """Cancel workers that are not on the wire; give the others `drain_timeout`."""
        await drain(workers, self._in_request, self.stop.forced, self.job.drain_timeout)

    def _watch(self, task: asyncio.Task) -> None:
        """A producer, worker or syncer that fails stops the run with its message."""
        error = failure_of_task(task)
        if error is not None:
            self.stop.fail(error)

    async def _work(self, rows: Iterator[InputRow | None]) -> None:
        if self._packer is not None:
            await self._work_packed(rows)
            return
        wants_row = self.answers is not None and self.answers.wants_row
        build, keep, chars = self.kind.builder.build, self.job.keep_columns, self.estimator.prompt_chars
        worker = asyncio.current_task()
        while not self.stop.stopping:
            row = next(rows, _END)
            if row is _END:
                return
            if row is None:
                await asyncio.sleep(0)  # a long run of done rows must not starve the loop
                continue
            body = build(row.row)
            kept = {name: row.row.get(name) for name in keep} if keep else {}
            await self._process(
                Item(row.row_id, row.number, body, kept, chars(body), row.row if wants_row else None, worker)
            )

    async def _work_packed(self, rows: Iterator[InputRow | None]) -> None:
        """Rows taken into packs (embeddings.Packer): one request a pack, its answer split to the rows."""
        worker, packer = asyncio.current_task(), self._packer
        while not self.stop.stopping:
            taken = packer.take(rows, _END)
            for member, error in taken.refused:  # over the per-input limit: never sent, nothing paid,
                # and no sign that the job is wrong (a refusal of the server's would be one)
                self.recorder.add(
                    False, error_record(member.row_id, member.row_number, error, 0, member.kept)
                )
            for member, completion, source in taken.reused:
                self._write_reused(
                    Item(member.row_id, member.row_number, {}, member.kept, 0), completion, source
                )
            if taken.body is not None:
                await self._send(self._packed(taken.body, taken.members, worker))
            elif not taken.ended:
                await asyncio.sleep(0)  # a long run of done rows must not starve the loop
            if taken.ended:
                return

    def _packed(self, body: dict[str, Any], members: list[Any], worker: asyncio.Task | None) -> Item:
        first, chars = members[0], self.estimator.prompt_chars(body)
        return Item(first.row_id, first.row_number, body, {}, chars, None, worker, members)

    async def _process(self, item: Item) -> None:
        """Reuse an identical request's answer where there is one; send the row otherwise."""
        reuse = self.reuse
        key = reuse.key(item.body) if reuse is not None else None
        if key is None:
            await self._send(item)
            return
        found = reuse.try_find(key, item.body)
        if found is ON_THE_WIRE:
            found = await reuse.find(key, item.body)
        if found is not None:
            try:
                self._write_reused(item, *found)
            except AnswerInvalid:  # a parse function that refuses the answer for this row
                await self._send(item)
            return
        completion = None
        try:
            completion = await self._send(item)
        finally:
            reuse.settle(key, item.body, completion, item.row_id)

    def _write_reused(self, item: Item, completion: Completion, source: str) -> None:
        parsed = self._parse(item, completion)
        record = self._record(
            item.row_id,
            item.row_number,
            completion,
            0,
            item.kept,
            parsed,
            cost=0.0,
            with_response=self._with_response,
            reused_from=source,
        )
        self.recorder.add(True, record)

    def _parse(self, item: Item, completion: Completion) -> dict[str, Any]:
        """The answer's columns (none without a schema, labels or parse function); AnswerInvalid."""
        if self.answers is None:
            return {}
        return self.answers.parse(completion.content, completion.finish_reason, item.row)

    async def _send(self, item: Item) -> Completion | None:
        """Send one row until it succeeds or fails for good; the accepted answer, if any."""
        tries = Tries()
        while True:
            sent = await self._attempt(item, tries)
            if sent is None:
                return None  # not sent: stopping, a budget reached, no endpoint left
            endpoint, completion, failure = sent
            if failure is None:
                failure = self._accept(item, completion, tries)
                if failure is None:
                    return completion
            delay = self._verdict(item, endpoint, failure, tries)
            if delay is None:
                return None
            if delay == _SPLIT:
                await self._send_halves(item)
                return None
            await asyncio.sleep(delay)

    async def _send_halves(self, item: Item) -> None:
        """A packed request refused for one of its rows: its halves, each on its own, until the rows
        at fault stand alone and fail by themselves."""
        for body, members in self.kind.halves(item.body, item.members):
            await self._send(self._packed(body, members, item.worker))

    async def _attempt(
        self, item: Item, tries: Tries
    ) -> tuple[Endpoint, Completion | None, RequestFailed | None] | None:
        """One request under the limits and the budget: the endpoint, and its answer or failure."""
        estimate = self.estimator.estimate(item.body, item.prompt_chars)
        try:
            endpoint, permit = await self.router.acquire(estimate)
        except NoEndpointLeft as error:
            self.stop.fail(error)
            return None
        if self.stop.stopping:
            reserved: float | None | object = OVER_BUDGET
        elif self.charges.budgeted:
            reserved = await self.charges.reserve(item.body, item.prompt_chars, estimate)
        else:
            reserved = None
        if reserved is OVER_BUDGET:
            if not self.stop.stopping:
                self.stop.fail(BudgetReached(self.charges.budget.exhausted_message()))
            endpoint.limits.settle(permit, Verdict.FAILED)
            return None  # not sent (stopping, or over budget): resume sends it
        tries.attempts += 1
        self.stats.requests += 1
        endpoint.stats.requests += 1
        self._in_request.add(item.worker)
        completion = failure = None
        try:
            completion = await endpoint.client.send(endpoint.body(item.body))
        except RequestFailed as error:
            failure = error
        finally:
            self._in_request.discard(item.worker)
            if completion is not None:
                self.patience.succeeded()
            self.charges.settle(endpoint, permit, item.body, estimate, reserved, completion, failure)
        self.stats.count_attempt(
            answered=failure is None or failure.status is not None,
            connected=not isinstance(failure, Unreachable),
        )
        return endpoint, completion, failure

    def _accept(self, item: Item, completion: Completion, tries: Tries) -> RequestFailed | None:
        """Record an answer as the row's result; the AnswerInvalid when it does not parse."""
        self.stats.latency.add(completion.latency_ms)
        self.estimator.observe(item.prompt_chars, completion.usage)
        if item.members is not None:
            return self._accept_packed(item, completion, tries)
        try:
            parsed = self._parse(item, completion)
        except AnswerInvalid as invalid:
            invalid.usage, invalid.cost = completion.usage, completion.cost
            return invalid
        record = self._record(
            item.row_id,
            item.row_number,
            completion,
            tries.attempts,
            item.kept,
            parsed,
            cost=completion.cost,
            with_response=self._with_response,
        )
        self.recorder.add(True, record)
        if self._streak.held:
            self._release_streak()
        return None

    def _accept_packed(self, item: Item, completion: Completion, tries: Tries) -> RequestFailed | None:
        """A packed request's answer split to its rows (and their copies); the failure if it cannot be."""
        try:
            shares = self.kind.unpack(completion, item.members)
        except RequestFailed as failure:
            return failure
        reuse = self._packer.reuse
        for member, share in zip(item.members, shares, strict=True):
            record = self._record(
                member.row_id, member.row_number, share, tries.attempts, member.kept, cost=share.cost
            )
            self.recorder.add(True, record)
            for copy in member.copies:
                self._write_reused(Item(copy.row_id, copy.row_number, {}, copy.kept, 0), share, member.row_id)
            if reuse is not None:
                reuse.settle(member, share)
        self._release_streak()
        return None

    def _verdict(self, item: Item, endpoint: Endpoint, failure: RequestFailed, tries: Tries) -> float | None:
        """After a failed attempt: seconds to wait before the next, or None (row failed, or stopping)."""
        tries.count(failure)
        if isinstance(failure, RateLimited):
            self.stats.rate_limited += 1
            self.recorder.changed()
        if self.router.failed(endpoint, failure):
            log.warning("endpoint %s retired: %s", endpoint.name, endpoint.stats.retired)
            return 0.0  # the endpoint's fault, not the row's: send it elsewhere now
        abort = job_level_stop(failure, endpoint, self.router, self.kind.path, self.patience.started)
        if abort is not None:
            self.stop.fail(abort)
            return None
        if self.stop.stopping:
            return None  # stopping: a failed attempt is not a verdict on the row
        if item.members is not None and len(item.members) > 1 and self.kind.splits_on(failure):
            return _SPLIT
        # Stop, resumably, when 429s or a server out of reach have let nothing through for too long.
        if isinstance(failure, (RateLimited, Unreachable)) and (stop := self.patience.over(failure)):
            self.stop.fail(stop)
        delay = self.retry.next_delay(failure, tries, elsewhere=not self.router.single)
        if delay is None:
            self._fail_rows(item, failure, tries)
            return None
        self.stats.retries += 1
        log.info(
            "row %s: attempt %d failed (%s: %s); retrying in %.2f s",
            item.row_id,
            tries.attempts,
            failure.type,
            failure.message,
            delay,
        )
        return delay

    def _fail_rows(self, item: Item, failure: RequestFailed, tries: Tries) -> None:
        """The rows of a request failed for good: held while failures look alike, since many in a row
        mean the job, not the rows, is wrong."""
        log.warning(
            "row %s failed after %d attempt(s): %s: %s",
            item.row_id,
            tries.attempts,
            failure.type,
            failure.message,
        )
        for row_id, row_number, kept, copy in rows_of(item):
            record = error_record(
                row_id, row_number, failure, tries.attempts, kept, cost=getattr(failure, "cost", None)
            )
            if copy:  # a failed request counts once among failures alike, not once a copy
                self.recorder.add(False, record)
            elif self.recorder.add_failure(record, failure, self._streak) and not self.stop.stopping:
                self._systematic = True
                self.stop.fail(failing_alike(len(self._streak), failure))
        for member in item.members if self._packer and self._packer.reuse else ():
            self._packer.reuse.settle(member, None)  # identical rows to come are sent themselves

    def _release_streak(self) -> None:
        """The held failures are genuine row failures after all: record them."""
        self.recorder.release(self._streak)

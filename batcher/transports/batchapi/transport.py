"""The Batch API transport: a session's rows sent as the provider's batches, collected into the journal.

Each pass takes every part one step on (plan, upload, create, poll, collect;
parts.py journals each step before the next relies on it), then waits while
only the provider has work to do: 1 s, then twice as long each pass, up to
`poll_interval`. Finished rows go to
the session's Recorder as online answers do, plus `batch_id`; rows the provider
did not answer go into a new part, up to `max_retries` rounds. See
docs/batch-api.md for why no row can be in two live batches or paid twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from batcher.errors import BatcherError, RequestFailed, RunAborted, WriteFailed
from batcher.inputs.sources import InputRow
from batcher.job import Job
from batcher.job.answers import Answers
from batcher.kinds import RequestKind
from batcher.kinds.reuse import Reuse
from batcher.outcome import RunOutcome, Status
from batcher.transports.batchapi.collect import Collector, read_fates
from batcher.transports.batchapi.deadline import DeadlineWatch
from batcher.transports.batchapi.holds import Holds
from batcher.transports.batchapi.parts import Part, PartsLog, PartState
from batcher.transports.batchapi.plan import Planned, Planner
from batcher.transports.batchapi.provider import BatchProvider
from batcher.transports.batchapi.submit import Submitter
from batcher.transports.client import job_level_cause
from batcher.transports.recording import Recorder
from batcher.transports.stops import FAST_STOP_SECONDS, Patience, Stop, never_answered

log = logging.getLogger("batcher")

#: A batch in one of these states has ended: its files hold all it will ever answer.
ENDED_STATUSES = ("completed", "failed", "expired", "cancelled")
#: A batch in one of these states may be cancelled.
LIVE_STATUSES = ("validating", "in_progress", "finalizing")
#: The first wait between passes; each next one is twice as long, up to the job's poll_interval.
FIRST_WAIT_SECONDS = 1.0


class BatchTransport:
    """Sends rows as batches and collects their answers (transports.base.Transport)."""

    def __init__(
        self,
        *,
        job: Job,
        kind: RequestKind,
        recorder: Recorder,
        provider: BatchProvider,
        log_: PartsLog,
        answers: Answers | None = None,
        reuse: Reuse | None = None,
        deadline: DeadlineWatch | None = None,
    ):
        """`answers`: what makes an answer columns (a parse function, a schema, labels) or None;
        `deadline`: the run's deadline (--deadline), when it has one."""
        self.job, self.recorder, self.provider, self.log = job, recorder, provider, log_
        self.deadline = deadline
        self.stats = recorder.stats
        self.collector = Collector(job=job, kind=kind, recorder=recorder, answers=answers, reuse=reuse)
        self.planner = Planner(
            job=job,
            kind=kind,
            log=log_,
            reuse=reuse,
            wants_row=answers is not None and answers.wants_row,
            on_cached=lambda row, completion: self.collector.add_answer(
                None, row, completion, reused_from="cache"
            ),
        )
        #: The endpoint of its batches, as the Batches API names it.
        self.endpoint = "/v1" + kind.path
        self.submitter = Submitter(
            provider, self.endpoint, self._record, lambda part: asyncio.to_thread(self.log.read_lines, part)
        )
        self.parts: dict[int, Part] = {}
        self.stop = Stop()
        self.patience = Patience(job.patience)
        self._submitted = False
        #: Parts refused for the enqueued-token limit, created again only when no other part runs.
        self._waiting_for_room: set[int] = set()
        #: With a deadline, the ids of rows the provider would not queue (the enqueued-token limit):
        #: the run sends them online before its batches' passes go on (transports/deadline.py).
        self.early: list[str] = []
        #: Parts not sent because their worst case would go over a budget (--max-cost, --max-total-tokens).
        self.holds = Holds(job, self.stats, lambda: self.parts.values())
        self._waits = 0

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: stop waiting; the batches go on, and the same command collects them."""
        self.stop.interrupt()

    async def run(self, rows: Iterator[InputRow | None]) -> RunOutcome:
        syncer = asyncio.create_task(self.recorder.keep_syncing())
        try:
            self.parts = await asyncio.to_thread(self.log.load)
            await self._plan_rows(rows)
            await self._passes()
            if self.holds.held:
                self.stop.fail(self.holds.reached())
        except BatcherError as e:
            self.stop.fail(e)
        except OSError as e:  # the parts journal or a part's files could not be written or read
            self.stop.fail(WriteFailed(f"cannot use {self.log.path.parent}: {e.strerror or e}"))
        except ValueError as e:  # a request line over the provider's file limit
            self.stop.fail(RunAborted(f"a row cannot go in a batch: {e}"))
        finally:
            if (error := await self.recorder.stop_syncing(syncer)) is not None:
                self.stop.fail(error)
        if self._submitted and not self.stop.stopping:
            return RunOutcome(Status.SUBMITTED, self.stats)
        outcome = self.stop.outcome(self.stats)
        if any(part.live for part in self.parts.values()):
            outcome.note = (
                "batches are still running at the provider: run the same command to collect them, "
                f"or `batcher cancel {self.job.output}` to cancel them"
            )
        return outcome

    @property
    def online(self) -> bool:
        """Gone online for a deadline: no part made a batch or planned again; live ones cancelled."""
        return self.deadline is not None and self.deadline.online

    # -- planning ----------------------------------------------------------------------

    def _claimed(self, besides: Part | None = None) -> set[str]:
        """Ids of the rows in parts not yet collected (`besides` left out): never planned into another part.

        (A crash between planning a part's unanswered rows and marking it collected leaves them claimed.)
        """
        return set(self.rows_still_running(besides))

    def rows_still_running(self, besides: Part | None = None) -> list[str]:
        """The ids of the rows (and copies) of parts not yet collected, part by part in file order."""
        open_parts = sorted(self.parts.values(), key=lambda p: p.number)
        return [
            member["id"]
            for part in open_parts
            if part.state != PartState.COLLECTED and part is not besides
            for row in self.log.read_rows(part)
            for member in (row, *row.get("copies", ()))
        ]

    async def _plan_rows(self, rows: Iterator[InputRow | None]) -> None:
        """The session's rows not in a part yet, planned (none once gone online for a deadline)."""
        if self.online:
            return
        claimed = await asyncio.to_thread(self._claimed)
        await self._plan(
            self.planner.requests(r for r in rows if r is not None and r.row_id not in claimed), 0
        )

    async def _plan(self, requests: Iterable[Planned], round_: int) -> None:
        """Write the parts of `requests`, each whole (the rows are read and built on the loop, as online)."""
        for group in self.planner.groups(requests):
            number = max(self.parts, default=0) + 1
            self.parts[number] = await asyncio.to_thread(self.planner.write, number, round_, group)

    # -- the passes --------------------------------------------------------------------

    async def _passes(self) -> None:
        while not self.stop.stopping:
            open_parts = [
                p
                for p in sorted(self.parts.values(), key=lambda p: p.number)
                if p.state != PartState.COLLECTED
            ]
            if self._nothing_to_wait_for(open_parts):
                return
            for part in open_parts:
                if self.stop.stopping:
                    return
                await self._advance(part)
            if self.job.no_wait and self._all_submitted():
                return  # submitted: the batches run on, and the same command collects them
            if self.deadline is not None and not self.online and self.deadline.due(self.parts.values()):
                await asyncio.to_thread(self.deadline.go_online)
                self._waits = 0  # (cancelled batches end in seconds: looked at soon)
                continue
            if any(p.state != PartState.COLLECTED for p in self.parts.values()):
                await self._wait(self._next_wait())

    async def collect_cancelled(self) -> int:
        """Gone online: the batches still cancelling, collected if they end within the margin's
        fixed part from now; how many parts are left open."""
        await asyncio.to_thread(self.deadline.go_online)  # (the wait counted from now)
        await self._passes()
        return sum(p.state != PartState.COLLECTED for p in self.parts.values())

    def _nothing_to_wait_for(self, open_parts: list[Part]) -> bool:
        """No part open, or only parts held for a budget, or cancelled batches given their time, or
        rows to send online early (`early`)."""
        if self.early:
            return True
        if not open_parts or self.holds.only_held(open_parts):
            return True
        return self.online and self.deadline.waited_for_cancelling()

    def _all_submitted(self) -> bool:
        """Every part has its batch (or is held for a budget); `_submitted`: some batch runs."""
        parts, held = self.parts.values(), self.holds.held
        if not all(p.state in (PartState.CREATED, PartState.COLLECTED) or p.number in held for p in parts):
            return False
        self._submitted = any(p.state == PartState.CREATED for p in parts)
        return True

    def _next_wait(self) -> float:
        """1 s after the first pass, then twice as long each time, up to `poll_interval`: small batches
        are collected in seconds, long ones cost a GET a batch every `poll_interval`."""
        self._waits += 1
        wait = min(self.job.poll_interval, FIRST_WAIT_SECONDS * 2 ** (self._waits - 1))
        return wait if self.deadline is None else self.deadline.capped(wait)

    async def _wait(self, seconds: float) -> None:
        """`seconds`, or less if a stop comes (no wait_for: on 3.11 it can swallow a cancellation)."""
        stopped = asyncio.ensure_future(self.stop.stopped.wait())
        try:
            await asyncio.wait({stopped}, timeout=seconds)
        finally:
            stopped.cancel()

    async def _advance(self, part: Part) -> None:
        """Take `part` as far as it goes without waiting on the provider; a failure another try
        may mend waits for the next pass."""
        steps = {
            PartState.PLANNED: self.submitter.upload,
            PartState.UPLOADED: self._create,
            PartState.CREATING: self._find_or_create,
            PartState.CREATED: self._poll,
            PartState.ENDED: self._collect,
        }
        try:
            if part.number in self._waiting_for_room:
                if any(other.live for other in self.parts.values() if other is not part):
                    return  # refused for the enqueued-token limit: not asked again while others run
                self._waiting_for_room.discard(part.number)
            if part.state in (PartState.PLANNED, PartState.UPLOADED):
                if self.online:  # never made a batch: its rows go online
                    await self._record(part, PartState.COLLECTED)
                    return
                if not self.holds.admit(part):
                    return
            while part.state in steps and not self.stop.stopping:
                state = part.state
                await steps[state](part)
                self.patience.succeeded()
                if part.state == state or state == PartState.ENDED:
                    return  # waiting on the provider, or collected (or to be created again) next pass
        except RequestFailed as failure:
            self._check(part, failure)
            log.warning(
                "part %d: %s: %s; trying again at the next pass", part.number, failure.type, failure.message
            )

    def _check(self, part: Part, failure: RequestFailed) -> None:
        """Stop the run when a failure says the job cannot work, or nothing has worked for too long."""
        if not failure.retryable:
            raise RunAborted(
                f"the provider refused part {part.number} ({failure.type}: {failure.message}). "
                "Nothing was marked failed: fix it and run the same command again."
            )
        never = self.patience.never_succeeded_for(FAST_STOP_SECONDS)
        if never and (cause := job_level_cause(failure, self.provider.base_url, "/files")) is not None:
            raise never_answered(cause)
        if (stop := self.patience.over(failure)) is not None:
            raise stop

    async def _record(self, part: Part, state: PartState, **changes: Any) -> None:
        await asyncio.to_thread(self.log.record, part, state, **changes)

    async def _create(self, part: Part) -> None:
        crowded = any(other.live for other in self.parts.values() if other is not part)
        await self.submitter.create(part, crowded=crowded)

    async def _find_or_create(self, part: Part) -> None:
        """A creation in doubt: its batch adopted once listed; asked for again only when the
        provider's list has had its time to show it (submit.py), and not once gone online."""
        if await self.submitter.find(part) or self.online or not self.submitter.may_ask_again(part):
            return
        await self._create(part)

    async def _poll(self, part: Part) -> None:
        batch = await self.provider.get(part.batch_id)
        if self.online and batch.get("status") in LIVE_STATUSES:  # (asked again after a resume)
            batch = await self.provider.cancel(part.batch_id)
        part.batch = batch
        if batch.get("status") in ENDED_STATUSES:
            await self._record(part, PartState.ENDED, batch=batch)

    # -- collecting ----------------------------------------------------------------------

    async def _collect(self, part: Part) -> None:
        """Journal what the ended batch answered; plan what it did not; then the part is collected."""
        batch = part.batch
        rows = await asyncio.to_thread(self.log.read_rows, part)
        if batch.get("status") == "failed":
            await self._collect_failed(part, rows)
            return
        output = await self._content(batch.get("output_file_id"))
        errors = await self._content(batch.get("error_file_id"))
        fates = read_fates(output, errors, [row["id"] for row in rows])
        again = self.collector.journal(part, rows, fates)
        await self.recorder.sync()
        await self._plan_again(part, again)
        await self._record(part, PartState.COLLECTED)

    async def _content(self, file_id: str | None) -> bytes:
        return await self.provider.content(file_id) if file_id else b""

    async def _plan_again(self, part: Part, again: list[tuple[dict[str, Any], RequestFailed]]) -> None:
        """Rows the provider did not answer: a new part, unless their rounds are spent (then errors).
        Gone online for a deadline: none (they go online)."""
        if not again or self.online:
            return
        claimed = await asyncio.to_thread(self._claimed, part)
        again = [(row, failure) for row, failure in again if row["id"] not in claimed]
        if part.round >= self.job.max_retries:
            for row, failure in again:
                self.collector.fail(part, row, failure)
            await self.recorder.sync()
            return
        requests = await asyncio.to_thread(self.planner.again, part, [row for row, _ in again])
        await self._plan(requests, part.round + 1)
        self.stats.retries += len(requests)

    async def _collect_failed(self, part: Part, rows: list[dict[str, Any]]) -> None:
        """A batch that failed validation: wait and try again, fail the lines it names, or stop."""
        errors = (part.batch.get("errors") or {}).get("data") or []
        codes = {error.get("code") for error in errors}
        if codes == {"token_limit_exceeded"}:
            await self._over_token_limit(part, rows, errors)
            return
        named = {error.get("line") for error in errors if isinstance(error.get("line"), int)}
        if not named:
            message = "; ".join(str(error.get("message")) for error in errors) or "no reason given"
            await self._record(part, PartState.COLLECTED)  # answered nothing: its rows go free
            raise RunAborted(
                f"the provider failed batch {part.batch_id} of part {part.number}: {message}. "
                "Nothing was marked failed: fix it and run the same command again."
            )
        await self._fail_named_lines(part, rows, errors)

    async def _over_token_limit(self, part: Part, rows: list[dict[str, Any]], errors: list[dict]) -> None:
        """A batch refused for the enqueued-token limit: created again once others end (or, with a
        deadline, its rows sent online now); alone, too big: the run stops."""
        if not part.crowded:  # nothing else was running when it was made: it is too big alone
            # Its rows go free, to be planned smaller next run.
            await self._record(part, PartState.COLLECTED)
            raise RunAborted(
                f"part {part.number} alone is over the provider's enqueued-token limit "
                f"({'; '.join(str(e.get('message')) for e in errors)}): run again with a smaller "
                "--batch-size. Nothing was marked failed."
            )
        if self.deadline is not None:  # not queued: with a deadline, its rows go online now
            log.info("part %d: over the enqueued-token limit; its rows go online", part.number)
            await self._record(part, PartState.COLLECTED)
            self.early += [member["id"] for row in rows for member in (row, *row.get("copies", ()))]
            return
        log.info("part %d: over the enqueued-token limit; created again once others finish", part.number)
        self._waiting_for_room.add(part.number)
        await self._record(part, PartState.UPLOADED, batch_id=None, batch={})

    async def _fail_named_lines(self, part: Part, rows: list[dict[str, Any]], errors: list[dict]) -> None:
        """A batch that failed for lines its errors name: those rows fail, the others are sent again."""
        bad = {}
        for error in errors:
            line = error.get("line")
            if isinstance(line, int) and 0 < line <= len(rows):
                bad[rows[line - 1]["id"]] = error
        again = []
        for row in rows:
            if not self.collector.unfinished(part, row):
                continue
            if row["id"] in bad:
                error = bad[row["id"]]
                failure = RequestFailed(
                    str(error.get("message")), type=str(error.get("code")), param=error.get("param")
                )
                self.collector.fail(part, row, failure)
            else:
                again.append(
                    (row, RequestFailed("sent again: another line failed the batch", type="batch_failed"))
                )
        await self.recorder.sync()
        await self._plan_again(part, again)
        await self._record(part, PartState.COLLECTED)

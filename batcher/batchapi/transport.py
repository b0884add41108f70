"""The Batch API transport: a session's rows sent as the provider's batches, collected into the journal.

Each pass takes every part one step on (plan, upload, create, poll, collect;
parts.py journals each step before the next relies on it), then waits
`poll_interval` while only the provider has work to do. Finished rows go to
the session's Recorder as online answers do, plus `batch_id`; rows the provider
did not answer go into a new part, up to `max_retries` rounds. See
docs/batch-api.md for why no row can be in two live batches or paid twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from ..client import job_level_cause
from ..errors import BatcherError, RequestFailed, RunAborted, WriteFailed
from ..job import BATCH_OUTPUT, Job
from ..jsoncodec import dumpb
from ..kinds import RequestKind
from ..outcome import RunOutcome, Status
from ..recording import Recorder
from ..sinks import error_record
from ..sources import InputRow
from ..stops import FAST_STOP_SECONDS, never_answered, stalled_for
from .collect import Answered, read_fates
from .parts import (
    COLLECTED,
    CREATED,
    CREATING,
    ENDED,
    MAX_BYTES,
    PLANNED,
    UPLOADED,
    Part,
    PartsLog,
    batch_line,
    split,
)
from .provider import BatchProvider

log = logging.getLogger("batcher")

#: A batch in one of these states has ended: its files hold all it will ever answer.
ENDED_STATUSES = ("completed", "failed", "expired", "cancelled")
#: How far back, before a creation was asked for, a lost creation is looked for (clock skew).
FIND_SLACK_SECONDS = 300


class BatchTransport:
    """Sends rows as batches and collects their answers (transport.Transport)."""

    def __init__(
        self, *, job: Job, kind: RequestKind, recorder: Recorder, provider: BatchProvider, log_: PartsLog
    ):
        self.job, self.kind, self.recorder, self.provider, self.log = job, kind, recorder, provider, log_
        self.stats = recorder.stats
        #: The endpoint of its batches, as the Batches API names it.
        self.endpoint = "/v1" + kind.path
        self.parts: dict[int, Part] = {}
        self._stop = asyncio.Event()
        self._abort: BatcherError | None = None
        self.interrupted = False
        self._started = time.monotonic()
        self._last_success: float | None = None
        self._submitted = False
        #: Parts refused for the enqueued-token limit, created again only when no other part runs.
        self._waiting_for_room: set[int] = set()

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: stop waiting; the batches go on, and the same command collects them."""
        self.interrupted = True
        self._stop.set()

    async def run(self, rows: Iterator[InputRow | None]) -> RunOutcome:
        syncer = asyncio.create_task(self.recorder.keep_syncing())
        try:
            self.parts = await asyncio.to_thread(self.log.load)
            claimed = await asyncio.to_thread(self._claimed)
            await asyncio.to_thread(
                self._plan, (r for r in rows if r is not None and r.row_id not in claimed), 0
            )
            await self._passes()
        except BatcherError as e:
            self._fail(e)
        except OSError as e:  # the parts journal or a part's files could not be written or read
            self._fail(WriteFailed(f"cannot use {self.log.path.parent}: {e.strerror or e}"))
        except ValueError as e:  # a request line over the provider's file limit
            self._fail(RunAborted(f"a row cannot go in a batch: {e}"))
        finally:
            syncer.cancel()
            await asyncio.gather(syncer, return_exceptions=True)
            try:
                await self.recorder.sync()
            except BatcherError as e:
                self._fail(e)
        if self._submitted and self._abort is None and not self.interrupted:
            return RunOutcome(Status.SUBMITTED, self.stats)
        outcome = RunOutcome.of(self.stats, self._abort, self.interrupted)
        if any(part.live for part in self.parts.values()):
            outcome.note = (
                "batches are still running at the provider: run the same command to collect them, "
                f"or `batcher cancel {self.job.output}` to cancel them"
            )
        return outcome

    def _fail(self, error: BatcherError) -> None:
        if self._abort is None:
            self._abort = error
        self._stop.set()

    # -- planning ----------------------------------------------------------------------

    def _claimed(self, besides: Part | None = None) -> set[str]:
        """Ids of the rows in parts not yet collected (`besides` left out): never planned into another part.

        (A crash between planning a part's unanswered rows and marking it collected leaves them claimed.)
        """
        return {
            row["id"]
            for part in self.parts.values()
            if part.state != COLLECTED and part is not besides
            for row in self.log.read_rows(part)
        }

    def _plan(self, rows: Iterable[InputRow], round_: int) -> None:
        """Write parts for `rows` (their request lines and what their records need), each whole."""
        build, keep = self.kind.builder.build, self.job.keep_columns
        pairs = (
            (
                batch_line(row.row_id, build(row.row), self.kind.path),
                dumpb({"id": row.row_id, "row_number": row.number, "kept": {k: row.row.get(k) for k in keep}})
                + b"\n",
            )
            for row in rows
        )
        self._write_parts(pairs, round_)

    def _write_parts(self, pairs: Iterable[tuple[bytes, bytes]], round_: int) -> None:
        """Parts of (request line, row info) pairs, under the batch size and the file limit."""
        size = self.job.batch_size
        for group in split(pairs, max_requests=size, max_bytes=MAX_BYTES, size=lambda pair: len(pair[0])):
            number = max(self.parts, default=0) + 1
            lines, infos = [line for line, _ in group], [info for _, info in group]
            self.parts[number] = self.log.write_part(number, round_, lines, infos)

    # -- the passes --------------------------------------------------------------------

    async def _passes(self) -> None:
        while not self._stop.is_set():
            open_parts = [
                p for p in sorted(self.parts.values(), key=lambda p: p.number) if p.state != COLLECTED
            ]
            if not open_parts:
                return
            for part in open_parts:
                if self._stop.is_set():
                    return
                await self._advance(part)
            if self.job.no_wait and all(p.state in (CREATED, COLLECTED) for p in self.parts.values()):
                self._submitted = any(p.state == CREATED for p in self.parts.values())
                return  # submitted: the batches run on, and the same command collects them
            if any(p.state != COLLECTED for p in self.parts.values()):
                await self._wait(self.job.poll_interval)

    async def _wait(self, seconds: float) -> None:
        """`seconds`, or less if a stop comes (no wait_for: on 3.11 it can swallow a cancellation)."""
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({stopped}, timeout=seconds)
        finally:
            stopped.cancel()

    async def _advance(self, part: Part) -> None:
        """Take `part` as far as it goes without waiting on the provider; a failure another try
        may mend waits for the next pass."""
        steps = {
            PLANNED: self._upload,
            UPLOADED: self._create,
            CREATING: self._find_or_create,
            CREATED: self._poll,
            ENDED: self._collect,
        }
        try:
            if part.number in self._waiting_for_room:
                if any(other.live for other in self.parts.values() if other is not part):
                    return  # refused for the enqueued-token limit: not asked again while others run
                self._waiting_for_room.discard(part.number)
            while part.state in steps and not self._stop.is_set():
                state = part.state
                await steps[state](part)
                self._last_success = time.monotonic()
                if part.state == state or state == ENDED:
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
        now = time.monotonic()
        never = self._last_success is None and now - self._started >= FAST_STOP_SECONDS
        if never and (cause := job_level_cause(failure, self.provider.base_url, "/files")) is not None:
            raise never_answered(cause)
        if now - (self._last_success or self._started) >= self.job.patience:
            raise stalled_for(now - (self._last_success or self._started), failure)

    async def _record(self, part: Part, state: str, **changes: Any) -> None:
        await asyncio.to_thread(self.log.record, part, state, **changes)

    async def _upload(self, part: Part) -> None:
        data = b"".join(await asyncio.to_thread(self.log.read_lines, part))
        uploaded = await self.provider.upload(part.file, data)
        await self._record(part, UPLOADED, file_id=uploaded["id"], provider=self.provider.base_url)

    async def _create(self, part: Part) -> None:
        """Ask for the part's batch, the intent (a new nonce) on disk first."""
        crowded = any(other.live for other in self.parts.values() if other is not part)
        await self._record(
            part,
            CREATING,
            nonce=uuid.uuid4().hex,
            creations=part.creations + 1,
            asked_at=time.time(),
            crowded=crowded,
        )
        try:
            batch = await self.provider.create(part.file_id, self.endpoint, self._metadata(part))
        except RequestFailed as failure:
            if not failure.retryable:
                raise
            await self._find_or_create(part, create=False)  # the answer is lost, not the batch: it may exist
            if part.state != CREATED:
                raise
            return
        await self._record(part, CREATED, batch_id=batch["id"], batch=batch)

    async def _find_or_create(self, part: Part, *, create: bool = True) -> None:
        """Adopt the batch a creation in doubt made, if the provider has it; create it otherwise."""
        found = await self.provider.find(self._metadata(part), since=part.asked_at - FIND_SLACK_SECONDS)
        if found is not None:
            await self._record(part, CREATED, batch_id=found["id"], batch=found)
        elif create:
            await self._create(part)

    def _metadata(self, part: Part) -> dict[str, str]:
        return {"batcher_part": str(part.number), "batcher_nonce": part.nonce or ""}

    async def _poll(self, part: Part) -> None:
        batch = await self.provider.get(part.batch_id)
        part.batch = batch
        if batch.get("status") in ENDED_STATUSES:
            await self._record(part, ENDED, batch=batch)

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
        again = self._journal(part, rows, fates)
        await self.recorder.sync()
        await self._plan_again(part, again)
        await self._record(part, COLLECTED)

    async def _content(self, file_id: str | None) -> bytes:
        return await self.provider.content(file_id) if file_id else b""

    def _journal(
        self, part: Part, rows: list[dict[str, Any]], fates: Any
    ) -> list[tuple[dict[str, Any], RequestFailed]]:
        """Add the answered and failed rows not already done; the rows to send again."""
        done, again = self.recorder.progress.done, []
        for row in rows:
            row_id = row["id"]
            if done.has(row_id, row["row_number"]) or self._recorded_from(part, row_id):
                continue
            self.stats.requests += 1
            if row_id in fates.answered:
                self._add_answer(part, row, fates.answered[row_id])
            elif row_id in fates.failed:
                self._add_error(part, row, fates.failed[row_id])
            else:
                again.append((row, fates.again[row_id]))
        return again

    def _recorded_from(self, part: Part, row_id: str) -> bool:
        """The row's error line came from this very batch (collected before a crash), not an earlier one."""
        failed = self.recorder.progress.failed.get(row_id)
        return failed is not None and failed.get("batch_id") == part.batch_id

    def _add_answer(self, part: Part, row: dict[str, Any], answered: Answered) -> None:
        try:
            completion = self.kind.read_answer(answered.body, answered.raw)
        except RequestFailed as failure:
            self._add_error(part, row, failure)
            return
        completion.request_id = answered.request_id
        model = completion.model or self.job.model
        completion.cost = self.job.price_table.cost(model, completion.usage, batch=True)
        answers = self.job.answer_format
        parsed = {}
        if answers is not None:
            try:
                parsed = answers.parse(completion.content, completion.finish_reason, None)
            except RequestFailed as invalid:  # AnswerInvalid: kept as the row's error, with what it cost
                invalid.usage, invalid.cost = completion.usage, completion.cost
                self._add_error(part, row, invalid)
                return
        record = self.kind.record(
            row["id"],
            row["row_number"],
            completion,
            part.round + 1,
            row["kept"],
            parsed,
            cost=completion.cost,
            with_response=self.job.output_format == BATCH_OUTPUT,
        )
        record["batch_id"] = part.batch_id
        self.recorder.add(True, record)

    def _add_error(self, part: Part, row: dict[str, Any], failure: RequestFailed) -> None:
        record = error_record(
            row["id"],
            row["row_number"],
            failure,
            part.round + 1,
            row["kept"],
            cost=getattr(failure, "cost", None),
        )
        record["batch_id"] = part.batch_id
        self.recorder.add(False, record)

    async def _plan_again(self, part: Part, again: list[tuple[dict[str, Any], RequestFailed]]) -> None:
        """Rows the provider did not answer: a new part, unless their rounds are spent (then errors)."""
        if not again:
            return
        claimed = await asyncio.to_thread(self._claimed, part)
        again = [(row, failure) for row, failure in again if row["id"] not in claimed]
        if part.round >= self.job.max_retries:
            for row, failure in again:
                self._add_error(part, row, failure)
            await self.recorder.sync()
            return
        lines = {line_id(line): line for line in await asyncio.to_thread(self.log.read_lines, part)}
        pairs = [(lines[row["id"]], dumpb(row) + b"\n") for row, _ in again]
        await asyncio.to_thread(self._write_parts, pairs, part.round + 1)
        self.stats.retries += len(pairs)

    async def _collect_failed(self, part: Part, rows: list[dict[str, Any]]) -> None:
        """A batch that failed validation: wait and try again, fail the lines it names, or stop."""
        errors = (part.batch.get("errors") or {}).get("data") or []
        codes = {error.get("code") for error in errors}
        if codes == {"token_limit_exceeded"}:
            if not part.crowded:  # nothing else was running when it was made: it is too big alone
                await self._record(part, COLLECTED)  # its rows go free, to be planned smaller next run
                raise RunAborted(
                    f"part {part.number} alone is over the provider's enqueued-token limit "
                    f"({'; '.join(str(e.get('message')) for e in errors)}): run again with a smaller "
                    "--batch-size. Nothing was marked failed."
                )
            log.info("part %d: over the enqueued-token limit; created again once others finish", part.number)
            self._waiting_for_room.add(part.number)
            await self._record(part, UPLOADED, batch_id=None, batch={})
            return
        named = {error.get("line") for error in errors if isinstance(error.get("line"), int)}
        if not named:
            message = "; ".join(str(error.get("message")) for error in errors) or "no reason given"
            await self._record(part, COLLECTED)  # it answered nothing: its rows go free for the next run
            raise RunAborted(
                f"the provider failed batch {part.batch_id} of part {part.number}: {message}. "
                "Nothing was marked failed: fix it and run the same command again."
            )
        bad = {}
        for error in errors:
            line = error.get("line")
            if isinstance(line, int) and 0 < line <= len(rows):
                bad[rows[line - 1]["id"]] = error
        again = []
        for row in rows:
            if row["id"] in bad:
                error = bad[row["id"]]
                failure = RequestFailed(
                    str(error.get("message")), type=str(error.get("code")), param=error.get("param")
                )
                self._add_error(part, row, failure)
            else:
                again.append(
                    (row, RequestFailed("sent again: another line failed the batch", type="batch_failed"))
                )
        await self.recorder.sync()
        await self._plan_again(part, again)
        await self._record(part, COLLECTED)


def line_id(line: bytes) -> str:
    """The custom_id of a request line."""
    return json.loads(line)["custom_id"]

"""What a finished batch's output and error files say about each of its rows.

Each line of either file names its row by `custom_id`. A row's fate is one of
three: answered (status 200: the body is an answer, read by the request kind),
failed for good (4xx, or an error the provider gives for the row itself: a row
error, as online), or not answered (5xx, `batch_expired`, `batch_cancelled`,
or no line at all: it goes into a new part). Output order is not input order,
and a malformed line is the provider's fault, not the row's: its row is sent
again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batcher.errors import BadRequest, RequestFailed, Retryable
from batcher.job import BATCH_OUTPUT, Job
from batcher.job.answers import Answers
from batcher.kinds import RequestKind
from batcher.kinds.completion import Completion, error_for_status
from batcher.kinds.records import error_record
from batcher.kinds.reuse import Reuse
from batcher.transports.batchapi.parts import Part
from batcher.transports.recording import Recorder

#: Error codes of rows the provider did not get to: sent again in a new part.
NOT_ANSWERED = ("batch_expired", "batch_cancelled")


@dataclass
class Answered:
    """A row's 200 answer, as the provider returned it."""

    body: Any
    raw: bytes
    request_id: str | None


@dataclass
class Fates:
    """Every row of a part by what became of it."""

    answered: dict[str, Answered] = field(default_factory=dict)
    #: Rows that failed for good, with why (a RequestFailed, as an online failure would be).
    failed: dict[str, RequestFailed] = field(default_factory=dict)
    #: Rows to send again, with why (for the log and the last error if rounds run out).
    again: dict[str, RequestFailed] = field(default_factory=dict)


def read_fates(output: bytes, errors: bytes, expected: list[str]) -> Fates:
    """Sort the rows `expected` in a part by the lines of its output and error files."""
    fates = Fates()
    wanted = set(expected)
    for raw in (*output.splitlines(), *errors.splitlines()):
        if raw.strip():
            _sort(raw, wanted, fates)
    for custom_id in expected:
        if not _seen(custom_id, fates):
            fates.again[custom_id] = Retryable(
                "the batch ended without an answer for this row", type="batch_missing"
            )
    return fates


def _seen(custom_id: str, fates: Fates) -> bool:
    return custom_id in fates.answered or custom_id in fates.failed or custom_id in fates.again


def _sort(raw: bytes, wanted: set[str], fates: Fates) -> None:
    try:
        line = json.loads(raw)
        custom_id = line["custom_id"]
    except (ValueError, TypeError, KeyError):
        return  # no row to give it to: the rows it stood for have no line and go again
    if custom_id not in wanted or _seen(custom_id, fates):
        return  # another part's, or a second line for the same row: the first stands
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        _sort_response(custom_id, response, fates)
    elif isinstance(error, dict):
        code = str(error.get("code") or "batch_error")
        message = str(error.get("message") or code)
        if code in NOT_ANSWERED:
            fates.again[custom_id] = Retryable(message, type=code)
        else:
            fates.failed[custom_id] = BadRequest(message, type=code)
    else:
        fates.again[custom_id] = Retryable(
            "the batch's line for this row holds no answer", type="invalid_response"
        )


def _sort_response(custom_id: str, response: dict[str, Any], fates: Fates) -> None:
    status, body = response["status_code"], response.get("body")
    raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
    if status == 200:
        fates.answered[custom_id] = Answered(body, raw, response.get("request_id"))
        return
    failure = error_for_status(status, body, raw, {})
    (fates.again if failure.retryable else fates.failed)[custom_id] = failure


Row = dict[str, Any]


class Collector:
    """Turns a part's fates into journal lines, as online answers and failures are written.

    A part's rows file holds, for each request, what its record needs (`id`, `row_number`,
    `kept`; the whole `row` for a parse function; the cache `key`) and the `copies`: rows with
    the very same request, sent once (--dedupe) and given its answer.
    """

    def __init__(
        self, *, job: Job, kind: RequestKind, recorder: Recorder, answers: Answers | None, reuse: Reuse | None
    ):
        self.job, self.kind, self.recorder, self.answers, self.reuse = job, kind, recorder, answers, reuse
        self._with_response = job.output_format == BATCH_OUTPUT
        #: The rows journaled in this session (id, row number), kept when a deadline's online rows
        #: are to leave them (transports/deadline.py); None: not kept.
        self.finished_here: list[tuple[str, int]] | None = None
        #: Whether a deadline sent the run online: a batch's answer to a row done is then paid twice.
        self.gone_online: Callable[[], bool] = lambda: False

    def journal(self, part: Part, rows: list[Row], fates: Fates) -> list[tuple[Row, RequestFailed]]:
        """Add the answered and failed rows (and copies) not already finished; the rows to send again."""
        again = []
        for row in rows:
            members = self.unfinished(part, row)
            if not members:
                if self.gone_online() and row["id"] in fates.answered:
                    self.recorder.stats.paid_twice += 1  # answered while cancelling, and online
                continue
            row_id = row["id"]
            self.recorder.stats.requests += 1
            if row_id in fates.answered or row_id in fates.failed:
                self.recorder.stats.answers += 1
            if row_id in fates.answered:
                self._add_answer(part, row, members, fates.answered[row_id])
            elif row_id in fates.failed:
                self.fail(part, row, fates.failed[row_id])
            else:
                again.append((row, fates.again[row_id]))
        return again

    def unfinished(self, part: Part, row: Row) -> list[Row]:
        """The row of a request, and its copies, that are not yet finished."""
        return [member for member in (row, *row.get("copies", ())) if not self.finished(part, member)]

    def fail(self, part: Part, row: Row, failure: RequestFailed) -> None:
        """A request failed for good: the error of its row and of its copies not yet finished."""
        for member in self.unfinished(part, row):
            self.add_error(part, member, failure)

    def finished(self, part: Part, row: Row) -> bool:
        """The row is done, or its error line came from this very batch (collected before a crash)."""
        if self.recorder.progress.done.has(row["id"], row["row_number"]):
            return True
        failed = self.recorder.progress.failed.get(row["id"])
        return failed is not None and failed.get("batch_id") == part.batch_id

    def _add_answer(self, part: Part, row: Row, members: list[Row], answered: Answered) -> None:
        try:
            completion = self.kind.read_one(answered.body, answered.raw)
        except RequestFailed as failure:
            for member in members:
                self.add_error(part, member, failure)
            return
        completion.request_id = answered.request_id
        completion.cost = self.job.price_table.cost(
            completion.model or self.job.model, completion.usage, batch=True
        )
        if self.reuse is not None and row.get("key"):
            self.reuse.remember(bytes.fromhex(row["key"]), completion)
        for member in members:
            reused_from = row["id"] if member is not row else None
            self.add_answer(part, member, completion, reused_from=reused_from)

    def add_answer(
        self, part: Part | None, row: Row, completion: Completion, *, reused_from: str | None = None
    ) -> None:
        """A row's answer as a result (or, when it does not parse, its error, with what it cost).

        `part` is None for an answer from the cache, found before the row was planned; one the row
        cannot parse then raises (AnswerInvalid), and the row is sent."""
        cost = 0.0 if reused_from else completion.cost
        try:
            parsed = self._parse(completion, row)
        except RequestFailed as invalid:  # AnswerInvalid
            if part is None:
                raise  # a cached answer this row cannot use: the row is sent instead
            invalid.usage, invalid.cost = (None, 0.0) if reused_from else (completion.usage, cost)
            self.add_error(part, row, invalid)
            return
        record = self.kind.record(
            row["id"],
            row["row_number"],
            completion,
            0 if part is None or reused_from else part.round + 1,
            row["kept"],
            parsed,
            cost=cost,
            with_response=self._with_response,
            **({"reused_from": reused_from} if reused_from else {}),
        )
        record["batch_id"] = part.batch_id if part else None
        self._add(True, row, record)

    def _parse(self, completion: Completion, row: Row) -> dict[str, Any]:
        if self.answers is None:
            return {}
        return self.answers.parse(completion.content, completion.finish_reason, row.get("row"))

    def add_error(self, part: Part, row: Row, failure: RequestFailed) -> None:
        record = error_record(
            row["id"],
            row["row_number"],
            failure,
            part.round + 1,
            row["kept"],
            cost=getattr(failure, "cost", None),
        )
        record["batch_id"] = part.batch_id
        self._add(False, row, record)

    def take_finished(self) -> list[tuple[str, int]]:
        """The rows journaled since the last call (id, row number), taken from the list."""
        finished, self.finished_here = self.finished_here or [], []
        return finished

    def _add(self, ok: bool, row: Row, record: dict[str, Any]) -> None:
        self.recorder.add(ok, record)
        if self.finished_here is not None:
            self.finished_here.append((row["id"], row["row_number"]))

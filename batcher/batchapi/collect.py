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
from dataclasses import dataclass, field
from typing import Any

from ..client import error_for_status
from ..errors import BadRequest, RequestFailed, Retryable

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

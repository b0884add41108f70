"""A Batch input file read as OpenAI reads it while the batch is `validating`: checks and limits.

What is checked is each line's envelope (JSON, `custom_id` unique in the file, `method` POST,
`url` the batch's endpoint, `body` an object, one model for the whole file) and the file's size;
every line that breaks a rule is reported as an entry of the failed batch's `errors`, and no
request of a failed file is answered. A body the endpoint would refuse is not a file error: that
request is answered with its 400 in the error file when its turn comes, as OpenAI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from batcher.simulator.endpoints import CHAT, ENDPOINTS
from batcher.simulator.tokens import count_tokens

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
#: Errors reported for one file at most; the rest are left out, as a long list helps nobody.
_MAX_ERRORS = 100
_DUPLICATE = (
    "The custom_id for this request is a duplicate of another request. "
    "The custom_id parameter must be unique for each request in a batch."
)


@dataclass(frozen=True, slots=True)
class RequestLine:
    """One request of a valid file: its line number (from 1), custom_id and body."""

    line: int
    custom_id: str
    body: dict[str, Any]


@dataclass(slots=True)
class InputFile:
    """What validation found: the requests, or the errors that fail the batch."""

    requests: list[RequestLine] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None

    def refuse(self, code: str, message: str, param: str | None = None, line: int | None = None) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


def read_input(content: bytes, endpoint: str) -> InputFile:
    """Validate a Batch input file for `endpoint`; `errors` is empty if it may run."""
    parsed = InputFile()
    if len(content) > MAX_BYTES:
        parsed.refuse("file_too_large", f"The batch input file is larger than the {MAX_BYTES} maximum bytes.")
        return parsed
    seen: set[str] = set()
    for number, text in enumerate(content.split(b"\n"), start=1):
        if text.strip():
            _read_line(parsed, number, text, endpoint, seen)
    if not parsed.requests and not parsed.errors:
        parsed.refuse("empty_file", "The batch input file is empty.")
    elif len(parsed.requests) > MAX_REQUESTS:
        parsed.refuse(
            "too_many_tasks",
            f"The batch input file is larger than the {MAX_REQUESTS} maximum number of requests.",
        )
    return parsed


def _read_line(parsed: InputFile, number: int, text: bytes, endpoint: str, seen: set[str]) -> None:
    try:
        request = json.loads(text)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        parsed.refuse("invalid_json_line", "This line is not parseable as valid JSON.", line=number)
        return
    problem = _envelope_problem(request, endpoint)
    if problem is None and request["custom_id"] in seen:
        problem = ("duplicate_custom_id", _DUPLICATE, "custom_id")
    if problem is None:
        problem = _model_problem(parsed, request["body"])
    if problem is not None:
        parsed.refuse(*problem, line=number)
        return
    seen.add(request["custom_id"])
    parsed.requests.append(RequestLine(number, request["custom_id"], request["body"]))


def _envelope_problem(request: dict[str, Any], endpoint: str) -> tuple[str, str, str] | None:
    """(code, message, param) of the first thing wrong with a line's envelope, or None."""
    for name, kind in (("custom_id", str), ("method", str), ("url", str), ("body", dict)):
        if name not in request:
            return "missing_required_parameter", f"Missing required parameter: '{name}'.", name
        if not isinstance(request[name], kind) or (kind is str and not request[name]):
            return "invalid_type", f"Invalid type for '{name}'.", name
    if request["method"] != "POST":
        return "invalid_method", f"Invalid method '{request['method']}': only POST is supported.", "method"
    if request["url"] != endpoint:
        message = (
            f"The URL '{request['url']}' of this request does not match the batch's endpoint '{endpoint}'."
        )
        return "url_mismatch", message, "url"
    return None


def _model_problem(parsed: InputFile, body: dict[str, Any]) -> tuple[str, str, str] | None:
    model = body.get("model")
    if not isinstance(model, str):
        return None  # answered 400 when its turn comes, as the endpoint would answer it
    if parsed.model is None:
        parsed.model = model
    elif model != parsed.model:
        message = (
            f"The model '{model}' does not match the model of the batch's other requests ('{parsed.model}')."
        )
        return "model_mismatch", message, "body.model"
    return None


def enqueued_tokens(body: dict[str, Any], endpoint: str = CHAT) -> int:
    """The tokens a request holds of the enqueued-token limit: as charged online (chat: prompt
    estimate + max_tokens; embeddings: the inputs' tokens)."""
    served = ENDPOINTS[endpoint]
    try:
        return served.charge(body, served.prompt_tokens(body))
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        return count_tokens(json.dumps(body))  # a body the endpoint will refuse: a rough size

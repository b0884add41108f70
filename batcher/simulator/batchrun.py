"""A batch's life on the simulator: the `batch` object, and the task that moves it through its states.

`validating` (the input file read and checked, the enqueued-token limit applied) -> `in_progress`
(each request answered by the code that answers it online: its endpoint's `check`, then its
`answer`, counted in the ledger) -> `finalizing` -> `completed`; or `failed`, `expired`
(part-way, when the config says so) and `cancelling` (answering on for `batch_cancelling_seconds`)
-> `cancelled`. A request not answered when a batch expires or is cancelled gets a `batch_expired`
/ `batch_cancelled` line in the error file.
Success lines go to the output file, every other line to the error file, as at OpenAI; request
counts leave out requests never answered, so `completed + failed < total` says some were not run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batcher.simulator.batchinput import RequestLine, enqueued_tokens, read_input
from batcher.simulator.config import SimulatorConfig
from batcher.simulator.contract import error_body
from batcher.simulator.endpoints import ENDPOINTS, answer_line
from batcher.simulator.files import Files
from batcher.simulator.ledger import Ledger

logger = logging.getLogger(__name__)

#: The states in which a batch holds its tokens of the enqueued-token limit.
LIVE = ("validating", "in_progress", "finalizing")
#: The states a batch can be cancelled from.
CANCELLABLE = LIVE
_STAMPED = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
_COMPLETION_WINDOW_SECONDS = 24 * 3600
_NOT_RUN = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


@dataclass(slots=True)
class Batch:
    """One batch: what it was created with, where it is, and what it has answered."""

    id: str
    #: Its place in creation order (from 0): seeds its draws, and says whether it may expire.
    number: int
    endpoint: str
    input_file_id: str
    #: The input file's bytes when the batch was created: deleting the file later changes nothing.
    content: bytes
    metadata: dict[str, str] | None
    completion_window: str = "24h"
    status: str = "validating"
    created_at: int = field(default_factory=lambda: int(time.time()))
    #: When it entered each state after `validating` ("in_progress": ..., "failed": ...).
    stamps: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] | None = None
    model: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: Tokens it holds of the enqueued-token limit while live (0 until validated).
    enqueued_tokens: int = 0
    task: asyncio.Task | None = None
    #: When it was asked to cancel (time.monotonic()), or None.
    cancelling_since: float | None = None
    #: When it was made (time.monotonic()): the list shows it `batch_list_lag_seconds` later.
    made_at: float = field(default_factory=time.monotonic)

    def move(self, status: str) -> None:
        self.status = status
        self.stamps.setdefault(status, int(time.time()))
        if status == "cancelling":
            self.cancelling_since = time.monotonic()

    def fail(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        self.move("failed")

    def to_json(self) -> dict[str, Any]:
        """The `batch` object, as `openai.types.Batch` reads it."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + _COMPLETION_WINDOW_SECONDS,
            **{f"{status}_at": self.stamps.get(status) for status in _STAMPED},
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
        }


@dataclass(slots=True)
class _Lines:
    """The output and error lines written so far, and the requests left unanswered."""

    output: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    answered: int = 0


class BatchRunner:
    """Moves batches through their states on the server's event loop, one task each."""

    def __init__(
        self,
        config: SimulatorConfig,
        files: Files,
        ledger: Ledger,
        live_tokens: Callable[[Batch], int],
    ):
        self.config = config
        self._files = files
        self._ledger = ledger
        #: The enqueued tokens of the live batches other than the one given.
        self._live_tokens = live_tokens

    def start(self, batch: Batch) -> None:
        batch.task = asyncio.get_running_loop().create_task(self._run(batch), name=batch.id)

    async def _run(self, batch: Batch) -> None:
        try:
            await self._lifecycle(batch)
        except Exception:  # a bug here must not leave the batch `in_progress` for ever
            logger.exception("simulated batch %s broke", batch.id)
            batch.fail(
                [{"code": "server_error", "message": "The batch failed.", "param": None, "line": None}]
            )

    async def _lifecycle(self, batch: Batch) -> None:
        await asyncio.sleep(self.config.batch_validating_seconds)
        parsed = await asyncio.to_thread(read_input, batch.content, batch.endpoint)
        if batch.status == "cancelling":  # cancelled while validating: nothing was run
            await self._end_cancelled(batch, _Lines(), [])
            return
        if parsed.errors:
            batch.fail(parsed.errors)
            return
        tokens = sum(enqueued_tokens(request.body, batch.endpoint) for request in parsed.requests)
        refused = self._over_token_limit(batch, parsed.model, tokens)
        if refused is not None:
            batch.fail([refused])
            return
        batch.model, batch.total, batch.enqueued_tokens = parsed.model, len(parsed.requests), tokens
        batch.move("in_progress")
        lines = await self._answer(batch, parsed.requests)
        left = parsed.requests[lines.answered :]
        if batch.status == "cancelling":
            await self._end_cancelled(batch, lines, left)
        elif left:
            self._end(batch, lines, left, "batch_expired", "expired")
        else:
            batch.move("finalizing")
            await asyncio.sleep(self.config.batch_finalizing_seconds)
            self._end(batch, lines, [], "", "cancelled" if batch.status == "cancelling" else "completed")

    def _over_token_limit(self, batch: Batch, model: str | None, tokens: int) -> dict[str, Any] | None:
        limit = self.config.batch_token_limit
        if limit is None or self._live_tokens(batch) + tokens <= limit:
            return None
        message = (
            f"Enqueued token limit reached for {model or 'this model'} in organization org-simulator. "
            f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress batches have "
            "been completed."
        )
        return {"code": "token_limit_exceeded", "message": message, "param": None, "line": None}

    async def _answer(self, batch: Batch, requests: list[RequestLine]) -> _Lines:
        """Answer requests at the configured rate until done, expired, or asked to cancel."""
        lines = _Lines()
        endpoint = ENDPOINTS[batch.endpoint]
        failing = random.Random(f"{self.config.seed}:{batch.number}")
        stop_after = self._expires_after(batch)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for request in requests:
            if self._stopped_cancelling(batch) or lines.answered == stop_after:
                break
            if failing.random() < self.config.batch_line_error_rate:
                status, body = self.config.error_status, _server_error()
            else:
                status, body = answer_line(endpoint, request.body, self.config)
            self._record(batch, lines, request, status, body)
            await asyncio.sleep(
                max(0.0, started + lines.answered / self.config.batch_requests_per_second - loop.time())
            )
        return lines

    def _stopped_cancelling(self, batch: Batch) -> bool:
        """Asked to cancel, and done answering since (`batch_cancelling_seconds`)."""
        since = batch.cancelling_since
        return since is not None and time.monotonic() >= since + self.config.batch_cancelling_seconds

    def _expires_after(self, batch: Batch) -> int | None:
        """How many requests a batch answers before it expires (None: it does not expire)."""
        config = self.config
        if config.batch_expiring_batches is not None and batch.number >= config.batch_expiring_batches:
            return None
        limits = [config.batch_expire_after] if config.batch_expire_after is not None else []
        if config.batch_expire_fraction is not None:
            limits.append(int(batch.total * config.batch_expire_fraction))
        return min(limits) if limits else None

    def _record(
        self, batch: Batch, lines: _Lines, request: RequestLine, status: int, body: dict[str, Any]
    ) -> None:
        line = {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": request.custom_id,
            "response": {"status_code": status, "request_id": f"req_{uuid.uuid4().hex[:24]}", "body": body},
            "error": None,
        }
        lines.answered += 1
        self._ledger.batch_lines[str(status)] += 1
        if status != 200:
            batch.failed += 1
            lines.errors.append(line)
            return
        batch.completed += 1
        batch.input_tokens += body["usage"]["prompt_tokens"]
        batch.output_tokens += body["usage"].get("completion_tokens", 0)  # embeddings have none
        lines.output.append(line)
        ENDPOINTS[batch.endpoint].count(self._ledger, request.body)

    async def _end_cancelled(self, batch: Batch, lines: _Lines, left: list[RequestLine]) -> None:
        await asyncio.sleep(self.config.batch_finalizing_seconds)
        self._end(batch, lines, left, "batch_cancelled", "cancelled")

    def _end(self, batch: Batch, lines: _Lines, left: list[RequestLine], code: str, status: str) -> None:
        """Write the output and error files (each only if it has a line) and enter `status`."""
        for request in left:
            lines.errors.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                    "custom_id": request.custom_id,
                    "response": None,
                    "error": {"code": code, "message": _NOT_RUN[code]},
                }
            )
            self._ledger.batch_lines[code] += 1
        if lines.output:
            batch.output_file_id = self._store(batch, "output", lines.output)
        if lines.errors:
            batch.error_file_id = self._store(batch, "error", lines.errors)
        batch.move(status)

    def _store(self, batch: Batch, kind: str, lines: list[dict[str, Any]]) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return self._files.add(f"{batch.id}_{kind}.jsonl", "batch_output", content).id


def _server_error() -> dict[str, Any]:
    return error_body("server_error", "The server had an error while processing your request.")

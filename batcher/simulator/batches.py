"""The Batches endpoints: create, retrieve, list (newest first) and cancel, kept in memory.

Creation is checked as OpenAI checks it (input file, endpoint, completion window, metadata); only
a request that passes draws from the seeded generator whether it is refused with a 500, or made
and then answered 500 (the answer lost: the client must find the batch again, by listing batches
and matching its metadata). Each batch then lives on as a task of its own (batchrun.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

from aiohttp import web

from batcher.simulator.batchrun import CANCELLABLE, LIVE, Batch, BatchRunner
from batcher.simulator.config import SimulatorConfig
from batcher.simulator.contract import Invalid, error_response
from batcher.simulator.endpoints import ENDPOINTS
from batcher.simulator.faults import server_error
from batcher.simulator.files import Authorize, Files
from batcher.simulator.ledger import Ledger
from batcher.simulator.paging import page_response

_COMPLETION_WINDOWS = ("24h",)
_METADATA_PAIRS, _METADATA_KEY, _METADATA_VALUE = 16, 64, 512


class Batches:
    """The simulator's batches, and the handlers of `/v1/batches`."""

    def __init__(self, config: SimulatorConfig, files: Files, ledger: Ledger, authorize: Authorize):
        self.config = config
        self._files = files
        self._authorize = authorize
        #: Every batch created, oldest first.
        self._batches: dict[str, Batch] = {}
        self._create_faults = random.Random(f"batch-create:{config.seed}")
        self._runner = BatchRunner(config, files, ledger, self._live_tokens)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/batches", self.create),
            web.get("/v1/batches", self.list),
            web.get("/v1/batches/{batch_id}", self.retrieve),
            web.post("/v1/batches/{batch_id}/cancel", self.cancel),
        ]

    async def close(self) -> None:
        """Stop every batch's task (the simulator is stopping; its batches go with it)."""
        tasks = [b.task for b in self._batches.values() if b.task is not None and not b.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _live_tokens(self, batch: Batch) -> int:
        return sum(b.enqueued_tokens for b in self._batches.values() if b is not batch and b.status in LIVE)

    # -- handlers ---------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        try:
            params = json.loads(await request.read())
            self._check(params)
        except ValueError:
            return error_response(
                400, "invalid_request_error", "We could not parse the JSON body of your request."
            )
        except Invalid as e:
            return e.response()
        roll = self._create_faults.random()
        if roll < self.config.batch_create_error_rate:
            return server_error(500, {})
        batch = self._make(params)
        if self.config.batch_create_delay_ms:  # made, and the answer slow: a client may die waiting
            await asyncio.sleep(self.config.batch_create_delay_ms / 1000)
        if roll < self.config.batch_create_error_rate + self.config.batch_create_lost_rate:
            return server_error(500, {})  # made, but the client never hears of it
        return web.json_response(batch.to_json())

    async def retrieve(self, request: web.Request) -> web.Response:
        batch, refused = self._find(request)
        return refused or web.json_response(batch.to_json())

    @property
    def made(self) -> int:
        """Batches made so far, listed yet or not."""
        return len(self._batches)

    async def list(self, request: web.Request) -> web.Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        # A batch made in the last `batch_list_lag_seconds` is not listed yet, as a provider's list can
        # lag behind its creates (it is found by id all the same).
        listed_before = time.monotonic() - self.config.batch_list_lag_seconds
        listed = [b for b in reversed(self._batches.values()) if b.made_at <= listed_before]
        return page_response([b.to_json() for b in listed], request)

    async def cancel(self, request: web.Request) -> web.Response:
        batch, refused = self._find(request)
        if refused is not None:
            return refused
        if batch.status in CANCELLABLE:
            batch.move("cancelling")
        elif batch.status != "cancelling":
            return error_response(
                400,
                "invalid_request_error",
                f"Cannot cancel a batch with status '{batch.status}'.",
            )
        return web.json_response(batch.to_json())

    # -- the steps --------------------------------------------------------------------------

    def _find(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """The batch the path names, or the 401 or 404 to answer instead."""
        refused = self._authorize(request)
        if refused is not None:
            return None, refused
        batch_id = request.match_info["batch_id"]
        batch = self._batches.get(batch_id)
        if batch is None:
            return None, error_response(
                404, "invalid_request_error", f"No batch found with id '{batch_id}'.", "batch_id"
            )
        return batch, None

    def _check(self, params: Any) -> None:
        """Raise `Invalid` naming the first thing OpenAI would refuse in a create request."""
        if not isinstance(params, dict):
            raise Invalid("The request body must be a JSON object.", None)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(params.get(name), str):
                raise Invalid(f"Missing required parameter: '{name}'.", name)
        if params["endpoint"] not in ENDPOINTS:
            served = ", ".join(f"'{e}'" for e in ENDPOINTS)
            raise Invalid(
                f"Invalid value: '{params['endpoint']}'. The simulator's Batch API serves: {served}.",
                "endpoint",
            )
        if params["completion_window"] not in _COMPLETION_WINDOWS:
            raise Invalid(
                f"Invalid value: '{params['completion_window']}'. Supported values are: '24h'.",
                "completion_window",
            )
        _check_metadata(params.get("metadata"))
        stored = self._files.get(params["input_file_id"])
        if stored is None:
            raise Invalid(f"No such File object: {params['input_file_id']}", "input_file_id")
        if stored.purpose != "batch":
            raise Invalid("The input file must be uploaded with purpose 'batch'.", "input_file_id")

    def _make(self, params: dict[str, Any]) -> Batch:
        batch = Batch(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            number=len(self._batches),
            endpoint=params["endpoint"],
            input_file_id=params["input_file_id"],
            content=self._files.get(params["input_file_id"]).content,
            metadata=params.get("metadata"),
            completion_window=params["completion_window"],
        )
        self._batches[batch.id] = batch
        self._runner.start(batch)
        return batch


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > _METADATA_PAIRS:
        raise Invalid(
            f"Invalid 'metadata': expected an object of at most {_METADATA_PAIRS} pairs.", "metadata"
        )
    for key, value in metadata.items():
        if len(key) > _METADATA_KEY or not isinstance(value, str) or len(value) > _METADATA_VALUE:
            raise Invalid(
                f"Invalid 'metadata.{key}': keys are at most {_METADATA_KEY} characters and values "
                f"strings of at most {_METADATA_VALUE}.",
                f"metadata.{key}",
            )

"""The simulator's aiohttp server: its routes, and the one path Chat Completions and Embeddings requests take.

A request is checked in the order OpenAI checks it: key, JSON body, contract, rate limits;
only an admitted request draws a fault, so a refused one never shifts the seeded draws. What
differs between the two endpoints (contract, cost, answer, what is counted) is their `Endpoint`'s
(endpoints.py). The counts live in `self.ledger`; `requests`, `completions` and the rest are kept
as attributes of the server too, where tests and benchmarks read them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, deque
from typing import Any

from aiohttp import web

from batcher.simulator.batches import Batches
from batcher.simulator.config import SimulatorConfig
from batcher.simulator.contract import Invalid, error_response
from batcher.simulator.endpoints import CHAT, EMBEDDINGS, ENDPOINTS, Endpoint
from batcher.simulator.faults import (
    Faults,
    broken_body,
    huge_body,
    proxy_page,
    server_error,
    storm_refusal,
    wait_unless_gone,
)
from batcher.simulator.files import Files
from batcher.simulator.ledger import Ledger
from batcher.simulator.ratelimits import RateLimits
from batcher.simulator.streaming import stream


class Simulator:
    """The server: `await start()` for its base URL, `await stop()` when done."""

    def __init__(self, config: SimulatorConfig | None = None):
        self.config = config or SimulatorConfig()
        self.ledger = Ledger()
        self._limits = RateLimits(self.config)
        self._faults = Faults(self.config)
        self.files = Files(self._authorize, delay_ms=self.config.files_delay_ms)
        self.batches = Batches(self.config, self.files, self.ledger, self._authorize)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat_completions),
                web.post("/chat/completions", self.chat_completions),
                web.post("/v1/embeddings", self.embeddings),
                web.post("/embeddings", self.embeddings),
                web.get("/v1/models", self.models),
                web.get("/_simulator/ledger", self.show_ledger),
                web.get("/_simulator/requests", self.show_requests),
                *self.files.routes(),
                *self.batches.routes(),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0][1]  # the port chosen when 0 was asked
        self.base_url = f"http://{host}:{bound}/v1"
        return self.base_url

    async def stop(self) -> None:
        await self.batches.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the ledger's counts, where callers have always read them ---------------------------

    @property
    def requests(self) -> int:
        return self.ledger.requests

    @property
    def admitted_tokens(self) -> int:
        return self.ledger.admitted_tokens

    @property
    def statuses(self) -> Counter[str]:
        return self.ledger.statuses

    @property
    def completions(self) -> Counter[str]:
        return self.ledger.completions

    @property
    def received(self) -> deque[Any]:
        return self.ledger.received

    @property
    def arrivals(self) -> deque[float]:
        return self.ledger.arrivals

    # -- handlers ---------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        names = self.config.models or ("gpt-4o-mini",)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "batcher-simulator"}
                    for name in names
                ],
            }
        )

    async def show_ledger(self, request: web.Request) -> web.Response:
        return web.json_response(self.ledger.report())

    async def show_requests(self, request: web.Request) -> web.Response:
        """The last requests' headers and query (keys redacted), oldest first."""
        return web.json_response(self.ledger.requests_report())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, ENDPOINTS[CHAT])

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, ENDPOINTS[EMBEDDINGS])

    # -- a request's path -------------------------------------------------------------------

    async def _serve(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        """Answer a request to `endpoint`, counting it and its status in the ledger."""
        self.ledger.arrived(endpoint.path)
        try:
            response = await self._answer(request, endpoint)
        except web.HTTPException as e:
            self.ledger.statuses[str(e.status)] += 1
            raise
        if response is None:  # the connection was dropped or the client had gone
            self.ledger.statuses["dropped"] += 1
            return web.Response(status=499)
        self.ledger.statuses[str(response.status)] += 1
        return response

    async def _answer(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse | None:
        """Refuse the request as OpenAI would, or deliver it; None if nothing was delivered."""
        refused = self._authorize(request)
        if refused is not None:
            return refused
        if self.config.redirect_to:
            raise web.HTTPTemporaryRedirect(self.config.redirect_to)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error_response(
                400, "invalid_request_error", "We could not parse the JSON body of your request."
            )
        self.ledger.received.append(body)
        try:
            tokens = endpoint.check(body, self.config)
        except Invalid as e:
            return e.response()
        refused = self._admit(endpoint.charge(body, tokens))
        if refused is not None:
            return refused
        return await self._deliver(request, endpoint, body, tokens)

    def _authorize(self, request: web.Request) -> web.Response | None:
        """The key check of every endpoint (its headers and query kept in the ledger first)."""
        self.ledger.saw(request)
        return self._refuse_key(request.headers)

    def _refuse_key(self, headers: Any) -> web.Response | None:
        """The 401 for a missing or wrong key, or for any key once `fail_auth_after` has passed. The
        key comes as `Authorization: Bearer`, or in an `api-key` header as Azure OpenAI takes it."""
        config = self.config
        authorization = headers.get("Authorization", "")
        key = authorization[7:].strip() if authorization.startswith("Bearer ") else ""
        key = key or headers.get("api-key", "").strip()
        revoked = config.fail_auth_after is not None and self.ledger.requests > config.fail_auth_after
        if key and (config.api_key is None or key == config.api_key) and not revoked:
            return None
        given = f": {key}" if config.echo_key else ""
        return error_response(
            401,
            "authentication_error",
            f"Incorrect API key provided{given}. You can find your API key in your account settings.",
            code="invalid_api_key",
        )

    def _admit(self, cost: int) -> web.Response | None:
        """The 429 of a storm or of a full bucket; otherwise charge the request `cost` and let it in."""
        if self._faults.in_storm():
            return storm_refusal()
        refused = self._limits.admit(cost)
        if refused is None:
            self.ledger.admitted_tokens += cost
        return refused

    async def _deliver(
        self, request: web.Request, endpoint: Endpoint, body: dict[str, Any], tokens: int
    ) -> web.StreamResponse | None:
        """Answer an admitted request, meeting the fault it draws; None if nothing was delivered."""
        headers = self._limits.headers()
        fault = self._faults.draw()
        if fault == "error":
            return server_error(self.config.error_status, headers)
        if fault == "drop":
            request.transport.abort()  # the connection dies with no answer
            return None
        if fault == "html":
            return proxy_page()
        if not await wait_unless_gone(request, self._faults.latency(fault)):
            return None  # the client gave up (timeout): nothing delivered
        if fault == "garbage":
            return broken_body(headers)
        if fault == "huge":
            return await huge_body(request, self.config.huge_bytes)
        answer = endpoint.answer(body, tokens, self.config, fault)
        headers["x-request-id"] = f"req_{uuid.uuid4().hex[:24]}"
        if body.get("stream"):  # only chat's contract lets a request ask for a stream
            response = await stream(request, body, answer, headers)
        else:
            response = web.json_response(answer, headers=headers, dumps=endpoint.dumps)
        endpoint.count(self.ledger, body)
        return response


async def serve(config: SimulatorConfig, host: str, port: int, ready: Any = print) -> None:
    """Run the simulator until cancelled (the `batcher simulate` command)."""
    simulator = Simulator(config)
    base_url = await simulator.start(host, port)
    ready(base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()

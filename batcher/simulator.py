"""An OpenAI-compatible Chat Completions server, for trying and testing batcher offline.

It keeps the contract a client meets at OpenAI: Bearer-key auth (401
`authentication_error`), 400 `invalid_request_error` with `param`, RPM/TPM
buckets answering 429 `rate_limit_error` with `retry-after` and `x-ratelimit-*`
headers, streaming (SSE `chat.completion.chunk` ... `[DONE]`), tools and
response_format. Answers are deterministic (a function of the request). Faults
(500s, dropped connections, broken bodies, proxy HTML pages, slow and hanging
answers, huge bodies, 429 storms, a key revoked mid-run, redirects) are drawn
from a seeded generator. A ledger counts the completions delivered per request
(not those whose client had already given up), so tests can see whether any row
was paid for twice (`GET /_simulator/ledger`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
import uuid
from collections import Counter, deque
from typing import Any

from aiohttp import web

from .job import SimulatorConfig

_WORD = re.compile(r"\w+|[^\w\s]")
_ROLES = {"system", "user", "assistant", "tool", "developer"}
_POSITIVE = {
    "great",
    "love",
    "loved",
    "excellent",
    "amazing",
    "good",
    "perfect",
    "happy",
    "best",
    "wonderful",
    "fantastic",
    "recommend",
    "works",
    "fast",
    "comfortable",
    "delicious",
}
_NEGATIVE = {
    "bad",
    "terrible",
    "awful",
    "broke",
    "broken",
    "poor",
    "worst",
    "hate",
    "disappointed",
    "slow",
    "refund",
    "useless",
    "waste",
    "cold",
    "rude",
    "never",
    "not",
}
_FILLER = [
    "the",
    "results",
    "show",
    "a",
    "clear",
    "pattern",
    "across",
    "the",
    "sample",
    "and",
    "the",
    "main",
    "point",
    "is",
    "stated",
    "plainly",
    "with",
    "the",
    "supporting",
    "detail",
    "following",
    "in",
    "order",
    "of",
    "importance",
]


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: words and punctuation marks (about 4 characters each)."""
    return len(_WORD.findall(text))


def request_key(body: dict[str, Any]) -> str:
    """The ledger's key for a request: the text of its last message."""
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True)


class _Bucket:
    """A token bucket holding `burst_seconds` of a per-minute rate."""

    def __init__(self, per_minute: float, burst_seconds: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` fits (0 if it fits now)."""
        self._refill()
        amount = min(amount, self.capacity)
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)

    def reset_in(self) -> float:
        return (self.capacity - self.level) / self.rate


class _Invalid(Exception):
    def __init__(self, message: str, param: str | None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


def _error(
    status: int,
    type_: str,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '1s', '6m0s', '20ms'."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"


class Simulator:
    """The server: `await start()` for its base URL, `await stop()` when done."""

    def __init__(self, config: SimulatorConfig | None = None):
        self.config = config or SimulatorConfig()
        self._rng = random.Random(self.config.seed)
        self._requests = _Bucket(self.config.rpm, self.config.burst_seconds) if self.config.rpm else None
        self._tokens = _Bucket(self.config.tpm, self.config.burst_seconds) if self.config.tpm else None
        #: Completions served whole, per request key: more than one means paid twice.
        self.completions: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.requests = 0
        #: Tokens charged at admission (prompt + max_tokens), as OpenAI-like limits count them.
        self.admitted_tokens = 0
        #: Recent request bodies and arrival times (time.monotonic()), for tests and benchmarks.
        self.received: deque[Any] = deque(maxlen=1000)
        self.arrivals: deque[float] = deque(maxlen=100_000)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat_completions),
                web.post("/chat/completions", self.chat_completions),
                web.get("/v1/models", self.models),
                web.get("/_simulator/ledger", self.ledger),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()
        self.base_url: str | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # the port chosen when 0 was asked
        self.base_url = f"http://{host}:{bound}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ---------------------------------------------------------------------

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

    async def ledger(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "admitted_tokens": self.admitted_tokens,
                "first_arrival": self.arrivals[0] if self.arrivals else None,
                "last_arrival": self.arrivals[-1] if self.arrivals else None,
                "requests": self.requests,
                "statuses": dict(self.statuses),
                "completions": dict(self.completions),
            }
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.arrivals.append(time.monotonic())
        try:
            response = await self._answer(request)
        except web.HTTPException as e:
            self.statuses[str(e.status)] += 1
            raise
        if response is None:  # the connection was dropped or the client had gone
            self.statuses["dropped"] += 1
            return web.Response(status=499)
        self.statuses[str(response.status)] += 1
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse | None:
        config = self.config
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        revoked = config.fail_auth_after is not None and self.requests > config.fail_auth_after
        if not key or (config.api_key is not None and key != config.api_key) or revoked:
            given = f": {key}" if config.echo_key else ""
            return _error(
                401,
                "authentication_error",
                f"Incorrect API key provided{given}. You can find your API key in your account settings.",
                code="invalid_api_key",
            )
        if config.redirect_to:
            raise web.HTTPTemporaryRedirect(config.redirect_to)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "invalid_request_error", "We could not parse the JSON body of your request.")
        self.received.append(body)
        try:
            prompt_tokens = self._validate(body)
        except _Invalid as e:
            status = 404 if e.code == "model_not_found" else 400  # as OpenAI answers them
            return _error(status, "invalid_request_error", str(e), e.param, e.code)

        if self._in_storm():
            headers = {"retry-after": "1", "retry-after-ms": "1000"}
            return _error(429, "rate_limit_error", "Rate limit reached (a simulated storm).", headers=headers)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        cost = prompt_tokens + (max_tokens or 256)
        limited = self._admit(cost)
        if limited is not None:
            return limited
        headers = self._limit_headers()

        fault = self._fault()
        if fault == "error":
            if config.error_status == 503:
                headers["retry-after"] = "1"
            message = "The server had an error while processing your request."
            return _error(config.error_status, "internal_error", message, headers=headers)
        if fault == "drop":
            request.transport.abort()  # the connection dies with no answer
            return None
        if fault == "html":
            page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body>"
            return web.Response(status=502, text=page, content_type="text/html")

        delay = (
            config.latency_ms / 1000 * self._rng.uniform(1 - config.latency_jitter, 1 + config.latency_jitter)
        )
        if fault == "slow":
            delay = config.slow_ms / 1000
        elif fault == "hang":
            delay = 3600.0
        if not await _wait_unless_gone(request, delay):
            return None  # the client gave up (timeout): nothing delivered
        if fault == "garbage":
            return web.Response(
                status=200,
                text='{"id": "chatcmpl-broken", "choices": [{"mess',
                content_type="application/json",
                headers=headers,
            )
        if fault == "huge":
            return await self._huge(request)

        completion = self._complete(body, prompt_tokens, invalid=fault == "invalid")
        headers["x-request-id"] = f"req_{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            return await self._stream(request, body, completion, headers)
        self.completions[request_key(body)] += 1
        return web.json_response(completion, headers=headers)

    def _fault(self) -> str | None:
        """Which injected fault (if any) this request meets, drawn from the seeded generator."""
        roll = self._rng.random()
        config = self.config
        for name, rate in (
            ("error", config.error_rate),
            ("drop", config.drop_rate),
            ("garbage", config.garbage_rate),
            ("html", config.html_rate),
            ("slow", config.slow_rate),
            ("hang", config.hang_rate),
            ("huge", config.huge_rate),
            ("invalid", config.invalid_answer_rate),
        ):
            if roll < rate:
                return name
            roll -= rate
        return None

    def _in_storm(self) -> bool:
        every = self.config.storm_every
        return bool(every) and (time.monotonic() - self._started) % every < self.config.storm_seconds

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * (1 << 20)
        try:
            await response.write(b'{"padding": "')
            for _ in range(self.config.huge_bytes >> 20):
                await response.write(chunk)
            await response.write(b'"}')
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading, as it should
        return response

    # -- the contract ---------------------------------------------------------------------

    def _validate(self, body: Any) -> int:
        """Check a request as OpenAI would; return its prompt tokens."""
        if not isinstance(body, dict):
            raise _Invalid("The request body must be a JSON object.", None)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Invalid("you must provide a model parameter", "model")
        if self.config.models and model not in self.config.models:
            raise _Invalid(
                f"The model `{model}` does not exist or you do not have access to it.",
                "model",
                "model_not_found",
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Invalid("'messages' must be a non-empty array.", "messages")
        tokens = 3
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise _Invalid(f"Invalid value for 'messages[{i}].role'.", f"messages.[{i}].role")
            content = message.get("content")
            if content is None and not (message["role"] == "assistant" and message.get("tool_calls")):
                raise _Invalid(
                    f"Invalid value for 'messages[{i}].content': expected a string or array.",
                    f"messages.[{i}].content",
                )
            if isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
                        raise _Invalid(
                            f"Invalid content part in 'messages[{i}].content'.", f"messages.[{i}].content"
                        )
                    tokens += count_tokens(part.get("text", "")) if part["type"] == "text" else 85
            elif content is not None and not isinstance(content, str):
                raise _Invalid(f"Invalid type for 'messages[{i}].content'.", f"messages.[{i}].content")
            elif isinstance(content, str):
                tokens += count_tokens(content)
            if message["role"] == "tool" and not message.get("tool_call_id"):
                raise _Invalid(
                    f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                    f"messages.[{i}].tool_call_id",
                )
            tokens += 4
        self._check_number(body, "temperature", 0, 2)
        self._check_number(body, "top_p", 0, 1)
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise _Invalid(
                    f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                    f"but got {value} instead.",
                    name,
                )
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _Invalid("Invalid type for 'stream': expected a boolean.", "stream")
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not all(
                isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
                for t in tools
            ):
                raise _Invalid("Invalid 'tools': each tool needs a function with a name.", "tools")
            tokens += count_tokens(json.dumps(tools))
        self._check_response_format(body, messages)
        marker = self.config.reject_marker
        if marker and marker in json.dumps(messages):
            raise _Invalid("This request is rejected by the simulator's reject_marker.", "messages")
        return tokens

    @staticmethod
    def _check_number(body: dict, name: str, low: float, high: float) -> None:
        value = body.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise _Invalid(
                f"Invalid '{name}': expected a number between {low} and {high}, got {value!r}.", name
            )

    @staticmethod
    def _check_response_format(body: dict, messages: list) -> None:
        fmt = body.get("response_format")
        if fmt is None:
            return
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise _Invalid("Invalid 'response_format.type'.", "response_format.type")
        if kind == "json_object" and "json" not in json.dumps(messages).lower():
            raise _Invalid(
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                "messages",
            )
        if kind == "json_schema":
            schema = fmt.get("json_schema")
            if (
                not isinstance(schema, dict)
                or not isinstance(schema.get("schema", {}), dict)
                or not schema.get("name")
            ):
                raise _Invalid(
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    "response_format.json_schema",
                )

    def _admit(self, tokens: int) -> web.Response | None:
        """Take from the buckets, or answer 429 saying how long to wait."""
        waits = []
        if self._requests is not None:
            waits.append(("requests", self._requests.wait_for(1)))
        if self._tokens is not None:
            waits.append(("tokens", self._tokens.wait_for(tokens)))
        blocked = [(kind, wait) for kind, wait in waits if wait > 0]
        if blocked:
            kind, wait = max(blocked, key=lambda kw: kw[1])
            headers = self._limit_headers()
            if self.config.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{self.config.retry_after_ms:g}"
            else:
                headers["retry-after-ms"] = str(math.ceil(wait * 1000))
                headers["retry-after"] = str(max(1, math.ceil(wait)))
            limit = self.config.rpm if kind == "requests" else self.config.tpm
            unit = "requests" if kind == "requests" else "tokens"
            return _error(
                429,
                "rate_limit_error",
                f"Rate limit reached for {unit} per min (RPM/TPM): Limit {limit:g}. "
                f"Please try again in {_duration(wait)}.",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None:
            self._tokens.take(tokens)
        self.admitted_tokens += tokens
        return None

    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        announce = self.config.rate_limit_headers
        if announce == "none":
            return headers
        for kind, bucket, limit in (
            ("requests", self._requests, self.config.rpm),
            ("tokens", self._tokens, self.config.tpm),
        ):
            if bucket is None:
                continue
            # Remaining is what may be sent right now: the bucket holds only a burst of the limit.
            if announce == "all":
                headers[f"x-ratelimit-limit-{kind}"] = f"{limit:g}"
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = _duration(bucket.reset_in())
        return headers

    # -- answers ------------------------------------------------------------------------------

    def _complete(self, body: dict, prompt_tokens: int, *, invalid: bool = False) -> dict[str, Any]:
        digest = hashlib.sha256(
            json.dumps([body.get("model"), body.get("messages")], sort_keys=True, default=str).encode()
        ).digest()
        rng = random.Random(digest)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish_reason = "stop"
        call = self._tool_call(body, rng)
        if call is not None:
            message["tool_calls"] = [call]
            finish_reason = "tool_calls"
            completion_tokens = count_tokens(json.dumps(call))
        else:
            text = "Sure! I think the answer is probably fine." if invalid else self._text(body, rng)
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            words = _WORD.findall(text)
            if limit is not None and len(words) > limit:
                text = _join(words[:limit])
                finish_reason = "length"
            message["content"] = text
            completion_tokens = count_tokens(text)
        return {
            "id": f"chatcmpl-{digest.hex()[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_simulator",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    @staticmethod
    def _tool_call(body: dict, rng: random.Random) -> dict[str, Any] | None:
        tools = body.get("tools")
        choice = body.get("tool_choice", "auto")
        if not tools or choice == "none" or body["messages"][-1].get("role") == "tool":
            return None
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            tool = next((t for t in tools if t["function"]["name"] == name), tools[0])
        elif choice == "required":
            tool = tools[0]
        else:  # auto: call a tool the last message names
            text = json.dumps(body["messages"][-1].get("content"))
            tool = next((t for t in tools if t["function"]["name"] in text), None)
            if tool is None:
                return None
        params = tool["function"].get("parameters") or {}
        arguments = _instance(params, rng) if params.get("type") == "object" else {}
        return {
            "id": f"call_{rng.getrandbits(64):016x}",
            "type": "function",
            "function": {"name": tool["function"]["name"], "arguments": json.dumps(arguments)},
        }

    @staticmethod
    def _text(body: dict, rng: random.Random) -> str:
        fmt = body.get("response_format") or {}
        last = body["messages"][-1].get("content")
        prompt = last if isinstance(last, str) else json.dumps(last)
        lowered = prompt.lower()
        sentiment = _sentiment(lowered) if "sentiment" in lowered else None
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
            return json.dumps(_instance(schema, rng, sentiment))
        if fmt.get("type") == "json_object":
            return json.dumps({"answer": _sentence(prompt, rng)})
        if sentiment is not None:
            return sentiment
        if "summar" in lowered:
            subject = prompt.split(":", 1)[-1].strip()
            first = re.split(r"(?<=[.!?])\s", subject, maxsplit=1)[0]
            return first if first else _sentence(prompt, rng)
        return _sentence(prompt, rng)

    async def _stream(
        self, request: web.Request, body: dict, completion: dict, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        choice = completion["choices"][0]
        base = {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "system_fingerprint": "fp_simulator",
        }

        async def send(delta: dict, finish_reason: str | None = None, **extra: Any) -> None:
            chunk = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
                **extra,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        message = choice["message"]
        if message.get("tool_calls"):
            for index, call in enumerate(message["tool_calls"]):
                arguments = call["function"]["arguments"]
                await send(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                for start in range(0, len(arguments), 16):
                    await send(
                        {
                            "tool_calls": [
                                {"index": index, "function": {"arguments": arguments[start : start + 16]}}
                            ]
                        }
                    )
        else:
            for piece in re.findall(r"\S+\s*", message["content"] or ""):
                await send({"content": piece})
        await send({}, choice["finish_reason"])
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk = {**base, "choices": [], "usage": completion["usage"]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.completions[request_key(body)] += 1
        return response


async def _wait_unless_gone(request: web.Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the client has closed the connection."""
    deadline = time.monotonic() + seconds
    while True:
        if request.transport is None or request.transport.is_closing():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, 0.05))


def _join(words: list[str]) -> str:
    text = ""
    for word in words:
        text += word if not text or not word[0].isalnum() else " " + word
    return text


def _sentence(prompt: str, rng: random.Random) -> str:
    words = [rng.choice(_FILLER) for _ in range(rng.randint(8, 24))]
    return "Simulated answer: " + " ".join(words) + "."


def _sentiment(lowered_prompt: str) -> str:
    words = set(re.findall(r"[a-z']+", lowered_prompt.split(":", 1)[-1]))
    score = len(words & _POSITIVE) - len(words & _NEGATIVE)
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def _instance(schema: dict, rng: random.Random, sentiment: str | None = None) -> Any:
    """A value that satisfies a (simple) JSON Schema; an enum naming `sentiment` gets it."""
    if "enum" in schema:
        named = [v for v in schema["enum"] if isinstance(v, str) and v.casefold() == sentiment]
        return named[0] if named else rng.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _instance(sub, rng, sentiment) for name, sub in props.items()}
    if kind == "array":
        return [_instance(schema.get("items") or {"type": "string"}, rng, sentiment)]
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 10)))
    if kind == "number":
        return round(rng.uniform(schema.get("minimum", 0), schema.get("maximum", 1)), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return rng.choice(_FILLER)


async def serve(config: SimulatorConfig, host: str, port: int, ready: Any = print) -> None:
    """Run the simulator until cancelled (the `batcher simulate` command)."""
    simulator = Simulator(config)
    base_url = await simulator.start(host, port)
    ready(base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()

"""The Embeddings request kind: a row's text to a vector, many rows packed into one request.

`POST /embeddings` takes an array of inputs, so rows are packed (`Packer`): as
many as fit under the provider's limits (2,048 inputs and 300,000 tokens a
request, 8,192 tokens an input, by default; settable for servers such as TEI).
A row estimated over the per-input limit is a row error before anything is
sent. The answer's vectors are split back to the rows in order (`unpack`),
each with its share of the usage and the cost; vectors travel as base64
(little-endian float32, a quarter of the bytes of JSON floats) and are kept as
bytes, journaled beside the results (store/vectors.py), never as JSON numbers.
A packed request the server refuses (400) is split in halves by the pool until
the rows at fault stand alone, so one bad row never fails its neighbours.
See docs/embeddings.md.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from batcher.errors import BadRequest, ConfigError, RequestFailed, Retryable
from batcher.inputs.sources import InputRow
from batcher.kinds.completion import Completion, error_for_status, snippet
from batcher.kinds.prompts import RequestBuilder
from batcher.kinds.records import result_usage
from batcher.kinds.reuse import ON_THE_WIRE, InputReuse
from batcher.kinds.tokens import TokenEstimator

#: The provider's limits on one request (OpenAI's; other servers set their own).
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000
MAX_INPUT_TOKENS = 8192
#: A row is refused before sending only when its estimate is this far over the per-input limit;
#: nearer ones go, and the server's 400 (found by splitting the request) is the judge.
REFUSE_OVER = 1.1


@dataclass(frozen=True, slots=True)
class PackLimits:
    """How many rows, and tokens, one request may carry."""

    inputs: int = MAX_INPUTS
    request_tokens: int = MAX_REQUEST_TOKENS
    input_tokens: int = MAX_INPUT_TOKENS


class EmbeddingBuilder(RequestBuilder):
    """Bodies of `/embeddings` requests: `input` from the template, or from request-shaped rows."""

    __slots__ = ("shapes",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: The (model, dimensions) the rows built so far ask for: more than one makes vectors of
        #: several sizes, which one Parquet column cannot hold (see `check_one_shape`).
        self.shapes: set[tuple[Any, Any]] = set()

    def _from_template(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"input": self._fill(row)}

    def _check(self, body: dict[str, Any]) -> None:
        if not body.get("model"):
            raise ValueError("has no model: set --model (or `model` in the job file) or a model in each row")
        text = body.get("input")
        if not isinstance(text, str):
            raise ValueError("needs 'input', the one text to embed (a string)")
        if not text:
            raise ValueError("has an empty 'input': there is nothing to embed")
        self.shapes.add((body.get("model"), body.get("dimensions")))


def check_one_shape(builder: EmbeddingBuilder, output_format: str) -> None:
    """Refuse, before anything is sent, rows that would make vectors of several sizes in Parquet."""
    if output_format == "parquet" and len(builder.shapes) > 1:
        shapes = ", ".join(f"{m} at {d or 'its own'} dimensions" for m, d in sorted(builder.shapes, key=str))
        raise ConfigError(
            f"the rows ask for vectors of more than one kind ({shapes}); one Parquet column holds vectors "
            "of one size: give every row the same model and dimensions, or use --output-format jsonl"
        )


class InputEstimator(TokenEstimator):
    """Tokens of an embeddings request: its inputs' characters, at a ratio the usage corrects."""

    __slots__ = ()

    def prompt_chars(self, body: dict[str, Any]) -> int:
        text = body.get("input")
        if isinstance(text, str):
            return len(text)
        return sum(len(t) for t in text if isinstance(t, str)) if isinstance(text, list) else 0

    def parts(self, body: dict[str, Any], prompt_chars: int) -> tuple[int, int]:
        return int(prompt_chars / self.chars_per_token) + 1, 0

    def tokens(self, chars: int) -> int:
        return int(chars / self.chars_per_token) + 1


@dataclass(slots=True)
class Member:
    """A row packed into a request: what its result needs, and its share of the request."""

    row_id: str
    row_number: int
    text: str
    kept: dict[str, Any]
    #: Its request's reuse key (reuse.InputReuse), and the rows with the same request riding on it.
    key: bytes | None = None
    copies: list[Member] = field(default_factory=list)


@dataclass(slots=True)
class Taken:
    """What the packer took from the feed: a request (None if no row needs one) and its rows,
    rows refused before sending, rows answered by reuse, and whether the feed has ended."""

    body: dict[str, Any] | None
    members: list[Member]
    refused: list[tuple[Member, BadRequest]]
    reused: list[tuple[Member, Completion, str]]
    ended: bool


class Packer:
    """Takes rows from the one feed into packs under the request limits (one packer, many workers)."""

    def __init__(
        self,
        builder: EmbeddingBuilder,
        estimator: InputEstimator,
        limits: PackLimits,
        reuse: InputReuse | None = None,
    ):
        self.builder, self.estimator, self.limits, self.reuse = builder, estimator, limits, reuse
        self.keep = builder.keep_columns
        #: The row that did not fit the last pack (it starts the next one), and its body.
        self._carry: tuple[Member, dict[str, Any]] | None = None

    def take(self, rows: Iterator[InputRow | None], end: object) -> Taken:
        """The next pack. Stops early at a None from the feed (a run of done rows: the caller lets
        the loop breathe)."""
        limits, estimator = self.limits, self.estimator
        taken = Taken(None, [], [], [], False)
        tokens = 0
        while len(taken.members) < limits.inputs:
            if self._carry is not None:
                (member, body), self._carry = self._carry, None
            else:
                row = next(rows, end)
                if row is end or row is None:
                    taken.ended = row is end
                    break
                body = self.builder.build(row.row)
                member = Member(row.row_id, row.number, body["input"], {k: row.row.get(k) for k in self.keep})
                need = estimator.tokens(len(member.text))
                if need > limits.input_tokens * REFUSE_OVER:
                    taken.refused.append((member, too_long(need, limits.input_tokens)))
                    continue
                if self._answered(member, body, taken):
                    continue
            need = estimator.tokens(len(member.text))
            first = taken.body
            if taken.members and (tokens + need > limits.request_tokens or not _same_request(first, body)):
                self._carry = (member, body)
                break
            if first is None:
                taken.body = body
            taken.members.append(member)
            tokens += need
        if taken.body is not None:
            taken.body = {**taken.body, "input": [m.text for m in taken.members]}
        return taken

    def _answered(self, member: Member, body: dict[str, Any], taken: Taken) -> bool:
        """The row needs no place in a request: reused now, or riding on an identical one."""
        if self.reuse is None:
            return False
        found = self.reuse.screen(body, member)
        if found is None:
            return False
        if found is not ON_THE_WIRE:
            taken.reused.append((member, *found))
        return True


class PackCount:
    """How many requests rows make once packed (the dry run's count), by the Packer's rule."""

    def __init__(self, limits: PackLimits):
        self.limits = limits
        self.requests = 0
        self._inputs = self._tokens = 0
        self._first: dict[str, Any] | None = None

    def add(self, body: dict[str, Any], tokens: int) -> None:
        if tokens > self.limits.input_tokens * REFUSE_OVER:
            return  # refused before sending
        full = self._inputs >= self.limits.inputs or self._tokens + tokens > self.limits.request_tokens
        if self._first is None or full or not _same_request(self._first, body):
            self.requests += 1
            self._first, self._inputs, self._tokens = body, 0, 0
        self._inputs += 1
        self._tokens += tokens


def _same_request(first: dict[str, Any] | None, body: dict[str, Any]) -> bool:
    """Rows go in one request only when all but their input is the same (model, dimensions, ...)."""
    if first is None:
        return True
    return first.keys() == body.keys() and all(k == "input" or body[k] == v for k, v in first.items())


def halves(body: dict[str, Any], members: list[Member]) -> list[tuple[dict[str, Any], list[Member]]]:
    """A packed request's two halves, each a request of its own."""
    half = len(members) // 2
    return [({**body, "input": [m.text for m in part]}, part) for part in (members[:half], members[half:])]


def splits_on(failure: RequestFailed) -> bool:
    """A packed request's refusal that may be for one of its inputs (not for the whole request):
    worth sending its halves apart to find the row at fault."""
    return isinstance(failure, BadRequest) and (
        failure.param is None or str(failure.param).startswith("input")
    )


def too_long(tokens: int, limit: int) -> BadRequest:
    return BadRequest(
        f"the input is about {tokens:,} tokens (estimated from its characters), over the {limit:,}-token "
        f"limit for one input by about {tokens - limit:,}: shorten it or split it into rows",
        type="input_too_long",
        param="input",
    )


def read_answer(payload: Any, text: str | bytes) -> Completion:
    """The Completion a 200 `/embeddings` body holds: its usage and model; the vectors stay in `body`."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        raise error_for_status(500, payload, text, {})
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise Retryable(
            f"HTTP 200 with a body that is not a list of embeddings: {snippet(text)!r}",
            type="invalid_response",
            status=200,
        )
    return Completion(None, None, None, payload.get("usage"), payload.get("model"), None, 0.0, payload)


async def read_stream(resp: Any) -> Completion:
    raise BadRequest("embeddings are never streamed: leave out stream", type="invalid_request_error")


def unpack(completion: Completion, members: list[Member]) -> list[Completion]:
    """One Completion a member, in order: its vector, and its share of the usage and the cost.

    Shares follow the members' characters, rounded so that they add up to the request's own.
    Retryable when the answer does not hold exactly one vector a member.
    """
    vectors = _vectors(completion.body, len(members))
    total = (completion.usage or {}).get("prompt_tokens") or 0
    if not isinstance(total, int | float) or isinstance(total, bool) or total < 0:
        raise Retryable(f"the answer's usage.prompt_tokens is {total!r}", type="invalid_response", status=200)
    total = int(total)
    weights = [len(m.text) for m in members]
    if not any(weights):
        weights = [1] * len(members)  # (texts unknown: even shares)
    shares = _apportion(total, weights)
    whole = sum(weights)
    cost = completion.cost
    return [
        replace(
            completion,
            body={},
            usage={"prompt_tokens": share, "total_tokens": share},
            cost=None if cost is None else cost * weight / whole,
            vector=vector,
        )
        for vector, share, weight in zip(vectors, shares, weights, strict=True)
    ]


def read_one(payload: Any, text: str | bytes) -> Completion:
    """The Completion of a request of one input (a Batch API line): its vector and all its usage."""
    return unpack(read_answer(payload, text), [Member("", 0, "", {})])[0]


def _vectors(body: dict[str, Any], count: int) -> list[bytes]:
    data = body.get("data") or []
    if len(data) != count:
        raise Retryable(
            f"the answer holds {len(data)} embeddings for {count} inputs", type="invalid_response", status=200
        )
    vectors: list[bytes | None] = [None] * count
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise Retryable(
                "the answer's embeddings are not indexed 0..n-1", type="invalid_response", status=200
            )
        vectors[index] = _vector(item.get("embedding"))
    return vectors  # type: ignore[return-value]


def _vector(value: Any) -> bytes:
    """An embedding, base64 or a JSON list, as little-endian float32 bytes."""
    if isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except ValueError:
            data = b"\0"
        if len(data) % 4 == 0 and data:
            return data
    elif isinstance(value, list) and value:
        try:
            floats = array("f", value)
        except TypeError:
            floats = None
        if floats is not None:
            if sys.byteorder == "big":
                floats.byteswap()
            return floats.tobytes()
    raise Retryable("an embedding in the answer is not a vector", type="invalid_response", status=200)


def _apportion(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (not all 0), in whole numbers that add up to it."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def embedding_record(
    row_id: str,
    row_number: int,
    completion: Completion,
    attempts: int,
    kept: dict[str, Any],
    answer: dict[str, Any] | None = None,
    *,
    cost: float | None,
    with_response: bool = False,
    reused_from: str | None = None,
) -> dict[str, Any]:
    """A results line of an embedding: the journal keeps `embedding` (bytes) in vectors.f32."""
    record = {
        "id": row_id,
        "row_number": row_number,
        "usage": None if reused_from else result_usage(completion.usage),
        "cost_usd": cost,
        "embedding": completion.vector,
        "model": completion.model,
        "latency_ms": completion.latency_ms,
        "attempts": attempts,
        **kept,
    }
    if reused_from:
        record["reused_from"] = reused_from
    return record


class EmbeddingsKind:
    """Embeddings (see kinds.RequestKind), with `packer` and `unpack` for packed requests."""

    path = "/embeddings"
    #: The server charges a request its inputs' tokens alone (no completion): exactly known.
    charges_input_only = True
    read_answer = staticmethod(read_answer)
    read_stream = staticmethod(read_stream)
    record = staticmethod(embedding_record)
    unpack = staticmethod(unpack)
    read_one = staticmethod(read_one)
    splits_on = staticmethod(splits_on)
    halves = staticmethod(halves)

    def __init__(self, builder: EmbeddingBuilder, limits: PackLimits = PackLimits()):
        self.builder = builder
        self.estimator = InputEstimator()
        self.limits = limits

    def packer(self, reuse: InputReuse | None = None) -> Packer:
        return Packer(self.builder, self.estimator, self.limits, reuse)

"""What the simulator counts, and reports at `GET /_simulator/ledger`.

A completion is counted once it has been delivered whole, not when it is computed: an answer
whose client had already given up was never paid for. More than one completion for the same
request key means a row was paid for twice. Embeddings are counted per input, not per request
(`embedded`), since a client packs many rows into one request.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


def request_key(body: dict[str, Any]) -> str:
    """The ledger's key for a request: the text of its last message."""
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True)


def embedding_key(item: str | list[int]) -> str:
    """The ledger's key for one embeddings input: its text, or its token ids as JSON ("[1, 2]")."""
    return item if isinstance(item, str) else json.dumps(item)


@dataclass(slots=True)
class Ledger:
    """The counts of one simulator since it started."""

    #: Chat Completions and Embeddings requests that arrived, whatever became of them.
    requests: int = 0
    #: Of those, the requests to each endpoint ("/v1/chat/completions", "/v1/embeddings").
    endpoint_requests: Counter[str] = field(default_factory=Counter)
    #: Tokens charged at admission (prompt + max_tokens), as OpenAI-like limits count them.
    admitted_tokens: int = 0
    #: Answers by status ("200", "429", ...; "dropped" when no answer was delivered).
    statuses: Counter[str] = field(default_factory=Counter)
    #: Completions served whole, per request key: more than one means paid twice.
    completions: Counter[str] = field(default_factory=Counter)
    #: Embeddings served whole, per input (`embedding_key`): more than one means paid twice.
    embedded: Counter[str] = field(default_factory=Counter)
    #: Batch API request lines answered, by status ("200", "400", "500") or error code
    #: ("batch_expired", "batch_cancelled"); their answers count in `completions` or `embedded` too.
    batch_lines: Counter[str] = field(default_factory=Counter)
    #: Recent request bodies and arrival times (time.monotonic()), for tests and benchmarks.
    received: deque[Any] = field(default_factory=lambda: deque(maxlen=1000))
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    @property
    def embedding_requests(self) -> int:
        """Requests to the Embeddings endpoint that arrived (Batch API lines not included)."""
        return self.endpoint_requests["/v1/embeddings"]

    def arrived(self, path: str = "/v1/chat/completions") -> None:
        self.requests += 1
        self.endpoint_requests[path] += 1
        self.arrivals.append(time.monotonic())

    def delivered(self, body: dict[str, Any]) -> None:
        self.completions[request_key(body)] += 1

    def delivered_embeddings(self, items: list[str | list[int]]) -> None:
        self.embedded.update(map(embedding_key, items))

    def report(self) -> dict[str, Any]:
        """The ledger as JSON for `GET /_simulator/ledger`."""
        return {
            "admitted_tokens": self.admitted_tokens,
            "first_arrival": self.arrivals[0] if self.arrivals else None,
            "last_arrival": self.arrivals[-1] if self.arrivals else None,
            "requests": self.requests,
            "endpoint_requests": dict(self.endpoint_requests),
            "embedding_requests": self.embedding_requests,
            "statuses": dict(self.statuses),
            "completions": dict(self.completions),
            "embedded": dict(self.embedded),
            "batch_lines": dict(self.batch_lines),
        }

"""What the simulator counts, and reports at `GET /_simulator/ledger` (and the last requests' headers
and query at `GET /_simulator/requests`, the keys in them shown as `REDACTED`).

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

#: Headers that carry a key, shown as REDACTED by `GET /_simulator/requests`.
KEY_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})
REDACTED = "[redacted]"


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
    #: The last requests' (method, path, headers, URL), of every endpoint: what a client sent besides
    #: the body (its headers and query), for tests of gateways' headers.
    seen: deque[tuple[str, str, Any, Any]] = field(default_factory=lambda: deque(maxlen=200))

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

    def saw(self, request: Any) -> None:
        """Keep a request's headers and URL (an aiohttp request's own, read only when reported)."""
        self.seen.append((request.method, request.path, request.headers, request.rel_url))

    def requests_report(self) -> list[dict[str, Any]]:
        """The last requests, oldest first, for `GET /_simulator/requests`: each one's method, path,
        headers (a name sent twice: its values joined by ", ") and query; keys REDACTED."""
        report = []
        for method, path, headers, url in self.seen:
            shown: dict[str, str] = {}
            for name, value in headers.items():
                value = REDACTED if name.lower() in KEY_HEADERS else value
                shown[name] = f"{shown[name]}, {value}" if name in shown else value
            report.append({"method": method, "path": path, "headers": shown, "query": dict(url.query)})
        return report

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

"""What the simulator counts, and reports at `GET /_simulator/ledger`.

A completion is counted once it has been delivered whole, not when it is computed: an answer
whose client had already given up was never paid for. More than one completion for the same
request key means a row was paid for twice.
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


@dataclass(slots=True)
class Ledger:
    """The counts of one simulator since it started."""

    #: Chat Completions requests that arrived, whatever became of them.
    requests: int = 0
    #: Tokens charged at admission (prompt + max_tokens), as OpenAI-like limits count them.
    admitted_tokens: int = 0
    #: Answers by status ("200", "429", ...; "dropped" when no answer was delivered).
    statuses: Counter[str] = field(default_factory=Counter)
    #: Completions served whole, per request key: more than one means paid twice.
    completions: Counter[str] = field(default_factory=Counter)
    #: Batch API request lines answered, by status ("200", "400", "500") or error code
    #: ("batch_expired", "batch_cancelled"); their completions count in `completions` too.
    batch_lines: Counter[str] = field(default_factory=Counter)
    #: Recent request bodies and arrival times (time.monotonic()), for tests and benchmarks.
    received: deque[Any] = field(default_factory=lambda: deque(maxlen=1000))
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def arrived(self) -> None:
        self.requests += 1
        self.arrivals.append(time.monotonic())

    def delivered(self, body: dict[str, Any]) -> None:
        self.completions[request_key(body)] += 1

    def report(self) -> dict[str, Any]:
        """The ledger as JSON for `GET /_simulator/ledger`."""
        return {
            "admitted_tokens": self.admitted_tokens,
            "first_arrival": self.arrivals[0] if self.arrivals else None,
            "last_arrival": self.arrivals[-1] if self.arrivals else None,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "completions": dict(self.completions),
            "batch_lines": dict(self.batch_lines),
        }

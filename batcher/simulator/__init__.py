"""An OpenAI-compatible Chat Completions and Embeddings server, for trying and testing batcher offline.

It keeps the contract a client meets at OpenAI: Bearer-key auth (401
`authentication_error`), 400 `invalid_request_error` with `param`, RPM/TPM
buckets answering 429 `rate_limit_error` with `retry-after` and `x-ratelimit-*`
headers, streaming (SSE `chat.completion.chunk` ... `[DONE]`), tools and
response_format. Answers are deterministic (a function of the request). Faults
(500s, dropped connections, broken bodies, proxy HTML pages, slow and hanging
answers, huge bodies, 429 storms, a key revoked mid-run, redirects) are drawn
from a seeded generator. A ledger counts the completions delivered per request
(not those whose client had already given up), so tests can see whether any row
was paid for twice (`GET /_simulator/ledger`). Embeddings (`embeddings`, `vectors`) are
deterministic unit vectors, counted per input (`Ledger.embedded`); `vector_for` is the vector
of an input, for a test to compare with what a client stored.

It serves the Files and Batches endpoints too (`files`, `batches`, `batchrun`, `batchinput`):
batches go `validating -> in_progress -> finalizing -> completed` in well under a second by
default, each request answered by the same code as online and counted in the same ledger; they
can be made to expire, fail lines, fail creation, or meet an enqueued-token limit.

`server` serves; `endpoints` says what differs between chat and embeddings; `contract` and
`embeddings` check a request; `ratelimits` and `faults` decide whether and how it is refused;
`answers`, `streaming` and `embeddings` shape the reply; `ledger` keeps count.

Its configuration (`config.SimulatorConfig`) is part of a job; importing it, or this package,
loads no server: the names below are imported when first used.
"""

import importlib
from typing import Any

_HOMES = {
    "Simulator": "server",
    "serve": "server",
    "count_tokens": "tokens",
    "embedding_key": "ledger",
    "request_key": "ledger",
    "floats": "vectors",
    "vector_for": "vectors",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'batcher.simulator' has no attribute {name!r}")
    return getattr(importlib.import_module(f"batcher.simulator.{_HOMES[name]}"), name)

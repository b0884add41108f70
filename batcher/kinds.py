"""The request-kind seam: what differs between the API's endpoints, behind one interface.

A kind says where requests go (`path`), how a row becomes a request body
(`builder`: `build(row)`, plus the columns it reads), how many tokens a body
will count against the limits and the budget before it is sent (`estimator`,
corrected by each answer's usage), how an answer's body is read (`read_answer`,
`read_stream`) and how an answer becomes a results line (`record`). The pool,
the client, the scan and the dry run reach a kind only through these members.

Chat Completions (`chat.ChatKind`) is the first kind, one row a request.
Adding one (embeddings: `/embeddings`, vectors in the record): a module with a
class meeting `RequestKind`, chosen in prepare.prepare from the job. Packing
several rows into one request is the pool's business, not the kind's, and is
not built yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp

from batcher.client import Completion
from batcher.inputs.sources import Builder


class Estimator(Protocol):
    def prompt_chars(self, body: dict[str, Any]) -> int:
        """The characters of a body that count as prompt tokens (computed once a row)."""

    def estimate(self, body: dict[str, Any], prompt_chars: int) -> int:
        """Tokens the request will count against a TPM limit at admission."""

    def parts(self, body: dict[str, Any], prompt_chars: int) -> tuple[int, int]:
        """(prompt, completion) tokens expected, for the budget."""

    def observe(self, prompt_chars: int, usage: dict[str, Any] | None) -> None:
        """Correct the estimates from an answer's usage."""


class RequestKind(Protocol):
    #: Appended to the base URL.
    path: str
    builder: Builder
    estimator: Estimator
    #: The answer a 200 body holds (RequestFailed when it holds an error).
    read_answer: Callable[[Any, bytes], Completion]
    #: The answer of a request carrying one row (a Batch API line): for a packing kind, that row's part.
    read_one: Callable[[Any, bytes], Completion]
    #: The answer of a streamed 200 response.
    read_stream: Callable[[aiohttp.ClientResponse], Awaitable[Completion]]
    #: The results line of an answer (records.result_record's arguments).
    record: Callable[..., dict[str, Any]]

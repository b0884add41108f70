"""Request kinds: what differs between the API's endpoints, behind one interface (`RequestKind`).

A kind says where requests go (`path`), how a row becomes a request body (`builder`), how many
tokens a body will count against the limits and the budget before it is sent (`estimator`,
corrected by each answer's usage), how an answer's body is read (`read_answer`, `read_stream`) and
how an answer becomes a results line (`record`). The transports, the scan and the dry run reach a
kind only through these members; `kind_of(job, input_kind)` is the job's kind.

- `chat`: Chat Completions (`ChatKind`), one row a request; `prompts` builds its bodies;
- `embeddings`: `EmbeddingsKind`, several rows packed into one request and unpacked from its answer;
- `completion`: the answer type (`Completion`) and the failure an error answer stands for;
- `records`, `choices`: an answer as a results line; `tokens`: estimates before an answer;
- `reuse`: answers reused for identical requests, within a run and through the cache.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from batcher.inputs.sources import Builder

if TYPE_CHECKING:
    from batcher.errors import RequestFailed
    from batcher.job import Job
    from batcher.kinds.embeddings import Member, Packer
    from batcher.kinds.reuse import InputReuse
from batcher.kinds.completion import Completion


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

    # Packing several rows into one request (embeddings); a kind of one row a request has no packer.
    #: Whether a server counts a request's input tokens alone (no completion): a charge known exactly.
    charges_input_only: bool

    def packer(self, reuse: InputReuse | None = None) -> Packer | None:
        """What takes rows from the feed into packs under the request limits; None: one row a request."""

    def unpack(self, completion: Completion, members: list[Member]) -> list[Completion]:
        """A packed request's answer as one Completion a member, in order (RequestFailed if it cannot be)."""

    def splits_on(self, failure: RequestFailed) -> bool:
        """Whether a packed request's refusal may be for one of its rows: its halves are then sent apart."""

    def halves(
        self, body: dict[str, Any], members: list[Member]
    ) -> list[tuple[dict[str, Any], list[Member]]]:
        """A packed request's two halves, each a request of its own."""


def kind_of(job: Job, input_kind: str) -> RequestKind:
    """The job's request kind, for an input of `input_kind` (a Ray worker makes its own from these)."""
    from batcher.kinds.chat import ChatKind
    from batcher.kinds.embeddings import EmbeddingBuilder, EmbeddingsKind, PackLimits
    from batcher.kinds.prompts import RequestBuilder

    if job.embeddings:
        limits = PackLimits(job.inputs_per_request, job.tokens_per_request, job.tokens_per_input)
        return EmbeddingsKind(EmbeddingBuilder(input_kind, **_builder_settings(job)), limits)
    return ChatKind(RequestBuilder(input_kind, **_builder_settings(job)))


def _builder_settings(job: Job) -> dict[str, Any]:
    return {
        "template": job.prompt,
        "system": job.system,
        "defaults": job.defaults(),
        "id_column": job.id_column,
        "keep_columns": job.keep_columns,
    }

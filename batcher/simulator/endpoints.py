"""The endpoints the simulator serves, and the seam between them: an `Endpoint` for chat, one for embeddings.

The server takes a request to either along one path (key, JSON, contract, rate limits, faults,
statuses), and the Batch API answers a line of either the same way; an endpoint says only what it
accepts and what a request costs, how it is answered, and what the ledger counts once an answer
was delivered whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from batcher import jsoncodec
from batcher.simulator import embeddings
from batcher.simulator.answers import complete
from batcher.simulator.config import SimulatorConfig
from batcher.simulator.contract import Invalid, validate
from batcher.simulator.ledger import Ledger
from batcher.simulator.ratelimits import admission_tokens
from batcher.simulator.tokens import prompt_tokens

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


class Endpoint(Protocol):
    """One endpoint's part of a request's path; the server and the Batch API do the rest."""

    #: Where it is served, as a batch and its request lines name it.
    path: str
    #: Writes its answers' JSON.
    dumps: Callable[[Any], str]

    def check(self, body: Any, config: SimulatorConfig) -> int:
        """Raise `Invalid` naming the first thing OpenAI would refuse; otherwise the prompt tokens."""
        ...

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt tokens of an unchecked body (a batch's estimate); KeyError, TypeError,
        AttributeError, IndexError or ValueError if it cannot be read."""
        ...

    def charge(self, body: dict[str, Any], prompt_tokens: int) -> int:
        """The tokens a request is charged on admission: toward TPM, and a batch's enqueued tokens."""
        ...

    def answer(
        self, body: dict[str, Any], prompt_tokens: int, config: SimulatorConfig, fault: str | None = None
    ) -> dict[str, Any]:
        """The answer to a checked request (the `invalid` fault may ask for a flawed one)."""
        ...

    def count(self, ledger: Ledger, body: dict[str, Any]) -> None:
        """Count in the ledger an answer that was delivered whole."""
        ...


class Chat:
    """Chat Completions: one completion per request, charged its prompt and its max_tokens."""

    path = CHAT
    dumps = staticmethod(json.dumps)

    def check(self, body: Any, config: SimulatorConfig) -> int:
        validate(body, config)
        return prompt_tokens(body)

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return prompt_tokens(body)

    def charge(self, body: dict[str, Any], prompt_tokens: int) -> int:
        return admission_tokens(body, prompt_tokens)

    def answer(
        self, body: dict[str, Any], prompt_tokens: int, config: SimulatorConfig, fault: str | None = None
    ) -> dict[str, Any]:
        return complete(body, prompt_tokens, invalid=fault == "invalid")

    def count(self, ledger: Ledger, body: dict[str, Any]) -> None:
        ledger.delivered(body)


class Embeddings:
    """Embeddings: one vector per input, many inputs per request, charged their tokens only.

    Its answers are written by jsoncodec (orjson when installed): 2048 vectors of floats take
    the stdlib's json about 0.2 s, orjson a tenth of that.
    """

    path = EMBEDDINGS
    dumps = staticmethod(jsoncodec.dumps)

    def check(self, body: Any, config: SimulatorConfig) -> int:
        return embeddings.check(body, config)

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return sum(map(embeddings.input_tokens, embeddings.inputs(body)))

    def charge(self, body: dict[str, Any], prompt_tokens: int) -> int:
        return prompt_tokens

    def answer(
        self, body: dict[str, Any], prompt_tokens: int, config: SimulatorConfig, fault: str | None = None
    ) -> dict[str, Any]:
        return embeddings.answer(body, prompt_tokens, config)

    def count(self, ledger: Ledger, body: dict[str, Any]) -> None:
        ledger.delivered_embeddings(embeddings.inputs(body))


#: Every endpoint served, by path: a batch may name any of them.
ENDPOINTS: dict[str, Endpoint] = {endpoint.path: endpoint for endpoint in (Chat(), Embeddings())}


def answer_line(endpoint: Endpoint, body: Any, config: SimulatorConfig) -> tuple[int, dict[str, Any]]:
    """A batch's request answered as online: its status and body (no limits, no faults)."""
    try:
        tokens = endpoint.check(body, config)
    except Invalid as e:
        return e.status, e.body()
    return 200, endpoint.answer(body, tokens, config)

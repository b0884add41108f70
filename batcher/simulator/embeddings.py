"""The Embeddings contract and answer: which requests OpenAI accepts, and the `list` it answers.

`input` is a string, an array of strings, an array of token ids or an array of such arrays; each
string or token array is one input, answered with one embedding, `vectors.vector_for(input,
dimensions)`. The limits (inputs per request, tokens per input and per request) are
SimulatorConfig knobs with OpenAI's values by default, so a test or a TEI-like server can make
them smaller. Unlike Chat Completions, an unknown field is refused, as OpenAI refuses it here.
"""

from __future__ import annotations

import base64
from typing import Any

from batcher.simulator.config import SimulatorConfig
from batcher.simulator.contract import Invalid, check_model, positive_integer
from batcher.simulator.tokens import count_tokens
from batcher.simulator.vectors import floats, vector_for

__all__ = ["NATIVE_DIMENSIONS", "answer", "check", "input_tokens", "inputs", "vector_for"]

#: The dimensions of OpenAI's embedding models; any other model's are `embedding_dimensions`.
NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
#: The models that refuse `dimensions`.
_FIXED_DIMENSIONS = ("text-embedding-ada-002",)
_FIELDS = ("model", "input", "encoding_format", "dimensions", "user")
_FORMATS = ("float", "base64")
_INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
)
_positive_dimensions = positive_integer("dimensions")

#: One input: a text, or a list of token ids.
Input = str | list[int]


def inputs(body: dict[str, Any]) -> list[Input]:
    """The inputs of a request, one per embedding: a lone string or token array is one input."""
    value = body["input"]
    if isinstance(value, str) or isinstance(value[0], int):
        return [value]
    return value


def input_tokens(item: Input) -> int:
    """The tokens of one input: the simulator's count of a text, the length of a token array."""
    return count_tokens(item) if isinstance(item, str) else len(item)


def check(body: Any, config: SimulatorConfig) -> int:
    """Raise `Invalid` naming the first thing OpenAI would refuse; otherwise the request's tokens."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object.", None)
    unknown = next((name for name in body if name not in _FIELDS), None)
    if unknown is not None:
        raise Invalid(f"Unrecognized request argument supplied: {unknown}", None)
    check_model(body, config)
    items = _read_input(body)
    _check_encoding_format(body)
    _check_dimensions(body, config)
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise Invalid("Invalid type for 'user': expected a string.", "user")
    tokens = _check_tokens(items, config)
    _check_reject_marker(items, config)
    return tokens


def answer(body: dict[str, Any], tokens: int, config: SimulatorConfig) -> dict[str, Any]:
    """The `list` of embeddings answering a checked request, in OpenAI's shape."""
    model = body["model"]
    dimensions = body.get("dimensions") or NATIVE_DIMENSIONS.get(model, config.embedding_dimensions)
    encode = _base64 if body.get("encoding_format") == "base64" else floats
    data = [
        {"object": "embedding", "index": index, "embedding": encode(vector_for(item, dimensions))}
        for index, item in enumerate(inputs(body))
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _base64(vector: bytes) -> str:
    return base64.b64encode(vector).decode("ascii")


def _read_input(body: dict[str, Any]) -> list[Input]:
    """The inputs, if `input` is one of the four shapes OpenAI takes, with nothing empty."""
    if "input" not in body:
        raise Invalid("Missing required parameter: 'input'.", "input")
    value = body["input"]
    if _is_text(value) or _is_tokens(value):
        return [value]
    if isinstance(value, list) and value and (all(map(_is_text, value)) or all(map(_is_tokens, value))):
        return value
    raise Invalid(_INVALID_INPUT, "input")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(type(token) is int and token >= 0 for token in value)  # not bool, not float
    )


def _check_encoding_format(body: dict[str, Any]) -> None:
    value = body.get("encoding_format")
    if value is not None and value not in _FORMATS:
        raise Invalid(
            f"Invalid value: '{value}'. Supported values are: 'float' and 'base64'.", "encoding_format"
        )


def _check_dimensions(body: dict[str, Any], config: SimulatorConfig) -> None:
    requested = body.get("dimensions")
    if requested is None:
        return
    _positive_dimensions(body, config)
    model = body["model"]
    if model in _FIXED_DIMENSIONS:
        raise Invalid("This model does not support specifying dimensions.", None)
    native = NATIVE_DIMENSIONS.get(model, config.embedding_dimensions)
    if requested > native:
        raise Invalid(
            f"Invalid 'dimensions': integer above maximum value. Expected a value <= {native}, "
            f"but got {requested} instead.",
            "dimensions",
        )


def _check_tokens(items: list[Input], config: SimulatorConfig) -> int:
    """The request's tokens, if within the limits on inputs, tokens per input and per request."""
    if len(items) > config.embedding_max_inputs:
        raise Invalid(
            f"Invalid 'input': maximum length of array is {config.embedding_max_inputs}, "
            f"but got an array with length {len(items)}.",
            "input",
        )
    counts = [input_tokens(item) for item in items]
    longest = config.embedding_max_input_tokens
    over = next((count for count in counts if count > longest), None)
    if over is not None:
        raise Invalid(
            f"This model's maximum context length is {longest} tokens, however you requested "
            f"{over} tokens ({over} in your prompt; 0 for the completion). "
            "Please reduce your prompt; or completion length.",
            "input",
        )
    total = sum(counts)
    if total > config.embedding_max_request_tokens:
        raise Invalid(
            f"Requested {total} tokens, max {config.embedding_max_request_tokens} tokens per request",
            "input",
        )
    return total


def _check_reject_marker(items: list[Input], config: SimulatorConfig) -> None:
    """Refuse a request with any text holding `reject_marker` (a permanently bad row in a pack)."""
    marker = config.reject_marker
    if marker and any(isinstance(item, str) and marker in item for item in items):
        raise Invalid("This request is rejected by the simulator's reject_marker.", "input")

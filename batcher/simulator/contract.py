"""The Chat Completions contract: which requests OpenAI accepts, and how it words a refusal.

One check per field, run in a fixed order, so that the first failing check names the error a
client sees (its message and `param`, word for word). A refusal's body is
{"error": {"message", "type", "param", "code"}}; an unknown model is 404, anything else 400.
`check_model` and `positive_integer` serve the Embeddings contract (embeddings.py) too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from batcher.simulator.config import SimulatorConfig

ROLES = {"system", "user", "assistant", "tool", "developer"}
_PART_TYPES = ("text", "image_url")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")


class Invalid(Exception):
    """A request OpenAI would refuse: what is wrong, and the parameter it names."""

    def __init__(self, message: str, param: str | None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code

    @property
    def status(self) -> int:
        return 404 if self.code == "model_not_found" else 400  # as OpenAI answers them

    def body(self) -> dict[str, Any]:
        """The refusal's JSON body, as answered online and in a Batch output line."""
        return error_body("invalid_request_error", str(self), self.param, self.code)

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


def error_response(
    status: int,
    type_: str,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error answered as OpenAI answers it."""
    return web.json_response(error_body(type_, message, param, code), status=status, headers=headers)


def error_body(type_: str, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validate(body: Any, config: SimulatorConfig) -> None:
    """Check a request as OpenAI would; raise `Invalid` naming the first thing wrong."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object.", None)
    for check in _CHECKS:
        check(body, config)


Check = Callable[[dict[str, Any], SimulatorConfig], None]


def check_model(body: dict[str, Any], config: SimulatorConfig) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Invalid("you must provide a model parameter", "model")
    if config.models and model not in config.models:
        raise Invalid(
            f"The model `{model}` does not exist or you do not have access to it.",
            "model",
            "model_not_found",
        )


def _messages(body: dict[str, Any], config: SimulatorConfig) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("'messages' must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        _message(i, message)


def _message(i: int, message: Any) -> None:
    role = message.get("role") if isinstance(message, dict) else None
    if not isinstance(role, str) or role not in ROLES:
        raise Invalid(f"Invalid value for 'messages[{i}].role'.", f"messages.[{i}].role")
    _content(i, message)
    if message["role"] == "tool" and not message.get("tool_call_id"):
        raise Invalid(
            f"Missing required parameter: 'messages[{i}].tool_call_id'.",
            f"messages.[{i}].tool_call_id",
        )


def _content(i: int, message: dict[str, Any]) -> None:
    """Text, or a list of text and image_url parts; None only for an assistant's tool calls."""
    content = message.get("content")
    param = f"messages.[{i}].content"
    if content is None:
        if not (message["role"] == "assistant" and message.get("tool_calls")):
            raise Invalid(f"Invalid value for 'messages[{i}].content': expected a string or array.", param)
    elif isinstance(content, list):
        if not all(_part(part) for part in content):
            raise Invalid(f"Invalid content part in 'messages[{i}].content'.", param)
    elif not isinstance(content, str):
        raise Invalid(f"Invalid type for 'messages[{i}].content'.", param)


def _part(part: Any) -> bool:
    """A content part the API takes: a text part's text is a string."""
    if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
        return False
    return part["type"] != "text" or isinstance(part.get("text"), str)


def _number_between(name: str, low: float, high: float) -> Check:
    def check(body: dict[str, Any], config: SimulatorConfig) -> None:
        value = body.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise Invalid(
                f"Invalid '{name}': expected a number between {low} and {high}, got {value!r}.", name
            )

    return check


def positive_integer(name: str) -> Check:
    def check(body: dict[str, Any], config: SimulatorConfig) -> None:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise Invalid(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
                name,
            )

    return check


def _integer_between(name: str, low: int, high: int) -> Check:
    """An optional integer parameter in [low, high], refused in OpenAI's words and codes."""

    def check(body: dict[str, Any], config: SimulatorConfig) -> None:
        value = body.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(
                f"Invalid type for '{name}': expected an integer, but got {_json_type(value)} instead.",
                name,
                "invalid_type",
            )
        if value < low:
            raise Invalid(
                f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
                f"but got {value} instead.",
                name,
                "integer_below_min_value",
            )
        if value > high:
            raise Invalid(
                f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, "
                f"but got {value} instead.",
                name,
                "integer_above_max_value",
            )

    return check


def _json_type(value: Any) -> str:
    """How OpenAI's messages name a JSON value's type ("a string", "an array", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else "null"


def _logprobs(body: dict[str, Any], config: SimulatorConfig) -> None:
    """`logprobs` a boolean; `top_logprobs` (0 to 20) only with `logprobs` true."""
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise Invalid(
            f"Invalid type for 'logprobs': expected a boolean, but got {_json_type(logprobs)} instead.",
            "logprobs",
            "invalid_type",
        )
    if body.get("top_logprobs") is None:
        return
    _integer_between("top_logprobs", 0, 20)(body, config)
    if not logprobs:
        raise Invalid(
            "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled.", "top_logprobs"
        )


def _stream(body: dict[str, Any], config: SimulatorConfig) -> None:
    if "stream" in body and not isinstance(body["stream"], bool):
        raise Invalid("Invalid type for 'stream': expected a boolean.", "stream")


def _tools(body: dict[str, Any], config: SimulatorConfig) -> None:
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(_names_a_function(t) for t in tools)):
        raise Invalid("Invalid 'tools': each tool needs a function with a name.", "tools")


def _names_a_function(tool: Any) -> bool:
    return (
        isinstance(tool, dict)
        and isinstance(tool.get("function"), dict)
        and bool(tool["function"].get("name"))
    )


def _response_format(body: dict[str, Any], config: SimulatorConfig) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in _RESPONSE_FORMATS:
        raise Invalid("Invalid 'response_format.type'.", "response_format.type")
    if kind == "json_object" and "json" not in json.dumps(body["messages"]).lower():
        raise Invalid(
            "'messages' must contain the word 'json' in some form, to use 'response_format' "
            "of type 'json_object'.",
            "messages",
        )
    if kind == "json_schema" and not _names_a_schema(fmt.get("json_schema")):
        raise Invalid(
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema",
        )


def _names_a_schema(json_schema: Any) -> bool:
    return (
        isinstance(json_schema, dict)
        and isinstance(json_schema.get("schema", {}), dict)
        and bool(json_schema.get("name"))
    )


def _reject_marker(body: dict[str, Any], config: SimulatorConfig) -> None:
    marker = config.reject_marker
    if marker and marker in json.dumps(body["messages"]):
        raise Invalid("This request is rejected by the simulator's reject_marker.", "messages")


#: Every field's check, in the order they are made: the first that fails is the error answered.
_CHECKS: tuple[Check, ...] = (
    check_model,
    _messages,
    _number_between("temperature", 0, 2),
    _number_between("top_p", 0, 1),
    positive_integer("max_tokens"),
    positive_integer("max_completion_tokens"),
    _integer_between("n", 1, 128),
    _logprobs,
    _stream,
    _tools,
    _response_format,
    _reject_marker,
)

"""Structured answers: the JSON Schema, labels or parse function an answer must meet, as columns.

Answers that do not parse are asked again, then kept as `parse_error` with their raw text; one
cut at max_tokens is not asked again. See docs/structured-answers.md.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batcher.errors import AnswerInvalid, ConfigError

#: Schema types and the Arrow type of their column (anything else: JSON text).
_COLUMN_TYPES = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool"}
_STRIP = string.whitespace + string.punctuation + "“”‘’«»"


class Answers(Protocol):
    """What makes an answer columns: a JSON Schema or labels (`AnswerFormat`), or a parse function of
    the Python API (`ParseFunction`). AnswerInvalid when the answer does not make them."""

    #: Whether `parse` reads the input row (the transports then keep each row until it is answered).
    wants_row: bool

    def parse(
        self, content: str | None, finish_reason: str | None, row: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AnswerFormat:
    """What every answer must be: an object meeting `schema`, or one of `labels`."""

    schema: dict[str, Any]
    labels: tuple[str, ...] = ()
    name: str = "answer"
    wants_row = False

    @classmethod
    def from_settings(
        cls, *, json_schema: dict[str, Any] | str | Path | None, labels: tuple[str, ...]
    ) -> AnswerFormat | None:
        if json_schema is not None and labels:
            raise ConfigError("give json_schema or labels, not both (labels are a one-field schema)")
        if labels:
            if len(set(map(_normal, labels))) != len(labels) or not all(_normal(x) for x in labels):
                raise ConfigError(
                    f"labels must differ after normalising case and punctuation: {list(labels)}"
                )
            schema = {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": list(labels)}},
                "required": ["label"],
                "additionalProperties": False,
            }
            return cls(schema, labels, "label")
        if json_schema is None:
            return None
        if not isinstance(json_schema, dict):
            json_schema = _read_schema(Path(json_schema))
        if json_schema.get("type") != "object" or not isinstance(json_schema.get("properties"), dict):
            raise ConfigError(
                'json_schema must describe an object ("type": "object" with "properties"): '
                "its properties become the result columns"
            )
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(json_schema)
        except SchemaError as e:
            raise ConfigError(f"json_schema is not a valid JSON Schema: {e.message}") from None
        return cls(json_schema)

    @property
    def columns(self) -> list[str]:
        return list(self.schema["properties"])

    def column_types(self) -> dict[str, str]:
        """Each column's Arrow type name: string, int64, float64, bool, or json (kept as JSON text)."""
        types = {}
        for name, spec in self.schema["properties"].items():
            kind = spec.get("type") if isinstance(spec, dict) else None
            if isinstance(kind, list):  # ["string", "null"]: nullable anyway
                kinds = [k for k in kind if k != "null"]
                kind = kinds[0] if len(kinds) == 1 else None
            if kind is None and isinstance(spec, dict) and "enum" in spec:
                kind = "string" if all(isinstance(v, str) for v in spec["enum"]) else None
            types[name] = _COLUMN_TYPES.get(kind, "json")
        return types

    def response_format(self) -> dict[str, Any]:
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.schema, "strict": True},
        }

    def parse(
        self, content: str | None, finish_reason: str | None, row: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The answer's columns; AnswerInvalid says what is wrong with it."""
        if finish_reason == "length":
            raise AnswerInvalid(
                "the answer was cut at max_tokens (finish_reason: length); raise max_tokens",
                content,
                cut=True,
            )
        if content is None:
            raise AnswerInvalid("the answer has no text content", content)
        try:
            value = json.loads(content)
        except ValueError as e:
            if self.labels:
                return {"label": self._label(content)}
            raise AnswerInvalid(f"the answer is not JSON ({e})", content) from None
        if self.labels:
            text = value.get("label") if isinstance(value, dict) else value
            return {"label": self._label(text if isinstance(text, str) else content)}
        error = _first_error(self.schema, value)
        if error is not None:
            raise AnswerInvalid(f"the answer does not match json_schema: {error}", content)
        return {name: value.get(name) for name in self.columns}

    def _label(self, text: str) -> str:
        wanted = _normal(text)
        for label in self.labels:
            if _normal(label) == wanted:
                return label
        raise AnswerInvalid(f"the answer {text[:80]!r} is none of the labels {list(self.labels)}", text)


class ParseFunction:
    """A parse function of the Python API (Curator's habit): `parse(row, answer) -> dict` of columns.

    `row` is the input row, `answer` the answer's text. What it raises makes the
    answer a parse_error, asked again like any answer that does not parse.
    """

    wants_row = True

    def __init__(self, function: Callable[[dict[str, Any], str | None], dict[str, Any]], *, taken: set[str]):
        self.function = function
        #: Names the results already use (id, content, ..., kept columns).
        self.taken = taken

    def parse(
        self, content: str | None, finish_reason: str | None, row: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            columns = self.function(row or {}, content)
        except Exception as e:
            raise AnswerInvalid(f"parse raised {type(e).__name__}: {e}", content) from None
        if not isinstance(columns, dict) or not all(isinstance(k, str) for k in columns):
            raise AnswerInvalid(f"parse must return a dict of columns, not {type(columns).__name__}", content)
        if clash := sorted(self.taken.intersection(columns)):
            names = ", ".join(clash)
            raise AnswerInvalid(f"parse returned {names}, which results already use: rename", content)
        return columns


def _normal(text: str) -> str:
    return " ".join(text.strip(_STRIP).casefold().split())


def _first_error(schema: dict[str, Any], value: Any) -> str | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: json_schema file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read json_schema file: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: json_schema file is not valid JSON ({e})") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"{path}: json_schema must be a JSON object")
    return schema

"""Turn one input row into a Chat Completions request body.

Three kinds of row: a data row rendered through a prompt template
(`{column}` placeholders), a row that already is a chat request, and an OpenAI
Batch input line. Every request parameter a row carries passes through unchanged;
the job's defaults (model, max_tokens, temperature, top_p) fill only what a row
leaves out.
"""

from __future__ import annotations

import string
from typing import Any

from batcher.errors import ConfigError
from batcher.inputs.formats import BATCH_INPUT, CHAT, TEMPLATE
from batcher.inputs.scanning import DEFAULT_ID

__all__ = ["BATCH_INPUT", "CHAT", "TEMPLATE", "RequestBuilder", "template_columns"]


_ROLES = {"system", "user", "assistant", "tool", "developer", "function"}


def template_columns(template: str) -> list[str]:
    """The column names a template's `{placeholders}` refer to."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(
            f"prompt template is malformed ({e}); write a literal brace as {{{{ or }}}}"
        ) from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit() or any(c in name for c in ".["):
            raise ConfigError(f"prompt template placeholder {{{name}}} must be a column name, e.g. {{text}}")
        if name not in names:
            names.append(name)
    return names


class RequestBuilder:
    """Builds request bodies for one job; `build` raises ValueError naming what is wrong."""

    __slots__ = ("kind", "template", "system", "defaults", "id_column", "keep_columns", "placeholders")

    def __init__(
        self,
        kind: str,
        *,
        template: str | None,
        system: str | None,
        defaults: dict[str, Any],
        id_column: str | None,
        keep_columns: tuple[str, ...] = (),
    ):
        self.kind = kind
        self.template = template
        self.system = system
        self.defaults = defaults
        self.id_column = id_column or DEFAULT_ID  # (None: `id`, or rows named by position)
        self.keep_columns = keep_columns
        self.placeholders = template_columns(template) if template is not None else []

    def build(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.kind == TEMPLATE:
            body = self._from_template(row)
        elif self.kind == CHAT:
            # Kept columns are the user's metadata, not request parameters.
            skip = {self.id_column, *self.keep_columns}
            body = {k: v for k, v in row.items() if k not in skip}
        else:
            body = dict(row["body"])
        for key, value in self.defaults.items():
            body.setdefault(key, value)
        self._check(body)
        return body

    def _from_template(self, row: dict[str, Any]) -> dict[str, Any]:
        """The body a data row makes through the template (a chat request of one user message)."""
        messages = [{"role": "user", "content": self._fill(row)}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return {"messages": messages}

    def _check(self, body: dict[str, Any]) -> None:
        _check_body(body)

    def _fill(self, row: dict[str, Any]) -> str:
        """The template filled with the row's columns; ValueError names a missing or null one."""
        values = {}
        for name in self.placeholders:
            if name not in row:
                raise ValueError(f"has no column '{name}' for the prompt's {{{name}}}")
            value = row[name]
            if value is None:
                raise ValueError(f"has a null '{name}', so the prompt's {{{name}}} cannot be filled")
            values[name] = value
        return self.template.format_map(values)


def _check_body(body: dict[str, Any]) -> None:
    """What can be known wrong before a request is sent; the server judges the rest."""
    if not body.get("model"):
        raise ValueError("has no model: set --model (or `model` in the job file) or a model in each row")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("needs 'messages', a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ValueError(f"needs a role in messages[{i}], one of {', '.join(sorted(_ROLES))}")

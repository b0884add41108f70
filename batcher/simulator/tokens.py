"""The simulator's tokenizer: words and punctuation marks, about 4 characters each.

It is not OpenAI's tokenizer, only one of the same scale that is cheap and deterministic, so
usage, TPM limits and max_tokens truncation all count the same tokens.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: A token: a run of word characters, or one punctuation mark.
WORD = re.compile(r"\w+|[^\w\s]")
#: Tokens OpenAI charges per request, per message, and per image (low detail).
_PER_REQUEST = 3
_PER_MESSAGE = 4
_PER_IMAGE = 85


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: words and punctuation marks (about 4 characters each)."""
    return len(WORD.findall(text))


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt tokens of a valid request: its messages, their images and its tools."""
    tokens = _PER_REQUEST
    for message in body["messages"]:
        tokens += _PER_MESSAGE + _content_tokens(message.get("content"))
    tools = body.get("tools")
    if tools is not None:
        tokens += count_tokens(json.dumps(tools))
    return tokens


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, list):
        return sum(
            count_tokens(part.get("text", "")) if part["type"] == "text" else _PER_IMAGE for part in content
        )
    return 0  # an assistant message holding only tool calls

"""The simulator's tokenizer: words and punctuation marks, about 4 to 5 characters each.

It is not OpenAI's tokenizer, only one of the same scale that is cheap and deterministic, so
usage, TPM limits and max_tokens truncation all count the same tokens. On the shipped jobs' English
prompts it counts 5 to 10% fewer tokens than OpenAI's o200k (benchmarks/token_estimates.py). The
JSON a request carries (its tools, a structured-output schema, which OpenAI bills as prompt too)
is counted with a run of punctuation as one token, as OpenAI's tokenizers merge `{"` and `":"`:
counted mark by mark it came to twice o200k's count.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: A token: a run of word characters, or one punctuation mark.
WORD = re.compile(r"\w+|[^\w\s]")
#: A token of JSON text: a run of word characters, or a run of punctuation marks.
_JSON_TOKEN = re.compile(r"\w+|[^\w\s]+")
#: Tokens OpenAI charges per request, per message, and per image (low detail).
_PER_REQUEST = 3
_PER_MESSAGE = 4
_PER_IMAGE = 85


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: words and punctuation marks (4 to 5 characters each in English)."""
    return len(WORD.findall(text))


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt tokens of a valid request: its messages, their images, its tools and the schema
    of its structured-output response_format (compact JSON)."""
    tokens = _PER_REQUEST
    for message in body["messages"]:
        tokens += _PER_MESSAGE + _content_tokens(message.get("content"))
    tools = body.get("tools")
    if tools is not None:
        tokens += json_tokens(tools)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        tokens += json_tokens((fmt.get("json_schema") or {}).get("schema") or {})
    return tokens


def json_tokens(value: Any) -> int:
    """The tokens of a value's compact JSON, a run of punctuation counted as one."""
    return len(_JSON_TOKEN.findall(json.dumps(value, separators=(",", ":"))))


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, list):
        return sum(
            count_tokens(part.get("text", "")) if part["type"] == "text" else _PER_IMAGE for part in content
        )
    return 0  # an assistant message holding only tool calls

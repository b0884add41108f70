"""The simulator's answers: a `chat.completion` that is a function of the request alone.

Everything drawn (words, tool-call ids, schema values) comes from a generator seeded with the
model and messages, so asking twice gets the same answer. Prompts that ask for a sentiment or a
summary get a plausible one, a tool named in the last message is called, and a response_format
is met (unless the injected `invalid` fault asks for an answer that ignores it). A request with
`n` gets n choices, the first the same as without `n`; one with `logprobs` gets a logprob per
token of each text choice (a tool call's choice has none), with `top_logprobs` alternatives.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

from batcher.simulator.tokens import WORD, count_tokens

_POSITIVE = {
    "great",
    "love",
    "loved",
    "excellent",
    "amazing",
    "good",
    "perfect",
    "happy",
    "best",
    "wonderful",
    "fantastic",
    "recommend",
    "works",
    "fast",
    "comfortable",
    "delicious",
}
_NEGATIVE = {
    "bad",
    "terrible",
    "awful",
    "broke",
    "broken",
    "poor",
    "worst",
    "hate",
    "disappointed",
    "slow",
    "refund",
    "useless",
    "waste",
    "cold",
    "rude",
    "never",
    "not",
}
_FILLER = [
    "the",
    "results",
    "show",
    "a",
    "clear",
    "pattern",
    "across",
    "the",
    "sample",
    "and",
    "the",
    "main",
    "point",
    "is",
    "stated",
    "plainly",
    "with",
    "the",
    "supporting",
    "detail",
    "following",
    "in",
    "order",
    "of",
    "importance",
]
#: The answer of the `invalid` fault: text that meets no response_format.
_INVALID_TEXT = "Sure! I think the answer is probably fine."
#: A token as logprobs spell it: one of the tokenizer's (tokens.WORD), with the spaces before it.
_SPELLED = re.compile(r"\s*(?:\w+|[^\w\s])")
#: The other tokens a logprobs entry names as likely (top_logprobs is at most 20).
_ALTERNATIVES = sorted(set(_FILLER) | {"answer", "result", "it", "this"})


def complete(body: dict[str, Any], prompt_tokens: int, *, invalid: bool = False) -> dict[str, Any]:
    """The `chat.completion` answering a valid request: `n` choices (a tool call, or text cut at
    max_tokens), each with its logprobs when asked; usage counts the tokens of every choice."""
    digest = hashlib.sha256(
        json.dumps([body.get("model"), body.get("messages")], sort_keys=True, default=str).encode()
    ).digest()
    choices, completion_tokens = [], 0
    for index in range(body.get("n") or 1):
        choice, tokens = _choice(body, digest, index, invalid)
        choices.append(choice)
        completion_tokens += tokens
    return {
        "id": f"chatcmpl-{digest.hex()[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_simulator",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _choice(body: dict[str, Any], digest: bytes, index: int, invalid: bool) -> tuple[dict[str, Any], int]:
    """Choice `index` and its completion tokens. The first is drawn from the request's digest
    alone (what an `n`-less request gets); each other from the digest and its index."""
    rng = random.Random(digest if index == 0 else digest + index.to_bytes(2, "big"))
    call = _tool_call(body, rng)
    logprobs = None
    if call is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish_reason = "tool_calls"
        completion_tokens = count_tokens(json.dumps(call))
    else:
        text, finish_reason = _truncated(_INVALID_TEXT if invalid else _text(body, rng), body)
        message = {"role": "assistant", "content": text}
        completion_tokens = count_tokens(text)
        if body.get("logprobs"):
            logprobs = _token_logprobs(
                text, random.Random(rng.getrandbits(64)), body.get("top_logprobs") or 0
            )
    choice = {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
    return choice, completion_tokens


def _token_logprobs(text: str, rng: random.Random, top: int) -> dict[str, Any]:
    """A choice's `logprobs`: one entry per token of `text` (the tokens spell it out, leading
    spaces included), each with its `top` most likely alternatives, itself first."""
    tokens = _SPELLED.findall(text)
    if tokens and text[-1].isspace():
        tokens[-1] += text[len(text.rstrip()) :]
    return {"content": [_entry(token, rng, top) for token in tokens], "refusal": None}


def _entry(token: str, rng: random.Random, top: int) -> dict[str, Any]:
    logprob = -round(rng.expovariate(8), 6)
    entry = _logprob(token, logprob)
    entry["top_logprobs"] = []
    if top:
        space = token[: len(token) - len(token.lstrip())]
        others = rng.sample([w for w in _ALTERNATIVES if space + w != token], top - 1)
        drops = sorted(rng.uniform(0.5, 12) for _ in others)
        alternatives = [
            _logprob(space + w, round(logprob - d, 6)) for w, d in zip(others, drops, strict=True)
        ]
        entry["top_logprobs"] = [_logprob(token, logprob), *alternatives]
    return entry


def _logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _truncated(text: str, body: dict[str, Any]) -> tuple[str, str]:
    """The text cut at the request's max tokens, and its finish_reason."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words = WORD.findall(text)
    if limit is not None and len(words) > limit:
        return _join(words[:limit]), "length"
    return text, "stop"


def _tool_call(body: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    tool = _chosen_tool(body)
    if tool is None:
        return None
    params = tool["function"].get("parameters") or {}
    arguments = _instance(params, rng) if params.get("type") == "object" else {}
    return {
        "id": f"call_{rng.getrandbits(64):016x}",
        "type": "function",
        "function": {"name": tool["function"]["name"], "arguments": json.dumps(arguments)},
    }


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool to call: the one tool_choice names, the first if one is required, else one the
    last message names; none after a tool's result."""
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or body["messages"][-1].get("role") == "tool":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t["function"]["name"] == name), tools[0])
    if choice == "required":
        return tools[0]
    text = json.dumps(body["messages"][-1].get("content"))
    return next((t for t in tools if t["function"]["name"] in text), None)


def _text(body: dict[str, Any], rng: random.Random) -> str:
    fmt = body.get("response_format") or {}
    last = body["messages"][-1].get("content")
    prompt = last if isinstance(last, str) else json.dumps(last)
    lowered = prompt.lower()
    sentiment = _sentiment(lowered) if "sentiment" in lowered else None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return json.dumps(_instance(schema, rng, sentiment))
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": _sentence(rng)})
    if sentiment is not None:
        return sentiment
    if "summar" in lowered:
        return _summary(prompt, rng)
    return _sentence(rng)


def _summary(prompt: str, rng: random.Random) -> str:
    """The first sentence of what follows the prompt's first colon."""
    subject = prompt.split(":", 1)[-1].strip()
    first = re.split(r"(?<=[.!?])\s", subject, maxsplit=1)[0]
    return first if first else _sentence(rng)


def _join(words: list[str]) -> str:
    text = ""
    for word in words:
        text += word if not text or not word[0].isalnum() else " " + word
    return text


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_FILLER) for _ in range(rng.randint(8, 24))]
    return "Simulated answer: " + " ".join(words) + "."


def _sentiment(lowered_prompt: str) -> str:
    words = set(re.findall(r"[a-z']+", lowered_prompt.split(":", 1)[-1]))
    score = len(words & _POSITIVE) - len(words & _NEGATIVE)
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def _instance(schema: dict, rng: random.Random, sentiment: str | None = None) -> Any:
    """A value that satisfies a (simple) JSON Schema; an enum naming `sentiment` gets it."""
    if "enum" in schema:
        named = [v for v in schema["enum"] if isinstance(v, str) and v.casefold() == sentiment]
        return named[0] if named else rng.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    make = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    return make(schema, rng, sentiment) if make is not None else rng.choice(_FILLER)


def _object(schema: dict, rng: random.Random, sentiment: str | None) -> dict[str, Any]:
    props = schema.get("properties") or {}
    return {name: _instance(sub, rng, sentiment) for name, sub in props.items()}


def _array(schema: dict, rng: random.Random, sentiment: str | None) -> list[Any]:
    return [_instance(schema.get("items") or {"type": "string"}, rng, sentiment)]


def _integer(schema: dict, rng: random.Random, sentiment: str | None) -> int:
    return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 10)))


def _number(schema: dict, rng: random.Random, sentiment: str | None) -> float:
    return round(rng.uniform(schema.get("minimum", 0), schema.get("maximum", 1)), 3)


def _boolean(schema: dict, rng: random.Random, sentiment: str | None) -> bool:
    return rng.random() < 0.5


def _null(schema: dict, rng: random.Random, sentiment: str | None) -> None:
    return None


#: How to make a value of each JSON Schema type; any other type gets a filler word.
_BY_TYPE: dict[str, Callable[[dict, random.Random, str | None], Any]] = {
    "object": _object,
    "array": _array,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "null": _null,
}

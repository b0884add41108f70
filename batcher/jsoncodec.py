"""JSON on the hot path (request bodies, answers, journal lines): orjson, else the stdlib.

orjson is a dependency (issue 21: the stdlib's json was about 190,000 of 800,000 instructions a row,
benchmarks/README.md); the stdlib stands in only where it is missing (installed with --no-deps on
a platform without its wheel). The bytes written are the same either way (tested), but for NaN
(null with orjson).
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # (a dependency, but an install with --no-deps can lack it)
    orjson = None


def _dumps_stdlib(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str, separators=(",", ":"))


def _canonical_stdlib(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, default=str, separators=(",", ":"), sort_keys=True).encode()


if orjson is not None:
    _orjson_dumps, _orjson_loads, _SORT_KEYS = orjson.dumps, orjson.loads, orjson.OPT_SORT_KEYS

    def dumpb(obj: Any) -> bytes:
        """Compact UTF-8 JSON bytes."""
        try:
            return _orjson_dumps(obj, default=str)
        except TypeError:
            return _dumps_stdlib(obj).encode("utf-8")

    def dumps(obj: Any) -> str:
        """Compact JSON text."""
        return dumpb(obj).decode("utf-8")

    #: Parse JSON; ValueError when it is not (orjson's own function: no frame of ours an answer).
    loads = _orjson_loads

    def canonical(obj: Any) -> bytes:
        """Keys sorted, compact: the same bytes for the same value (request keys)."""
        try:
            return _orjson_dumps(obj, default=str, option=_SORT_KEYS)
        except TypeError:
            return _canonical_stdlib(obj)

else:

    def dumpb(obj: Any) -> bytes:
        """Compact UTF-8 JSON bytes."""
        return _dumps_stdlib(obj).encode("utf-8")

    dumps = _dumps_stdlib
    loads = json.loads

    def canonical(obj: Any) -> bytes:
        """Keys sorted, compact: the same bytes for the same value (request keys)."""
        return _canonical_stdlib(obj)

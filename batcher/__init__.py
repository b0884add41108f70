"""batcher: send a dataset of prompts to an OpenAI-compatible API (Chat Completions or embeddings,
online or through the provider's Batch API, on one machine or a Ray cluster), rate-limited,
retried and resumable.

    import batcher
    table = batcher.run("reviews.jsonl", model="gpt-4o-mini", prompt="Classify: {text}", output="runs/r")

See batcher.api for `run`, `arun` and `iter_results`.
"""

from __future__ import annotations

import logging as _logging
from typing import Any

from batcher.errors import BatcherError, BudgetReached, ConfigError, InputError, RunAborted, WriteFailed

__version__ = "0.1.0"
__all__ = [
    "run",
    "arun",
    "iter_results",
    "BatcherError",
    "ConfigError",
    "InputError",
    "RunAborted",
    "BudgetReached",
    "WriteFailed",
]

# A library logs; the application decides where to (the CLI's --verbose).
_logging.getLogger("batcher").addHandler(_logging.NullHandler())


def __getattr__(name: str) -> Any:
    # The API loads on first use, so `batcher --help` does not pay for it.
    if name in ("run", "arun", "iter_results"):
        from batcher import api

        return getattr(api, name)
    raise AttributeError(f"module 'batcher' has no attribute {name!r}")

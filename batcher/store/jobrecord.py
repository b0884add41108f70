"""The job record: `job.json`, what job a run directory holds, so that a resume of another is refused.

Written when a session opens the directory; compared field by field on the next (the input is
known by its fingerprint, wherever it lives now); read by `status`, the dry run and the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batcher.errors import ConfigError
from batcher.store.journal import write_atomically

JOB_FILE = "job.json"
#: The job record's word that every journal line's row number points into the input as it is.
POSITIONS = "row_numbers_match_input"
#: Job record fields shown for information but not compared on resume: the
#: input is recognised by its fingerprint, wherever the file now lives.
INFORMATIONAL = ("input", "rows", "kept_types", POSITIONS)


def recorded_job(directory: Path) -> dict[str, Any] | None:
    """The job record of an earlier session, if there is a readable one."""
    try:
        recorded = json.loads((directory / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def same_job(identity: dict[str, Any], recorded: dict[str, Any] | None) -> bool:
    return recorded is not None and all(
        recorded.get(k) == v for k, v in identity.items() if k not in INFORMATIONAL
    )


def refusal(directory: Path, identity: dict[str, Any], recorded: dict[str, Any] | None) -> ConfigError | None:
    """Why `directory` cannot take `identity` without --force, if it cannot."""
    path = directory / JOB_FILE
    if not path.exists():
        return None
    if recorded is None:
        return ConfigError(f"{path} is damaged; re-run with --force to replace it")
    changed = [k for k in identity if k not in INFORMATIONAL and recorded.get(k) != identity[k]]
    if not changed:
        return None
    lines = "\n  ".join(f"{k}: was {recorded.get(k)!r}, now {identity[k]!r}" for k in changed)
    return ConfigError(
        f"{directory} holds a different job, so resuming into it is refused:\n  {lines}\n"
        "Use another --output directory, or --force to continue this one anyway "
        "(rows already done are kept and not sent again)."
    )


def write_job(directory: Path, identity: dict[str, Any], by_position: bool) -> None:
    """Record `identity` as the directory's job (`by_position`: row numbers point into its input)."""
    write_atomically(directory / JOB_FILE, json.dumps({**identity, POSITIONS: by_position}, indent=2) + "\n")

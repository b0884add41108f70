"""A run directory's figures, read from outside the run (status, report) without locking or changing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batcher.errors import ConfigError
from batcher.store.checkpoint import Checkpoint
from batcher.store.jobrecord import JOB_FILE, POSITIONS
from batcher.store.locks import is_locked
from batcher.store.progress import Progress


def read_progress(directory: Path) -> tuple[dict[str, Any], Progress]:
    """A run directory's job record and progress, read without changing or locking anything."""
    job_path = directory / JOB_FILE
    if not job_path.exists():
        raise ConfigError(f"{directory} is not a batcher run directory (no {JOB_FILE})")
    try:
        job = json.loads(job_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{job_path} cannot be read: {e}") from None
    if not isinstance(job, dict):
        raise ConfigError(f"{job_path} cannot be read: not a JSON object")
    checkpoint = Checkpoint.of_run(directory, job.get("output_format", "jsonl"), job.get("endpoint", "chat"))
    return job, checkpoint.load(by_position=job.get(POSITIONS) is True, repair=False)


def inspect(directory: Path, read: tuple[dict[str, Any], Progress] | None = None) -> dict[str, Any]:
    """A run directory's progress in figures (`read`: what `read_progress` returned, if at hand)."""
    job, progress = read or read_progress(directory)
    done, failed = progress.done, progress.failed
    prompt_tokens, completion_tokens = progress.prompt_tokens, progress.completion_tokens
    total = job.get("rows") or 0
    return {
        "directory": str(directory),
        "running": is_locked(directory),
        "input": job.get("input"),
        "model": job.get("model"),
        "rows_total": total,
        "rows_ok": len(done),
        "rows_failed": len(failed),
        "rows_remaining": max(0, total - len(done) - len(failed)),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost_usd": round(progress.cost_usd, 6),
        "answers_unpriced": progress.unpriced,
    }

"""Journal parts (store/parts.py): rows a Ray worker finished survive the worker and the driver.

A part is written here as a worker writes it (transports/ray/worker.py's `Part`), by a process of
its own that is then killed with SIGKILL, or left running to stand for a worker still alive.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batcher.store.checkpoint import STATE_DIR, Checkpoint
from batcher.store.parts import PARTS_DIR
from batcher.transports.ray.worker import Part
from tests.helpers import prompt_for, read_jsonl, review_rows, run_args, write_jsonl

WRITER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from batcher.transports.ray.worker import Part

    async def main():
        part = Part(Path(sys.argv[1]))
        for ok, record in json.loads(sys.argv[2]):
            part.add(ok, record)
        await part.sync()
        print("written", flush=True)
        time.sleep(3600)

    asyncio.run(main())
    """
)


def record(row: dict, number: int) -> dict:
    """A result line as a worker journals it (the fields resume reads, and an answer)."""
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    return {"id": row["id"], "row_number": number, "usage": usage, "cost_usd": 0.5, "content": "positive"}


def start_writer(parts_dir: Path, rows: list[tuple[bool, dict]]) -> subprocess.Popen:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(parts_dir), json.dumps(rows)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "written"
    return writer


def killed_writer(parts_dir: Path, rows: list[tuple[bool, dict]]) -> None:
    writer = start_writer(parts_dir, rows)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)


@pytest.fixture
def half_done(cli, simulator, tmp_path, run_dir):
    """A run of 10 rows whose first session sent the first 3 (--limit 3): its input and arguments."""
    rows = review_rows(10)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    args = run_args(path, run_dir, simulator.base_url)
    assert cli(*args, "--limit", "3").exit_code == 0
    return rows, args


def test_rows_a_killed_worker_journaled_are_taken_by_the_next_session_and_not_sent_again(
    cli, simulator, half_done, run_dir
):
    rows, args = half_done
    parts_dir = run_dir / STATE_DIR / PARTS_DIR
    # Rows 3 to 6 (row 3 is in the journal already): finished by a worker, then the driver and the
    # worker were killed before the driver journaled them.
    killed_writer(parts_dir, [(True, record(rows[i], i + 1)) for i in range(2, 6)])

    status = json.loads(cli("status", run_dir, "--json").output)
    assert status["rows_ok"] == 6 and status["cost_usd"] == 1.5  # (model "m" has no price: the
    # part's 3 new rows at 0.5 each). Read, not taken: status changes nothing
    assert len(list(parts_dir.iterdir())) == 1

    result = cli(*args)

    assert result.exit_code == 0, result.output
    results = read_jsonl(run_dir / "results.jsonl")
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)  # each once
    sent_now = [r for r in rows if simulator.completions_for(prompt_for(r))]
    assert [r["id"] for r in sent_now] == [r["id"] for r in rows[:3] + rows[6:]]  # not rows 4 to 6
    assert json.loads(cli("status", run_dir, "--json").output)["cost_usd"] == 1.5
    assert not parts_dir.exists() or not any(p.is_dir() for p in parts_dir.iterdir())


def test_a_part_whose_worker_still_runs_is_taken_but_kept_and_taken_once(half_done, run_dir):
    rows, _ = half_done
    parts_dir = run_dir / STATE_DIR / PARTS_DIR
    writer = start_writer(parts_dir, [(True, record(rows[i], i + 1)) for i in range(3, 5)])
    try:
        for _ in range(2):
            checkpoint = Checkpoint(run_dir)
            progress = checkpoint.load()
            checkpoint.close()
            assert len(progress.done) == 5
        assert [r["id"] for r in read_jsonl(run_dir / "results.jsonl")][3:] == ["r3", "r4"]  # once
        assert len([p for p in parts_dir.iterdir() if p.is_dir()]) == 1  # its writer may add more
    finally:
        writer.kill()
        writer.wait(timeout=10)


def test_a_failed_row_in_a_part_counts_failed_and_a_vector_comes_back_whole(tmp_path):
    parts_dir = tmp_path / "parts"
    vector = bytes(range(16))
    failure = {"id": "r2", "row_number": 2, "error": {"type": "invalid_request_error", "message": "no"}}

    async def write() -> None:
        part = Part(parts_dir)
        part.add(True, {"id": "r1", "row_number": 1, "usage": None, "cost_usd": None, "embedding": vector})
        part.add(False, failure)
        await part.sync()

    asyncio.run(write())
    (part,) = parts_dir.iterdir()
    assert list(Checkpoint.of_part(part).records()) == [
        (True, {"id": "r1", "row_number": 1, "usage": None, "cost_usd": None, "embedding": vector}),
        (False, failure),
    ]

"""A key's limit is shared by the runs that use it: two processes together stay under it.

The state lives in a file under the user's cache directory, named by a hash of
base URL and key, under flock; a holder killed with -9 leaves no lock behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batcher.limits.shared import SharedState, state_path
from tests.helpers import TEST_KEY, read_jsonl, review_rows, start_subprocess_run, write_jsonl


@pytest.mark.slow
def test_two_runs_on_one_key_together_stay_under_its_limit(simulator_factory, tmp_path):
    # A server that announces nothing: each run alone would send at the --rpm it was told.
    simulator = simulator_factory(rpm=2400, latency_ms=50, rate_limit_headers="none")
    runs = []
    for i in range(2):
        path = write_jsonl(tmp_path / f"in{i}.jsonl", review_rows(150))
        extra = ("--rpm", "2400", "--concurrency", "16")
        runs.append(start_subprocess_run(path, tmp_path / f"run{i}", simulator.base_url, *extra))
    for run in runs:
        run.wait(timeout=120)

    assert [run.returncode for run in runs] == [0, 0], [run.stderr.read() for run in runs]
    for i in range(2):
        assert len(read_jsonl(tmp_path / f"run{i}" / "results.jsonl")) == 150
    arrivals = sorted(simulator.server.arrivals)
    # 300 requests at 40 a second after a burst of 40 take at least 6.5 s; twice the rate, half that.
    assert arrivals[-1] - arrivals[0] >= 5.5
    assert simulator.server.statuses["429"] <= 0.03 * simulator.requests, dict(simulator.server.statuses)
    state = state_path(simulator.base_url, TEST_KEY)
    assert state.exists() and TEST_KEY not in state.read_text() and TEST_KEY not in str(state)


def test_a_process_killed_while_it_holds_the_lock_leaves_no_lock_behind(tmp_path):
    path = tmp_path / "state.json"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, 9)
    holder.wait(timeout=10)
    state = SharedState(path)

    started = time.monotonic()
    with state.locked() as values:
        values["paused_until"] = 1.0

    assert time.monotonic() - started < 1
    with state.locked() as values:
        assert values["paused_until"] == 1.0


def test_a_state_file_torn_by_a_kill_or_left_by_an_old_run_is_read_as_none(tmp_path):
    path: Path = tmp_path / "state.json"
    path.write_text('{"paused_until": 1e300, "written": ')  # torn mid-write
    state = SharedState(path)

    with state.locked() as values:
        assert values == {}
    path.write_text('{"paused_until": 1e300, "written": 1000.0}')  # long ago (before a reboot, say)
    with state.locked() as values:
        assert values == {}

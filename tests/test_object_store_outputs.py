"""An output directory in an object store: committed in immutable parts, resumed from the store alone."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import batcher
from batcher.errors import ConfigError
from batcher.store.mirror import COMMITS, LEASE, staging_for
from tests.helpers import (
    TEST_KEY,
    batcher_command,
    prompt_for,
    review_rows,
    run_args,
    subprocess_env,
    write_jsonl,
)
from tests.test_embeddings import embed_args
from tests.test_object_stores import jsonl_bytes, parquet_bytes


@pytest.fixture
def staging(tmp_path, monkeypatch):
    """This test's staging directories (the local copies of runs in the store)."""
    path = tmp_path / "staging"
    monkeypatch.setenv("BATCHER_STAGING", str(path))
    return path


def parquet_ids(s3, uri: str) -> list:
    return pq.read_table(io.BytesIO(s3.get(uri)))["id"].to_pylist()


def committed_lines(s3, output: str, file: str) -> list[dict]:
    """The journal file as the store has it: its parts, in order."""
    names = [n for n in s3.names(output) if n.startswith(f"{COMMITS}/{file}/")]
    data = b"".join(s3.get(f"{output}/{name}") for name in sorted(names))
    return [json.loads(line) for line in data.splitlines()]


def test_a_run_with_input_and_output_in_s3_leaves_its_outputs_there_and_resumes_from_them(
    cli, simulator, s3, staging
):
    rows = review_rows(50)
    source = s3.put("s3://inputs/reviews.parquet", parquet_bytes(rows, row_group_size=16))
    output = s3.bucket("outputs") + "/reviews"
    command = run_args(source, output, simulator.base_url, "--output-format", "parquet")

    first = cli(*command)

    assert first.exit_code == 0, first.output
    names = s3.names(output)
    assert {"results.parquet", "errors.parquet", "summary.json", "job.json"} <= set(names)
    assert LEASE not in names and not any(staging.iterdir())  # given up, and nothing left behind
    assert sorted(parquet_ids(s3, f"{output}/results.parquet")) == sorted(r["id"] for r in rows)
    assert len(committed_lines(s3, output, ".batcher/results.jsonl")) == 50

    again = cli(*command)

    assert again.exit_code == 0, again.output
    assert simulator.requests == 50 and all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)
    assert sorted(parquet_ids(s3, f"{output}/results.parquet")) == sorted(r["id"] for r in rows)
    assert json.loads(s3.get(f"{output}/summary.json"))["rows_ok"] == 50


def test_rows_added_to_the_input_are_the_only_ones_sent_by_the_next_run(cli, simulator, s3, staging):
    rows = review_rows(40)
    output = s3.bucket("outputs") + "/growing"
    source = s3.put("s3://inputs/growing.jsonl", jsonl_bytes(rows[:25]))
    assert cli(*run_args(source, output, simulator.base_url)).exit_code == 0
    s3.put(source, jsonl_bytes(rows))

    grown = cli(*run_args(source, output, simulator.base_url, "--force"))

    assert grown.exit_code == 0, grown.output
    assert simulator.requests == 40
    results = [json.loads(line) for line in s3.get(f"{output}/results.jsonl").splitlines()]
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)


def test_embeddings_to_s3_keep_their_vectors_across_sessions(cli, simulator, s3, staging, tmp_path):
    rows = [{"id": f"a{n}", "title": f"article {n}", "body": "about things"} for n in range(30)]
    path = write_jsonl(tmp_path / "articles.jsonl", rows)
    output = s3.bucket("outputs") + "/vectors"
    command = embed_args(
        path, output, simulator.base_url, "--output-format", "parquet", "--inputs-per-request", "8"
    )

    first, again = cli(*command), cli(*command)

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    table = pq.read_table(io.BytesIO(s3.get(f"{output}/results.parquet")))
    assert sorted(table["id"].to_pylist()) == sorted(r["id"] for r in rows)
    vectors = table["embedding"].to_pylist()
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) > 1
    assert all(
        simulator.embeddings_for(f"{r['title']}: {r['body']}") == 1 for r in rows
    )  # the second session sent nothing
    assert any(n.startswith(f"{COMMITS}/.batcher/vectors.f32/") for n in s3.names(output))


def test_a_run_killed_with_sigkill_is_resumed_from_the_store_alone(simulator_factory, s3, tmp_path):
    """The second session runs with an empty staging directory, as on another machine."""
    simulator = simulator_factory(latency_ms=40)
    rows = review_rows(300)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    output = s3.bucket("outputs") + "/killed"
    command = batcher_command(*run_args(path, output, simulator.base_url, "--commit-seconds", "0.3"))
    first_machine, second_machine = tmp_path / "first", tmp_path / "second"

    run = subprocess.Popen(command, env=subprocess_env(BATCHER_STAGING=str(first_machine), **s3.env))
    deadline = time.monotonic() + 60
    while len(committed_lines(s3, output, "results.jsonl")) < 60:
        assert run.poll() is None and time.monotonic() < deadline, "no commit came"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    committed = {r["id"] for r in committed_lines(s3, output, "results.jsonl")}
    assert "job.json" in s3.names(output)  # the job the parts belong to, put when the session began
    (staged,) = first_machine.iterdir()
    answered_locally = (staged / "results.jsonl").read_bytes().count(b"\n")

    final = subprocess.run(
        command,
        env=subprocess_env(BATCHER_STAGING=str(second_machine), **s3.env),
        capture_output=True,
        text=True,
    )

    assert final.returncode == 0, final.stderr
    results = [json.loads(line) for line in s3.get(f"{output}/results.jsonl").splitlines()]
    assert len(results) == len({r["id"] for r in results}) == 300  # none lost, none written twice
    by_id = {r["id"]: r for r in rows}
    assert all(simulator.completions_for(prompt_for(by_id[i])) == 1 for i in committed)
    paid_twice = sum(simulator.completions_for(prompt_for(r)) - 1 for r in rows)
    # The bound of docs/object-stores.md: rows answered since the last commit, and those on the wire.
    assert paid_twice <= answered_locally - len(committed) + 16
    assert TEST_KEY not in final.stderr and s3.SECRET not in final.stderr


def test_a_second_run_is_refused_while_a_live_session_holds_the_lease(cli, simulator, s3, staging, reviews):
    output = s3.bucket("outputs") + "/held"
    alive = {
        "session": "other",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "expires": time.time() + 60,
    }
    s3.put(f"{output}/{LEASE}", json.dumps(alive).encode())

    live_staging = staging_for(output)
    live_staging.mkdir(parents=True)
    (live_staging / "results.jsonl").write_text("the live session's\n")

    refused = cli(*run_args(reviews, output, simulator.base_url))

    assert refused.exit_code == 2 and "in use by another batcher run" in refused.output
    assert simulator.requests == 0
    assert (live_staging / "results.jsonl").read_text() == "the live session's\n"  # left alone


@pytest.mark.parametrize("holder", ["a process of this machine that is gone", "a lease that lapsed"])
def test_a_lease_left_by_a_dead_session_is_taken_over(cli, simulator, s3, staging, reviews, holder):
    output = s3.bucket("outputs") + "/abandoned"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    if holder == "a lease that lapsed":
        lease = {"session": "old", "host": "elsewhere", "pid": 1, "expires": time.time() - 1}
    else:
        lease = {
            "session": "old",
            "host": socket.gethostname(),
            "pid": int(gone.stdout),
            "expires": time.time() + 60,
        }
    s3.put(f"{output}/{LEASE}", json.dumps(lease).encode())

    result = cli(*run_args(reviews, output, simulator.base_url))

    assert result.exit_code == 0, result.output
    assert LEASE not in s3.names(output)


def test_a_journal_part_missing_from_the_store_is_refused_naming_it(
    cli, simulator_factory, s3, staging, reviews
):
    simulator = simulator_factory(latency_ms=20)
    output = s3.bucket("outputs") + "/damaged"
    command = run_args(reviews, output, simulator.base_url, "--concurrency", "1", "--commit-seconds", "0.05")
    assert cli(*command).exit_code == 0
    parts = [n for n in s3.names(output) if n.startswith(f"{COMMITS}/results.jsonl/")]
    assert len(parts) >= 2, parts
    s3.filesystem().delete_file(f"{output.removeprefix('s3://')}/{parts[0]}")

    refused = cli(*command)

    assert refused.exit_code == 2, refused.output
    assert "results.jsonl is missing or was written twice" in refused.output
    assert f"{output}/{parts[1]}" in refused.output


def test_status_and_report_read_a_run_in_the_store(cli, simulator, s3, staging, reviews):
    output = s3.bucket("outputs") + "/shown"
    assert cli(*run_args(reviews, output, simulator.base_url)).exit_code == 0

    status, report = cli("status", output, "--json"), cli("report", output)

    assert status.exit_code == 0 and report.exit_code == 0, status.output + report.output
    info = json.loads(status.output)
    assert (info["directory"], info["rows_ok"], info["running"]) == (output, 30, False)
    assert b"<html" in s3.get(f"{output}/report.html")


def test_the_python_api_and_batch_api_mode_refuse_an_output_in_a_store_saying_why(cli, simulator, reviews):
    with pytest.raises(ConfigError, match="keeps its run directory on this machine"):
        batcher.run(
            reviews, model="m", prompt="{text}", base_url=simulator.base_url, output="s3://outputs/api"
        )
    batch = cli(*run_args(reviews, "s3://outputs/batch", simulator.base_url, "--mode", "batch-api"))

    assert batch.exit_code == 2 and "batch-api mode keeps its batches' log" in batch.output

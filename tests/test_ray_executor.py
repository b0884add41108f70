"""`--executor ray`: the same job sent by workers on a Ray cluster, under one limit, journaled once."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import (
    TEST_KEY,
    batcher_command,
    prompt_for,
    read_jsonl,
    review_rows,
    run_args,
    subprocess_env,
    wait_for_results,
    write_jsonl,
)
from tests.test_object_stores import parquet_bytes

RAY = ("--executor", "ray", "--workers", "3")


def busiest_second(arrivals) -> int:
    times = sorted(arrivals)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


@pytest.mark.slow  # about 6 s: 150 rows at 20 a second
def test_three_workers_send_a_job_under_one_limit_and_the_run_directory_is_a_local_runs(
    ray_cluster, cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(rpm=1200, rate_limit_headers="none")  # 20 a second, a 1 s bucket
    rows = review_rows(150)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(*run_args(path, run_dir, simulator.base_url, *RAY, "--rpm", "1200"))

    assert result.exit_code == 0, result.output
    results = read_jsonl(run_dir / "results.jsonl")
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)
    assert all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)
    assert (
        simulator.server.ledger.statuses.get("429", 0) <= 2
    )  # 1% (per-worker pacing: three times the limit)
    assert busiest_second(simulator.server.ledger.arrivals) <= 20 + 20
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (
        summary["status"] == "completed"
        and summary["rows_ok"] == 150
        and summary["session"]["requests_sent"] == simulator.requests  # the workers' counts, added up
    )


@pytest.mark.slow  # about 10 s
def test_three_workers_find_a_limit_nobody_announced_together_and_no_row_fails(
    ray_cluster, cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(rpm=3000, latency_ms=50, rate_limit_headers="none", retry_after_ms=200)
    rows = review_rows(400)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(*run_args(path, run_dir, simulator.base_url, *RAY))  # no --rpm: found from the 429s

    assert result.exit_code == 0, result.output
    assert len(read_jsonl(run_dir / "results.jsonl")) == 400 and read_jsonl(run_dir / "errors.jsonl") == []
    statuses = simulator.server.ledger.statuses
    # One process on this case: 11% 429s. Three workers, each with a rate of its own: 69%; with
    # one rate kept per worker by the limits actor: 11-18%; with one rate and one window for the
    # cluster, cut once per congestion event: 1-7.4% (three runs). Bound: one process's figure.
    assert statuses.get("429", 0) / simulator.requests <= 0.12, dict(statuses)


def ray_worker_pids() -> list[int]:
    """The processes of batcher's Ray workers on this machine (Ray Data's actors of SendBatches)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"MapBatches(SendBatches)" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def start_on_the_cluster(ray_cluster, command: list[str]) -> subprocess.Popen:
    """`batcher run ...` in a process of its own, joining the test session's Ray cluster."""
    env = subprocess_env(RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address, RAY_AUTH_MODE="disabled")
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_worker_loses_no_row_and_the_run_ends_complete(
    ray_cluster, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=30)
    rows = review_rows(600)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    command = batcher_command(*run_args(path, run_dir, simulator.base_url, *RAY, "--concurrency", "4"))
    run = start_on_the_cluster(ray_cluster, command)
    wait_for_results(run_dir, 100, run, timeout=60)
    victims = ray_worker_pids()
    assert victims, "no worker process found"
    os.kill(victims[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=120)

    assert run.returncode == 0, stderr
    results = read_jsonl(run_dir / "results.jsonl")
    assert len(results) == len({r["id"] for r in results}) == 600  # none lost, none written twice
    paid_twice = sum(simulator.completions_for(prompt_for(r)) - 1 for r in rows)
    # At most the dead worker's requests in flight (--concurrency 4): the rows it finished are in its
    # journal part, taken from there by the worker handed its batches again.
    assert paid_twice <= 4, paid_twice


@pytest.mark.slow
def test_a_ray_run_stopped_by_ctrl_c_then_killed_is_finished_by_the_same_command_each_row_once(
    ray_cluster, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=100)
    rows = review_rows(800)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    # 2 workers, each with 2 batches of 64 rows out at once: 256 rows on the wire at most.
    flags = ("--executor", "ray", "--workers", "2", "--concurrency", "8")
    command = batcher_command(*run_args(path, run_dir, simulator.base_url, *flags))

    def start():
        return start_on_the_cluster(ray_cluster, command)

    def journaled() -> set[str]:
        return {r["id"] for r in read_jsonl(run_dir / "results.jsonl")}

    def paid() -> int:
        return sum(simulator.completions_for(prompt_for(r)) for r in rows)

    stopped = start()  # Ctrl-C: the batches out are finished and kept, no other begun
    wait_for_results(run_dir, 100, stopped, timeout=60)
    stopped.send_signal(signal.SIGINT)
    _, stderr = stopped.communicate(timeout=60)
    kept = journaled()
    assert stopped.returncode == 130, stderr
    assert len(kept) <= 512  # journaled when it was stopped (128 or 256), and the batches then out
    assert paid() == len(kept)  # every row sent was kept

    killed = start()  # kill -9: the driver and its workers die mid-run
    wait_for_results(run_dir, len(kept) + 64, killed, timeout=60)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    done_at_kill = journaled()
    time.sleep(1)  # (its workers die with it)
    final = start()
    out, err = final.communicate(timeout=120)

    assert final.returncode == 0, err
    results = read_jsonl(run_dir / "results.jsonl")
    assert len(results) == len({r["id"] for r in results}) == 800  # none lost, none written twice
    by_id = {r["id"]: r for r in rows}
    assert all(simulator.completions_for(prompt_for(by_id[i])) == 1 for i in done_at_kill)
    # The bound of docs/ray.md: the requests in flight, workers x --concurrency (each row finished
    # was in a worker's journal part, which the next session takes).
    assert paid() - 800 <= 2 * 8, paid() - 800
    assert TEST_KEY not in err + out


def test_a_key_the_server_refuses_stops_every_worker_and_the_run_as_a_local_one_stops(
    ray_cluster, cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(api_key="sk-the-right-one")
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(2000))

    result = cli(*run_args(path, run_dir, simulator.base_url, *RAY))

    assert result.exit_code == 3, result.output
    assert f"{simulator.base_url} refused the key (HTTP 401" in result.output
    assert read_jsonl(run_dir / "errors.jsonl") == []  # the job is wrong, not its rows
    assert simulator.requests <= 3 * 2, simulator.requests  # the first of each batch then out, at most


def test_a_ray_run_reads_its_input_from_s3_and_commits_its_output_there(
    ray_cluster, cli, simulator, s3, tmp_path, monkeypatch
):
    monkeypatch.setenv("BATCHER_STAGING", str(tmp_path / "staging"))
    rows = review_rows(120)
    source = s3.put("s3://inputs/for-ray.parquet", parquet_bytes(rows, row_group_size=32))
    output = s3.bucket("outputs") + "/by-ray"

    result = cli(*run_args(source, output, simulator.base_url, *RAY, "--output-format", "parquet"))

    assert result.exit_code == 0, result.output
    table = pq.read_table(io.BytesIO(s3.get(f"{output}/results.parquet")))
    assert sorted(table["id"].to_pylist()) == sorted(r["id"] for r in rows)
    assert all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)
    assert json.loads(s3.get(f"{output}/summary.json"))["rows_ok"] == 120


@pytest.mark.slow  # a few seconds: a Ray Data pipeline (one run for two promises: each costs one)
def test_a_ray_run_with_a_limit_sends_the_first_rows_with_the_gateways_headers_from_its_workers(
    ray_cluster, cli, simulator, tmp_path, run_dir
):
    from tests.test_gateways import GATEWAY_SECRET, VERSION, header, seen, to

    path = write_jsonl(tmp_path / "in.jsonl", review_rows(200))
    gateway = ("--header", "X-Gateway-Secret: env:GATEWAY_KEY", *VERSION)

    # (the workers' own environment has no GATEWAY_KEY: it comes with their work, as the key does)
    result = cli(
        *run_args(path, run_dir, simulator.base_url, *RAY, "--limit", "20", *gateway),
        env={"GATEWAY_KEY": GATEWAY_SECRET},
    )

    assert result.exit_code == 0, result.output
    assert sorted(r["row_number"] for r in read_jsonl(run_dir / "results.jsonl")) == list(range(1, 21))
    chats = to("/v1/chat/completions", seen(simulator))
    assert len(chats) == simulator.requests == 20
    assert all(header(r, "X-Gateway-Secret") == GATEWAY_SECRET for r in chats)
    assert all(r["query"] == {"api-version": "2024-10-21"} for r in chats)
    assert all(header(r, "Authorization") == "[redacted]" for r in chats)

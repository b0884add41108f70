"""`--executor ray`: the same job sent by workers on a Ray cluster, under one limit, journaled once."""

from __future__ import annotations

import io
import json
import os
import re
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
from tests.nginx import Nginx, nginx_binary
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


@pytest.fixture
def nginx_proxy():
    """Start nginx (Debian's nginx-light, installed if missing) as a rate-limiting proxy."""
    if nginx_binary() is None:
        pytest.skip("nginx is missing and cannot be installed here (needs root and apt-get)")
    started = []

    def start(upstream: str, rate: int, burst: int) -> Nginx:
        started.append(Nginx(upstream, rate=rate, burst=burst))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


@pytest.mark.slow  # about 20 s: 400 rows at 40 a second, after the run starts its Ray workers
def test_three_workers_behind_a_rate_limiting_proxy_that_sends_no_headers_keep_to_its_rate(
    ray_cluster, cli, simulator_factory, nginx_proxy, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=50)  # no limit of its own: the proxy's is the limit
    proxy = nginx_proxy(simulator.base_url.removeprefix("http://").removesuffix("/v1"), rate=40, burst=40)
    rows = review_rows(400)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(*run_args(path, run_dir, proxy.base_url, *RAY))  # no --rpm, no headers: found

    assert result.exit_code == 0, result.output
    assert len(read_jsonl(run_dir / "results.jsonl")) == 400 and read_jsonl(run_dir / "errors.jsonl") == []
    assert all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)  # the proxy let each once
    session = json.loads((run_dir / "summary.json").read_text())["session"]
    arrivals = sorted(simulator.server.ledger.arrivals)
    through = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    # The 429s are the proxy's: the client counts them. Here: 1 of 401 in three runs; benchmark
    # (2,000 rows at 30 r/s): 1.8% for Ray, 1.0% for one process. Bound: the target, 3%.
    assert session["rate_limited_429"] / session["requests_sent"] <= 0.03, (session, through)
    assert through >= 0.7 * 40, (through, session)  # a second, slow start included (here 32-38)


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


def start_rows_on_the_cluster(ray_cluster, simulator, tmp_path, run_dir, n: int):
    """`n` review rows sent by 3 workers of `--concurrency 4`, in a `batcher run` process of its own;
    (the process, the rows)."""
    rows = review_rows(n)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    command = batcher_command(*run_args(path, run_dir, simulator.base_url, *RAY, "--concurrency", "4"))
    return start_on_the_cluster(ray_cluster, command), rows


def wait_for_rows_in_parts(run_dir: Path, at_least: int, process, timeout: float = 60) -> None:
    """Until the workers of a running process have journaled `at_least` rows in their parts."""
    deadline = time.monotonic() + timeout
    parts = run_dir / ".batcher" / "parts"
    while sum(p.read_bytes().count(b"\n") for p in parts.glob("*/.batcher/results.jsonl")) < at_least:
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {at_least} rows in the parts: {process.communicate()}")
        time.sleep(0.02)


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError):
        return None


#: A line Ray writes at warning or error level: its Python logger's, its core's (`[date ... E pid tid]`),
#: or a Python warning of Ray Data's (`...: UserWarning: ...`).
RAY_COMPLAINT = re.compile(
    r"\b(WARNING|ERROR)\b|^\[[\d-]+ [\d:,]+ [WEF] \d+ \d+\]|\w+Warning: ", re.MULTILINE
)


def test_a_job_on_a_cluster_of_two_nodes_joined_by_address_is_sent_by_its_workers_and_ray_says_nothing(
    ray_cluster, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=20)
    run, _ = start_rows_on_the_cluster(ray_cluster, simulator, tmp_path, run_dir, 900)
    raylets, nodes_used = ray_cluster.nodes_started.raylet_pids(), set()
    while run.poll() is None:  # which node's raylet started each worker of the run
        nodes_used |= {parent_of(pid) for pid in ray_worker_pids()} & raylets
        time.sleep(0.1)
    _, stderr = run.communicate()

    assert run.returncode == 0, stderr
    results = read_jsonl(run_dir / "results.jsonl")
    assert len(results) == len({r["id"] for r in results}) == 900
    # Started by the raylets of the cluster's nodes (which of the two is Ray's to choose: SPREAD put
    # the three workers on both in some runs, on one in others).
    assert len(raylets) >= 2 and nodes_used, (raylets, nodes_used)
    # Ray Data's false alarm about its actors' arguments (ray#57733) among them, before quiet.py.
    assert not RAY_COMPLAINT.search(stderr), stderr


@pytest.mark.slow
def test_a_job_of_one_batch_starts_one_worker_of_three_and_ray_says_nothing(
    ray_cluster, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory()
    before, started, most = set(ray_worker_pids()), set(), 0
    run, _ = start_rows_on_the_cluster(ray_cluster, simulator, tmp_path, run_dir, 10)
    while run.poll() is None:
        alive = set(ray_worker_pids()) - before
        started, most = started | alive, max(most, len(alive))
        time.sleep(0.05)
    _, stderr = run.communicate()

    assert run.returncode == 0, stderr
    assert len(read_jsonl(run_dir / "results.jsonl")) == 10
    # 10 rows are one batch: two more workers would only idle. (Counted alive at once: on a loaded
    # machine Ray has been seen to put the one worker in a second process after the first ended.)
    assert most == 1, started
    # Ray Data warned of the idle workers ("The minimum number of concurrent actors ... is set to 3").
    assert not RAY_COMPLAINT.search(stderr), stderr


def test_a_killed_worker_loses_no_row_and_the_run_ends_complete(
    ray_cluster, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=30)
    run, rows = start_rows_on_the_cluster(ray_cluster, simulator, tmp_path, run_dir, 600)
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
    # 2 workers of 8 requests in flight each, at 100 ms: 160 rows a second, 5 s for the 800 rows.
    flags = ("--executor", "ray", "--workers", "2", "--concurrency", "8")
    command = batcher_command(*run_args(path, run_dir, simulator.base_url, *flags))

    def start():
        return start_on_the_cluster(ray_cluster, command)

    def journaled() -> set[str]:
        return {r["id"] for r in read_jsonl(run_dir / "results.jsonl")}

    def paid() -> int:
        return sum(simulator.completions_for(prompt_for(r)) for r in rows)

    stopped = start()  # Ctrl-C: the requests on the wire are answered and kept, no other sent
    wait_for_rows_in_parts(run_dir, 100, stopped)
    stopped.send_signal(signal.SIGINT)
    _, stderr = stopped.communicate(timeout=60)
    kept = journaled()
    assert stopped.returncode == 130, stderr
    # Stopped within the workers' look at the switch (0.2 s: 32 rows) and the requests in flight (16)
    # of the 100 rows, not at the end of the 256-row batches being sent (512 rows).
    assert 100 <= len(kept) <= 300, len(kept)
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


@pytest.mark.slow  # two runs of 300 rows, one local, one on the cluster
def test_max_cost_stops_the_cluster_where_a_local_run_stops_and_a_larger_one_resumes(
    ray_cluster, cli, simulator_factory, tmp_path
):
    rows = review_rows(300)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    # $1 a token: each request costs about 20-30 prompt tokens + 1-5 completion tokens (max_tokens 5).
    priced = ("--price", "1000000,1000000", "--max-tokens", "5", "--concurrency", "4")
    spent = {}
    for side, flags in (("local", ()), ("ray", RAY)):
        simulator = simulator_factory(latency_ms=20)
        out = tmp_path / side
        stopped = cli(*run_args(path, out, simulator.base_url, *flags, *priced, "--max-cost", "3000"))

        assert stopped.exit_code == 3, stopped.output
        assert "budget reached" in stopped.output
        spent[side] = summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "budget_reached" and summary["cost_usd"] <= 3000
        assert simulator.requests == summary["rows_ok"]  # every answer paid for is kept

    # Each request reserves its worst case (about 35 tokens here) against the one budget: the
    # cluster stops short of it by at most the reservations in flight (3 workers x 4), as one
    # process stops short of it by its own (4).
    assert spent["ray"]["rows_ok"] >= spent["local"]["rows_ok"] - 3 * 4, (spent["ray"], spent["local"])

    more = ("--max-cost", "100000")
    resumed = cli(*run_args(path, tmp_path / "ray", simulator.base_url, *RAY, *priced, *more))

    assert resumed.exit_code == 0, resumed.output
    ids = [r["id"] for r in read_jsonl(tmp_path / "ray" / "results.jsonl")]
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert simulator.requests == 300


@pytest.mark.slow  # three runs on the cluster
def test_the_cache_and_dedupe_hold_for_the_cluster_a_second_run_pays_nothing(
    ray_cluster, cli, simulator_factory, tmp_path
):
    simulator = simulator_factory(latency_ms=10)
    # 50 distinct texts, each 12 times, spread over the 600 rows and so over every worker's batches.
    rows = [{"id": f"r{i}", "text": f"review {i % 50}: it does what it says"} for i in range(600)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    cache = tmp_path / "cache"
    common = (*RAY, "--concurrency", "4", "--temperature", "0", "--cache", cache)

    first = cli(*run_args(path, tmp_path / "one", simulator.base_url, *common))

    assert first.exit_code == 0, first.output
    # Each text once, give or take identical requests on the wire at once on two workers (their
    # first batches start together: 3 workers x 4 in flight).
    assert 50 <= simulator.requests <= 50 + 3 * 4, simulator.requests
    paid = simulator.requests

    second = cli(*run_args(path, tmp_path / "two", simulator.base_url, *common))

    assert second.exit_code == 0, second.output
    assert simulator.requests == paid  # the second run paid nothing: every answer from the cache
    one = {r["id"]: r["content"] for r in read_jsonl(tmp_path / "one" / "results.jsonl")}
    two = read_jsonl(tmp_path / "two" / "results.jsonl")
    assert {r["id"]: r["content"] for r in two} == one
    assert all(r["reused_from"] == "cache" and r["cost_usd"] == 0 for r in two)

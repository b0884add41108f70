"""The key never reaches a file, a log line, stdout or stderr, whatever the run meets."""

from __future__ import annotations

import signal
import subprocess

import pytest

from batcher.job import SimulatorConfig, build_job
from batcher.kinds.chat import ChatKind
from batcher.kinds.prompts import RequestBuilder
from batcher.transports.client import ApiClient
from tests.helpers import (
    batcher_command,
    review_rows,
    run_args,
    subprocess_env,
    wait_for_results,
    write_jsonl,
)

KEY = "sk-LEAKCHECK-7f3a9c2e5b1d4f6a8c0e2b4d6f8a0c1e"


def run_with_key(args, key=KEY, **popen):
    return subprocess.run(
        batcher_command(*args),
        env=subprocess_env(OPENAI_API_KEY=key),
        capture_output=True,
        text=True,
        timeout=120,
        **popen,
    )


@pytest.mark.slow  # nine runs and reports, each a process of its own
def test_whole_jobs_of_every_kind_leave_no_trace_of_the_key(simulator_factory, tmp_path):
    rows = review_rows(120)
    for i in (5, 77):
        rows[i]["text"] = "BAD row"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    faulty = simulator_factory(  # every kind of fault, each retried and logged (seeded: each occurs)
        error_rate=0.05,
        drop_rate=0.025,
        garbage_rate=0.025,
        html_rate=0.025,
        reject_marker="BAD",
        latency_ms=30,
        api_key=KEY,
    )
    outputs = []

    # a crash part-way, then a resume, both logging every retry and failure
    run_dir = tmp_path / "run"
    crashed = subprocess.Popen(
        batcher_command(*run_args(path, run_dir, faulty.base_url, "--verbose")),
        env=subprocess_env(OPENAI_API_KEY=KEY),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_results(run_dir, 20, crashed)
    crashed.send_signal(signal.SIGKILL)
    outputs += crashed.communicate()
    resumed = run_with_key(run_args(path, run_dir, faulty.base_url, "--verbose"))
    outputs += [resumed.stdout, resumed.stderr]
    assert resumed.returncode == 1, resumed.stderr  # the two bad rows
    assert {"400", "500", "502", "dropped"} <= set(faulty.server.statuses)

    # a refused key, and a key for another server: aborts
    other = simulator_factory(api_key="sk-someone-else")
    refused = run_with_key(run_args(path, tmp_path / "refused", other.base_url, "--verbose"))
    outputs += [refused.stdout, refused.stderr]
    assert refused.returncode == 3

    # a gateway that puts the key it was given in its 401 message, mid-run
    echoing = simulator_factory(api_key=KEY, fail_auth_after=10, echo_key=True)
    revoked = run_with_key(run_args(path, tmp_path / "echoed", echoing.base_url, "--verbose"))
    outputs += [revoked.stdout, revoked.stderr]
    assert revoked.returncode == 3 and "Incorrect API key provided: [the key]" in revoked.stderr
    for directory in (run_dir, tmp_path / "echoed"):
        report = run_with_key(["report", directory])
        outputs += [report.stdout, report.stderr]

    # the other output formats, and status
    healthy = simulator_factory(reject_marker="BAD", api_key=KEY)
    for fmt in ("parquet", "openai-batch"):
        done = run_with_key(run_args(path, tmp_path / fmt, healthy.base_url, "--output-format", fmt, "-v"))
        outputs += [done.stdout, done.stderr]
    status = run_with_key(["status", run_dir, "--json"])
    outputs.append(status.stdout)

    for text in outputs:
        assert KEY not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != path]
    assert len(files) > 10
    for file in files:
        assert KEY.encode() not in file.read_bytes(), file
    assert "Traceback" not in "".join(outputs)


def test_no_repr_of_the_configuration_shows_a_key():
    kind = ChatKind(RequestBuilder("template", template="{text}", system=None, defaults={}, id_column="id"))
    client = ApiClient("http://127.0.0.1:1/v1", KEY, kind=kind, timeout=1, connections=1)
    simulated = SimulatorConfig(api_key=KEY)
    job = build_job({"input": "x.jsonl", "output": "o", "simulator": {"rpm": 5}})

    assert KEY not in repr(client)
    assert KEY not in repr(simulated) and "api_key='***'" not in repr(job)
    assert KEY not in repr(job)


def test_a_key_in_a_nested_job_table_is_refused(cli, tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(f'input = "x.jsonl"\noutput = "o"\n[simulator]\napi_key = "{KEY}"\n')

    result = cli("run", path)

    assert result.exit_code == 2
    assert "never hold keys" in result.output
    assert KEY not in result.output

"""What a new user reads in their first hour is true: counts, plurals, costs, causes, help, and a server
that stops as servers do."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

from batcher.words import plural, usd
from tests.helpers import batcher_command, review_rows, run_args, run_subprocess, subprocess_env, write_jsonl


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_counted_as_an_attempt_not_a_request_sent(tmp_path, run_dir):
    path = write_jsonl(tmp_path / "reviews.jsonl", review_rows(2))

    done = run_subprocess(*run_args(path, run_dir, f"http://127.0.0.1:{_closed_port()}/v1"))

    assert done.returncode == 3, done.stderr
    session = json.loads((run_dir / "summary.json").read_text())["session"]
    assert session["attempts"] >= 1
    assert session["requests_sent"] == session["answers"] == 0
    assert session["connection_failures"] == session["attempts"]
    assert "0 requests answered" in done.stderr and "could not connect" in done.stderr


def test_answers_and_attempts_add_up_on_a_server_that_answers(tmp_path, simulator_factory, run_dir):
    simulator = simulator_factory(error_rate=0.3, seed=7)
    path = write_jsonl(tmp_path / "reviews.jsonl", review_rows(20))

    done = run_subprocess(*run_args(path, run_dir, simulator.base_url))

    assert done.returncode == 0, done.stderr
    session = json.loads((run_dir / "summary.json").read_text())["session"]
    assert session["answers"] == session["attempts"] == session["requests_sent"] == simulator.requests
    assert session["attempts"] == 20 + session["retries"] and session["connection_failures"] == 0


def test_a_base_url_that_answers_404_says_http_404_once(tmp_path, simulator, run_dir):
    path = write_jsonl(tmp_path / "reviews.jsonl", review_rows(3))
    wrong = simulator.base_url.removesuffix("/v1") + "/nothing-here"

    done = run_subprocess(*run_args(path, run_dir, wrong))

    assert done.returncode == 3, done.stderr
    assert "nothing answers at" in done.stderr
    assert done.stderr.count("HTTP 404") == 1, done.stderr


def test_one_row_is_said_in_the_singular(tmp_path, simulator, run_dir):
    path = write_jsonl(tmp_path / "one.jsonl", review_rows(1))

    done = run_subprocess(*run_args(path, run_dir, simulator.base_url))

    assert done.returncode == 0, done.stderr
    assert "of 1 row " in done.stderr and "1 request answered" in done.stderr
    assert "(s)" not in done.stderr


def test_a_small_cost_shows_its_digits(tmp_path, simulator, run_dir, cli):
    path = write_jsonl(tmp_path / "one.jsonl", review_rows(1))

    done = run_subprocess(*run_args(path, run_dir, simulator.base_url, model="gpt-4o-mini"))
    status = cli("status", run_dir)

    cost = json.loads((run_dir / "summary.json").read_text())["cost_usd"]
    assert 0 < cost < 0.0001
    assert usd(cost) in done.stderr and usd(cost) in status.output
    assert "$0.0000 " not in done.stderr + status.output


def test_sums_of_money_keep_two_significant_digits_below_a_cent():
    assert [usd(x) for x in (0, 0.0003, 0.00031234, 0.0123, 0.5, 1234.567)] == [
        "$0.00",
        "$0.0003",
        "$0.00031",
        "$0.0123",
        "$0.5000",
        "$1,234.57",
    ]
    assert [plural(1, "request"), plural(2, "retry", "retries"), plural(1500, "row")] == [
        "1 request",
        "2 retries",
        "1,500 rows",
    ]


def test_help_names_embeddings_and_the_batch_api():
    shown = run_subprocess("--help")

    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "embeddings" in text and "Batch API" in text and "Chat Completions" in text


def test_batcher_simulate_stopped_with_sigterm_exits_0():
    server = subprocess.Popen(
        batcher_command("simulate", "--port", str(_closed_port())),
        env=subprocess_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening on" in server.stderr.readline()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            time.sleep(0.1)

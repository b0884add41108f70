"""What each kind of answer does to a row and to the run."""

from __future__ import annotations

import json

from tests.helpers import TEST_KEY, read_jsonl, review_rows, run_args, write_jsonl


def run(cli, simulator, path, run_dir, *extra, env=None):
    return cli(*run_args(path, run_dir, simulator.base_url, *extra), env=env)


def test_bad_request_fails_the_row_at_once_with_the_servers_message_and_param(
    cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(reject_marker="FORBIDDEN")
    rows = review_rows(6)
    rows[2]["text"] = "FORBIDDEN words here"
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = run(cli, simulator, path, run_dir)

    assert result.exit_code == 1, result.output
    errors = read_jsonl(run_dir / "errors.jsonl")
    assert [e["id"] for e in errors] == ["r2"]
    assert errors[0]["attempts"] == 1
    assert errors[0]["error"] == {
        "type": "invalid_request_error",
        "status": 400,
        "param": "messages",
        "message": "This request is rejected by the simulator's reject_marker.",
    }
    assert len(read_jsonl(run_dir / "results.jsonl")) == 5
    assert simulator.requests == 6


def test_invalid_parameter_is_reported_with_its_param(cli, simulator, tmp_path, run_dir):
    rows = [{"id": "hot", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)

    result = cli("run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m")

    assert result.exit_code == 1
    [error] = read_jsonl(run_dir / "errors.jsonl")
    assert error["error"]["param"] == "temperature"
    assert error["error"]["type"] == "invalid_request_error"


def test_refused_key_stops_the_run_and_marks_no_row_failed(cli, simulator_factory, reviews, run_dir):
    simulator = simulator_factory(api_key="sk-the-right-one")

    refused = run(cli, simulator, reviews, run_dir)

    assert refused.exit_code == 3
    assert "refused the key" in refused.output and "OPENAI_API_KEY" in refused.output
    assert read_jsonl(run_dir / "errors.jsonl") == []
    assert simulator.requests <= 16  # at most what was in flight when the first 401 came back

    fixed = run(cli, simulator, reviews, run_dir, env={"OPENAI_API_KEY": "sk-the-right-one"})

    assert fixed.exit_code == 0, fixed.output
    assert len(read_jsonl(run_dir / "results.jsonl")) == 30


def test_server_errors_dropped_connections_and_broken_bodies_are_retried(
    cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(error_rate=0.1, drop_rate=0.05, garbage_rate=0.05, seed=4)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(60))

    result = run(cli, simulator, path, run_dir, "--max-retries", "12")

    assert result.exit_code == 0, result.output
    statuses = simulator.server.statuses
    assert statuses["500"] > 0 and statuses["dropped"] > 0 and statuses["200"] > 60  # (broken 200s)
    results = read_jsonl(run_dir / "results.jsonl")
    assert len(results) == 60 and len({r["id"] for r in results}) == 60
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["session"]["retries"] > 10
    assert summary["session"]["requests_sent"] == 60 + summary["session"]["retries"]
    assert any(r["attempts"] > 1 for r in results)


def test_retries_give_up_after_max_retries_and_say_why(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(error_rate=1.0)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(2))

    result = run(cli, simulator, path, run_dir, "--max-retries", "2")

    assert result.exit_code == 1
    errors = read_jsonl(run_dir / "errors.jsonl")
    assert {e["attempts"] for e in errors} == {3}
    assert {e["error"]["type"] for e in errors} == {"internal_error"}
    assert simulator.requests == 6


def test_timeouts_are_retried_then_reported(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(latency_ms=1500, latency_jitter=0)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(2))

    result = run(cli, simulator, path, run_dir, "--timeout", "0.3", "--max-retries", "1")

    assert result.exit_code == 1
    errors = read_jsonl(run_dir / "errors.jsonl")
    assert [e["error"]["type"] for e in errors] == ["timeout", "timeout"]
    assert {e["attempts"] for e in errors} == {2}


def test_rate_limited_run_backs_off_and_completes(cli, simulator_factory, tmp_path, run_dir):
    # A 10-request burst, then 10 a second; announced in no header, so the run must meet its 429s.
    # (With the limit in headers the client paces itself to it, and a 429 is down to timing.)
    simulator = simulator_factory(rpm=600, rate_limit_headers="none")
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(20))

    result = run(cli, simulator, path, run_dir, "--concurrency", "16")

    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows_ok"] == 20
    assert summary["session"]["rate_limited_429"] > 0
    assert simulator.server.statuses["429"] == summary["session"]["rate_limited_429"]


def test_client_limit_keeps_the_server_within_its_limit(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(rpm=1200)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(60))

    result = run(cli, simulator, path, run_dir, "--rpm", "1200", "--concurrency", "32")

    assert result.exit_code == 0, result.output
    arrivals = sorted(simulator.server.arrivals)
    # No second of the run holds more than one second's rate plus one bucket's burst (and a
    # little for the jitter between admission here and arrival there, on a loaded machine).
    for i, start in enumerate(arrivals):
        in_window = sum(1 for t in arrivals[i:] if t - start < 1.0)
        assert in_window <= 20 + 20 + 3
    assert arrivals[-1] - arrivals[0] >= (60 - 20) / 20 * 0.9
    assert simulator.server.statuses.get("429", 0) <= 2


def test_tokens_per_minute_limit_paces_long_requests(cli, simulator, tmp_path, run_dir):
    rows = [{"id": i, "text": f"{i} " + "word " * 400} for i in range(6)]  # ~500 tokens each with max_tokens
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = run(cli, simulator, path, run_dir, "--tpm", "60000", "--max-tokens", "100")

    assert result.exit_code == 0, result.output
    arrivals = sorted(simulator.server.arrivals)
    # 1,000 tokens a second: 6 requests of ~600 tokens cannot all pass in the first second.
    assert arrivals[-1] - arrivals[0] >= 1.5


def test_key_never_appears_in_output_or_files(cli, simulator_factory, reviews, run_dir):
    simulator = simulator_factory(api_key="sk-other", error_rate=0.3)

    result = run(cli, simulator, reviews, run_dir, "--verbose")

    assert TEST_KEY not in result.output
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert TEST_KEY not in path.read_text(errors="replace"), path

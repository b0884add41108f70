"""De-duplication within a run, and the answer cache across runs."""

from __future__ import annotations

import json

from tests.helpers import read_jsonl, run_args, write_jsonl

TEXTS = ["I love it", "It broke", "It is grey", "Great value", "Too loud"]


def repeated_rows(n: int, marker: str = "") -> list[dict]:
    return [{"id": f"r{i}", "text": marker + TEXTS[i % len(TEXTS)]} for i in range(n)]


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_identical_requests_are_sent_once_and_answer_every_row(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(latency_ms=30)  # duplicates arrive while their twin is on the wire
    path = write_jsonl(tmp_path / "in.jsonl", repeated_rows(30))

    result = cli(*run_args(path, run_dir, simulator.base_url, "--concurrency", "8", "--labels", "a,b,c"))

    assert result.exit_code == 0, result.output
    assert simulator.requests == 5
    results = {r["id"]: r for r in read_jsonl(run_dir / "results.jsonl")}
    assert len(results) == 30
    reused = [r for r in results.values() if "reused_from" in r]
    assert len(reused) == 25 and summary(run_dir)["session"]["rows_deduplicated"] == 25
    for row in reused:
        original = results[row["reused_from"]]
        assert "reused_from" not in original
        assert (row["content"], row["label"]) == (original["content"], original["label"])
        assert row["usage"] is None and row["cost_usd"] == 0
    assert summary(run_dir)["total_tokens"] == sum(
        r["usage"]["total_tokens"] for r in results.values() if r["usage"]
    )


def test_no_dedupe_sends_every_row(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", repeated_rows(10))

    result = cli(*run_args(path, run_dir, simulator.base_url, "--no-dedupe"))

    assert result.exit_code == 0
    assert simulator.requests == 10
    assert not any("reused_from" in r for r in read_jsonl(run_dir / "results.jsonl"))


def test_rows_whose_twin_failed_are_sent_themselves(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(reject_marker="BAD", latency_ms=20)
    path = write_jsonl(tmp_path / "in.jsonl", repeated_rows(6, marker="BAD "))

    result = cli(*run_args(path, run_dir, simulator.base_url, "--concurrency", "6"))

    assert result.exit_code == 1
    assert len(read_jsonl(run_dir / "errors.jsonl")) == 6
    assert simulator.requests == 6  # the first of each pair failed, so its twin asked for itself


def test_the_cache_answers_identical_requests_at_temperature_zero_in_later_runs(cli, simulator, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", repeated_rows(5))
    cache = tmp_path / "cache"

    first = cli(*run_args(path, tmp_path / "one", simulator.base_url, "--temperature", "0", "--cache", cache))
    second = cli(
        *run_args(path, tmp_path / "two", simulator.base_url, "--temperature", "0", "--cache", cache)
    )
    warmer = cli(
        *run_args(path, tmp_path / "three", simulator.base_url, "--temperature", "0.7", "--cache", cache)
    )

    assert first.exit_code == second.exit_code == warmer.exit_code == 0
    assert simulator.requests == 5 + 0 + 5  # the second run paid nothing; temperature 0.7 is not cached
    one = {r["id"]: r["content"] for r in read_jsonl(tmp_path / "one" / "results.jsonl")}
    two = read_jsonl(tmp_path / "two" / "results.jsonl")
    assert {r["id"]: r["content"] for r in two} == one
    assert all(r["reused_from"] == "cache" and r["cost_usd"] == 0 for r in two)
    assert summary(tmp_path / "two")["session"]["rows_from_cache"] == 5
    assert (cache / "answers.sqlite3").exists()


def test_an_unusable_cache_directory_is_refused_before_sending(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", repeated_rows(2))
    blocker = tmp_path / "file"
    blocker.write_text("")

    result = cli(*run_args(path, run_dir, simulator.base_url, "--cache", blocker / "cache"))

    assert result.exit_code == 2, result.output
    assert "cannot be used as an answer cache" in result.output
    assert simulator.requests == 0

"""What a new user meets first: the shipped job files and `batcher simulate`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
from conftest import batcher_command, read_jsonl, review_rows, run_args, subprocess_env, write_jsonl

JOBS = Path(__file__).resolve().parent.parent / "jobs"


def test_the_shipped_jobs_run_out_of_the_box(tmp_path):
    two_endpoints = subprocess.Popen(
        batcher_command(
            "run", JOBS / "classify-reviews-two-endpoints.toml", "-o", tmp_path / "two", "--quiet"
        ),
        env=subprocess_env(OPENAI_API_KEY=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    facts = subprocess.Popen(
        batcher_command("run", JOBS / "extract-review-facts.toml", "-o", tmp_path / "facts", "--quiet"),
        env=subprocess_env(OPENAI_API_KEY=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    classify = subprocess.Popen(
        batcher_command("run", JOBS / "classify-reviews.toml", "-o", tmp_path / "classify", "--quiet"),
        env=subprocess_env(OPENAI_API_KEY=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    summarize = subprocess.run(
        batcher_command("run", JOBS / "summarize-articles.toml", "-o", tmp_path / "summarize", "--quiet"),
        env=subprocess_env(OPENAI_API_KEY=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    _, classify_err = classify.communicate(timeout=120)

    assert classify.returncode == 0, classify_err
    results = read_jsonl(tmp_path / "classify" / "results.jsonl")
    assert {r["label"] for r in results} == {"positive", "negative", "neutral"}
    assert all(json.loads(r["content"]) == {"label": r["label"]} for r in results)
    assert json.loads((tmp_path / "classify" / "summary.json").read_text())["rows_ok"] == 300
    _, facts_err = facts.communicate(timeout=120)
    assert facts.returncode == 0, facts_err
    facts_table = pq.read_table(tmp_path / "facts" / "results.parquet")
    assert facts_table.num_rows == 300
    assert str(facts_table.schema.field("stars_guess").type) == "int64"
    assert set(facts_table["sentiment"].to_pylist()) == {"positive", "negative", "neutral"}
    _, two_err = two_endpoints.communicate(timeout=120)
    assert two_endpoints.returncode == 0, two_err
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["rows_ok"] == 300 and two["session"]["rows_deduplicated"] > 0
    assert all(e["answered"] > 0 for e in two["session"]["endpoints"].values())
    assert summarize.returncode == 0, summarize.stderr
    table = pq.read_table(tmp_path / "summarize" / "results.parquet")
    assert table.num_rows == 120
    assert {"content", "title", "published", "usage"} <= set(table.column_names)


def test_simulate_serves_a_run_named_by_openai_base_url(tmp_path):
    server = subprocess.Popen(
        batcher_command("simulate", "--port", "0", "--latency-ms", "5"),
        env=subprocess_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stderr.readline()
        base_url = re.search(r"listening on (\S+)", line).group(1)
        path = write_jsonl(tmp_path / "in.jsonl", review_rows(25))
        args = run_args(path, tmp_path / "run", base_url)
        args.remove("--base-url")
        args.remove(base_url)

        result = subprocess.run(
            batcher_command(*args),
            env=subprocess_env(OPENAI_BASE_URL=base_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert base_url.startswith("http://127.0.0.1:")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "run" / "results.jsonl")) == 25

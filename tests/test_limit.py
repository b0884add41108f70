"""`--limit N`: a few rows first, then the same job without it continues with the rest."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import prompt_for, read_jsonl, review_rows, run_args, run_subprocess, write_jsonl


def test_limit_sends_only_the_first_n_rows_and_says_how_to_send_the_rest(tmp_path, simulator, run_dir):
    rows = review_rows(30)
    path = write_jsonl(tmp_path / "reviews.jsonl", rows)

    done = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--limit", "5"))

    assert done.returncode == 0, done.stderr
    results = read_jsonl(run_dir / "results.jsonl")
    assert sorted(r["row_number"] for r in results) == [1, 2, 3, 4, 5]
    assert simulator.requests == 5
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["rows_ok"], summary["rows_remaining"]) == (5, 25)
    assert "25 rows are left" in done.stderr
    rest = next(line for line in done.stderr.splitlines() if line.startswith("the rest: "))
    assert "--limit" not in rest and str(run_dir) in rest


def test_the_same_job_without_limit_continues_with_the_rest_sending_none_twice(tmp_path, simulator, run_dir):
    rows = review_rows(30)
    path = write_jsonl(tmp_path / "reviews.jsonl", rows)
    assert run_subprocess(*run_args(path, run_dir, simulator.base_url, "--limit", "7")).returncode == 0

    rest = run_subprocess(*run_args(path, run_dir, simulator.base_url))

    assert rest.returncode == 0, rest.stderr
    assert sorted(r["id"] for r in read_jsonl(run_dir / "results.jsonl")) == sorted(r["id"] for r in rows)
    assert all(simulator.completions_for(prompt_for(row)) == 1 for row in rows)
    assert "resume with" not in rest.stderr and "the rest" not in rest.stderr


def test_a_larger_limit_later_sends_only_the_rows_it_adds(tmp_path, simulator, run_dir):
    path = write_jsonl(tmp_path / "reviews.jsonl", review_rows(20))
    assert run_subprocess(*run_args(path, run_dir, simulator.base_url, "--limit", "4")).returncode == 0

    again = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--limit", "10"))

    assert again.returncode == 0, again.stderr
    assert simulator.requests == 10
    assert sorted(r["row_number"] for r in read_jsonl(run_dir / "results.jsonl")) == list(range(1, 11))


def test_limit_counts_rows_not_lines_when_a_jsonl_has_blank_lines(tmp_path, simulator, run_dir):
    rows = review_rows(6)
    path = tmp_path / "gappy.jsonl"
    path.write_text("\n".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # a blank line between

    done = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--limit", "3"))

    assert done.returncode == 0, done.stderr
    assert sorted(r["id"] for r in read_jsonl(run_dir / "results.jsonl")) == ["r0", "r1", "r2"]


def test_limit_takes_the_first_rows_of_a_parquet_input(tmp_path, simulator, run_dir):
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.Table.from_pylist(review_rows(50)), path, row_group_size=16)

    done = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--limit", "20"))

    assert done.returncode == 0, done.stderr
    assert sorted(r["row_number"] for r in read_jsonl(run_dir / "results.jsonl")) == list(range(1, 21))


def test_limit_holds_in_batch_api_mode(tmp_path, simulator, run_dir):
    path = write_jsonl(tmp_path / "reviews.jsonl", review_rows(12))

    done = run_subprocess(
        *run_args(
            path, run_dir, simulator.base_url, "--mode", "batch-api", "--poll-interval", "0.2", "--limit", "4"
        )
    )

    assert done.returncode == 0, done.stderr
    assert sorted(r["row_number"] for r in read_jsonl(run_dir / "results.jsonl")) == [1, 2, 3, 4]


def test_dry_run_counts_only_the_rows_the_limit_lets_through(tmp_path, run_dir):
    path = write_jsonl(tmp_path / "reviews.jsonl", review_rows(40))

    plan = run_subprocess(*run_args(path, run_dir, "simulator", "--limit", "9", "--dry-run"))

    assert plan.returncode == 0, plan.stderr
    assert "to send:  9 requests" in plan.stdout
    assert not run_dir.exists()


def test_a_limit_below_one_is_a_usage_error(tmp_path, run_dir):
    path = write_jsonl(tmp_path / "reviews.jsonl", review_rows(3))

    refused = run_subprocess(*run_args(path, run_dir, "simulator", "--limit", "0"))

    assert refused.returncode == 2
    assert "--limit" in refused.stderr and "Traceback" not in refused.stderr

"""Output formats and summary.json."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import PROMPT, read_jsonl, review_rows, run_args, write_jsonl


def test_summary_counts_rows_requests_tokens_and_latency(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(reject_marker="BAD", latency_ms=5)
    rows = review_rows(20)
    rows[5]["text"] = "BAD"
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    cli("run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", "--prompt", PROMPT)

    summary = json.loads((run_dir / "summary.json").read_text())
    results = read_jsonl(run_dir / "results.jsonl")
    assert summary["status"] == "completed_with_errors"
    assert (summary["rows_total"], summary["rows_ok"], summary["rows_failed"], summary["rows_remaining"]) == (
        20,
        19,
        1,
        0,
    )
    assert summary["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in results)
    assert summary["completion_tokens"] == sum(r["usage"]["completion_tokens"] for r in results)
    session = summary["session"]
    assert session["requests_sent"] == 20 and session["retries"] == 0
    assert session["rows_per_s"] > 0 and session["tokens_per_s"] > 0
    assert 0 < session["latency_ms_p50"] <= session["latency_ms_p95"]


def test_parquet_output_has_typed_columns(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(reject_marker="BAD")
    rows = [
        {
            "id": f"a{i}",
            "text": "BAD" if i == 2 else f"text {i}",
            "stars": i,
            "score": i / 2,
            "tags": ["x", i],
        }
        for i in range(2500)
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(
        *run_args(
            path,
            run_dir,
            simulator.base_url,
            "--output-format",
            "parquet",
            "--keep-columns",
            "stars,score,tags",
            "--concurrency",
            "32",
        )
    )

    assert result.exit_code == 1, result.output
    table = pq.read_table(run_dir / "results.parquet")
    assert table.num_rows == 2499
    assert pq.ParquetFile(run_dir / "results.parquet").metadata.num_row_groups >= 2  # written as it went
    schema = table.schema
    assert schema.field("stars").type == pa.int64()
    assert schema.field("score").type == pa.float64()
    assert schema.field("usage").type.num_fields == 3
    first = table.filter(pa.compute.equal(table["id"], "a3")).to_pylist()[0]
    assert json.loads(first["tags"]) == ["x", 3]
    errors = pq.read_table(run_dir / "errors.parquet").to_pylist()
    assert [(e["id"], e["error"]["status"]) for e in errors] == [("a2", 400)]
    assert not (run_dir / "results.jsonl").exists()


def test_parquet_output_is_rebuilt_whole_on_resume(cli, simulator, tmp_path, run_dir):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(review_rows(50)), path)
    args = run_args(
        path, run_dir, simulator.base_url, "--output-format", "parquet", "--keep-columns", "stars"
    )
    assert cli(*args).exit_code == 0
    journal = run_dir / ".batcher" / "results.jsonl"
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:20]))  # 30 rows lost

    again = cli(*args)

    assert again.exit_code == 0, again.output
    table = pq.read_table(run_dir / "results.parquet")
    assert sorted(table["id"].to_pylist()) == sorted(r["id"] for r in review_rows(50))
    assert table.schema.field("stars").type == pa.int64()
    assert simulator.requests == 80


def test_openai_batch_output_has_the_batch_api_shape(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(reject_marker="BAD")
    lines = [
        {
            "custom_id": f"task-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "BAD" if i == 1 else f"q{i}"}],
            },
        }
        for i in range(4)
    ]
    path = write_jsonl(tmp_path / "batch.jsonl", lines)

    result = cli(
        "run", path, "-o", run_dir, "--base-url", simulator.base_url, "--output-format", "openai-batch"
    )

    assert result.exit_code == 1
    output = read_jsonl(run_dir / "results.jsonl")
    assert sorted(o["custom_id"] for o in output) == ["task-0", "task-2", "task-3"]
    line = output[0]
    assert line["id"].startswith("batch_req_") and line["error"] is None
    assert line["response"]["status_code"] == 200
    assert line["response"]["request_id"].startswith("req_")
    assert line["response"]["body"]["object"] == "chat.completion"
    assert line["response"]["body"]["choices"][0]["message"]["role"] == "assistant"
    [failed] = read_jsonl(run_dir / "errors.jsonl")
    assert failed["custom_id"] == "task-1"
    assert failed["response"]["status_code"] == 400
    assert failed["response"]["body"]["error"]["type"] == "invalid_request_error"

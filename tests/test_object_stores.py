"""Inputs in an object store, read as files are; credentials only from the environment."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import prompt_for, read_jsonl, review_rows, run_args


def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet_bytes(rows, row_group_size: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=row_group_size)
    return sink.getvalue()


def test_a_parquet_input_in_s3_is_read_by_row_group_and_every_row_answered_once(cli, simulator, s3, run_dir):
    rows = review_rows(50)
    uri = s3.put("s3://inputs/reviews/part-0.parquet", parquet_bytes(rows, row_group_size=8))

    result = cli(*run_args(uri, run_dir, simulator.base_url, "--output-format", "parquet"))

    assert result.exit_code == 0, result.output
    table = pq.read_table(run_dir / "results.parquet")
    assert sorted(table["id"].to_pylist()) == sorted(r["id"] for r in rows)
    assert all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)
    assert json.loads((run_dir / "job.json").read_text())["input"] == uri


def test_a_jsonl_input_in_s3_resumes_without_sending_a_row_again(cli, simulator, s3, run_dir):
    rows = review_rows(30)
    uri = s3.put("s3://inputs/reviews.jsonl", jsonl_bytes(rows))
    command = run_args(uri, run_dir, simulator.base_url)

    first, again = cli(*command), cli(*command)

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert len(read_jsonl(run_dir / "results.jsonl")) == 30 and simulator.requests == 30


def test_credentials_stay_in_the_environment_and_out_of_every_file_and_message(cli, simulator, s3, run_dir):
    uri = s3.put("s3://inputs/few.jsonl", jsonl_bytes(review_rows(3)))
    missing = "s3://inputs/no-such-object.jsonl"

    ran, not_found = (
        cli(*run_args(uri, run_dir, simulator.base_url)),
        cli(*run_args(missing, run_dir, simulator.base_url)),
    )

    assert ran.exit_code == 0, ran.output
    assert not_found.exit_code == 2 and f"{missing} was not found" in not_found.output
    written = b"".join(p.read_bytes() for p in run_dir.rglob("*") if p.is_file())
    for secret in (s3.SECRET, s3.KEY_ID):
        assert secret.encode() not in written and secret not in ran.output + not_found.output


def test_an_object_store_that_cannot_be_reached_is_a_clear_error_not_a_traceback(
    cli, simulator, s3, run_dir, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    result = cli(*run_args("s3://inputs/reviews.jsonl", run_dir, simulator.base_url))

    assert result.exit_code == 2, result.output
    assert "s3://inputs/reviews.jsonl" in result.output and "Traceback" not in result.output
    assert simulator.requests == 0


def test_an_unknown_scheme_is_refused_saying_so(cli, simulator, tmp_path):
    unknown = cli(*run_args("ftp://host/in.jsonl", tmp_path / "run", simulator.base_url))

    assert unknown.exit_code == 2 and "not ftp://" in unknown.output

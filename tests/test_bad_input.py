"""Bad input: a clear message naming the place, exit 2, no traceback, nothing sent."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import PROMPT, read_jsonl, review_rows, run_args, run_subprocess, write_jsonl


def refused(cli, simulator, path, run_dir, *extra):
    result = cli("run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", *extra)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert simulator.requests == 0
    return result.output


def test_a_line_that_is_not_json_is_named_by_file_and_line(cli, simulator, tmp_path, run_dir):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": \n{"id": 3, "text": "c"}\n')

    output = refused(cli, simulator, path, run_dir, "--prompt", PROMPT)

    assert f"{path} has 1 problem; nothing was sent" in output
    assert "line 2 is not valid JSON" in output


def test_every_problem_in_a_file_is_listed_at_once(cli, simulator, tmp_path, run_dir):
    rows = [
        {"id": "a", "text": "x"},
        {"text": "no id"},
        {"id": "a", "text": "again"},
        {"id": "d", "body": "?"},
        [1, 2],
        {"id": "f", "text": None},
        {"id": {"nested": 1}, "text": "y"},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    output = refused(cli, simulator, path, run_dir, "--prompt", PROMPT)

    assert "line 2 has no 'id'" in output
    assert "line 3 repeats id 'a' (first seen at line 1)" in output
    assert "line 4 has no column 'text' for the prompt's {text}" in output
    assert "line 5 is not a JSON object but list" in output
    assert "line 6 has a null 'text'" in output
    assert "line 7 has a 'id' that is not a string or an integer but dict" in output


def test_broken_utf8_and_nan_are_refused_by_line(cli, simulator, tmp_path, run_dir):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "\xff\xfe"}\n{"id": 3, "text": NaN}\n')

    output = refused(cli, simulator, path, run_dir, "--prompt", PROMPT)

    assert "line 2 is not valid UTF-8" in output
    assert "line 3 is not valid JSON (NaN is not valid JSON)" in output


def test_a_custom_id_column_is_used_and_checked(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", [{"key": "k1", "text": "hi"}, {"text": "ho"}])

    output = refused(cli, simulator, path, run_dir, "--prompt", PROMPT, "--id-column", "key")

    assert "line 2 has no 'key'" in output


def test_a_placeholder_that_is_no_parquet_column_is_refused(cli, simulator, tmp_path, run_dir):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": 1, "body": "x"}]), path)

    output = refused(cli, simulator, path, run_dir, "--prompt", PROMPT)

    assert f"{path} has no column 'text'" in output and "(columns: id, body)" in output


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is not a readable Parquet file"),
        (b"PAR1 this is not parquet at all", "is not a readable Parquet file"),
    ],
)
def test_an_empty_or_unreadable_parquet_file_is_refused(cli, simulator, tmp_path, run_dir, content, message):
    path = tmp_path / "in.parquet"
    path.write_bytes(content)

    output = refused(cli, simulator, path, run_dir, "--prompt", PROMPT)

    assert f"{path} {message}" in output


def test_a_parquet_file_with_no_rows_is_refused(cli, simulator, tmp_path, run_dir):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), path)

    output = refused(cli, simulator, path, run_dir, "--prompt", PROMPT)

    assert f"{path} has no rows" in output


def test_an_empty_jsonl_file_is_refused(cli, simulator, tmp_path, run_dir):
    path = tmp_path / "in.jsonl"
    path.write_text("\n\n")

    output = refused(cli, simulator, path, run_dir, "--prompt", PROMPT)

    assert f"{path} has no rows" in output


def test_a_missing_input_is_named(cli, simulator, tmp_path, run_dir):
    output = refused(cli, simulator, tmp_path / "nope.jsonl", run_dir, "--prompt", PROMPT)

    assert "nope.jsonl was not found" in output


def test_rows_without_messages_need_a_template(cli, simulator, reviews, run_dir):
    output = refused(cli, simulator, reviews, run_dir)

    assert "need a prompt template" in output


def test_a_malformed_template_is_refused(cli, simulator, reviews, run_dir):
    assert "must be a column name" in refused(cli, simulator, reviews, run_dir, "--prompt", "Say {0}")
    assert "malformed" in refused(cli, simulator, reviews, run_dir, "--prompt", "Say {text")


def test_a_row_without_a_model_is_refused_before_sending(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"id": 1, "messages": [{"role": "user", "content": "hi"}]}])
    result = cli("run", path, "-o", run_dir, "--base-url", simulator.base_url)

    assert result.exit_code == 2
    assert "line 1 has no model" in result.output


def test_an_output_directory_that_cannot_be_written_is_refused(cli, simulator, reviews, tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "file-in-the-way"
        target.write_text("")  # root can write anywhere, but not below a file
        run_dir = target / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        run_dir = locked / "run"

    output = refused(cli, simulator, reviews, run_dir, "--prompt", PROMPT)

    assert "cannot be used as the output directory" in output


def test_a_results_line_is_never_lost_to_a_bad_input_on_resume(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(5))
    assert (
        cli(
            "run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", "--prompt", PROMPT
        ).exit_code
        == 0
    )
    with path.open("a") as f:
        f.write("not json\n")

    result = cli(
        "run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", "--prompt", PROMPT
    )

    assert result.exit_code == 2
    assert len(read_jsonl(run_dir / "results.jsonl")) == 5


# -- job files ------------------------------------------------------------------------------


def write_job(tmp_path, text):
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("input = 'x.jsonl'\nmodel = \n", "not valid TOML"),
        ("input = 'x.jsonl'\nmodle = 'm'\n", "unknown setting 'modle'"),
        ("input = 'x.jsonl'\nrpm = 'fast'\n", "'rpm' must be int or float, got str 'fast'"),
        ("input = 'x.jsonl'\nconcurrency = true\n", "'concurrency' must be int, got bool True"),
        ("input = 'x.jsonl'\napi_key = 'sk-secret'\n", "job files never hold keys"),
        ("input = 'x.jsonl'\noutput = 'o'\ntemperature = 5\n", "temperature must be between 0 and 2"),
        ("input = 'x.jsonl'\noutput = 'o'\nbase_url = 'api.example.com'\n", "base_url must start with http"),
        ("input = 'x.jsonl'\noutput = 'o'\noutput_format = 'csv'\n", "output_format must be one of"),
        ("input = 'x.jsonl'\noutput = 'o'\n[simulator]\nspeed = 3\n", "unknown simulator setting(s): speed"),
    ],
)
def test_an_invalid_job_file_is_refused_with_what_is_wrong(cli, tmp_path, text, message):
    path = write_job(tmp_path, text)

    result = cli("run", path)

    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert "sk-secret" not in result.output


def test_a_missing_job_file_is_named(cli, tmp_path):
    result = cli("run", tmp_path / "nope.toml")

    assert result.exit_code == 2
    assert "nope.toml: job file not found" in result.output


def test_job_file_paths_are_relative_to_the_job_file_and_flags_override_it(cli, simulator, tmp_path):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "in.jsonl", review_rows(3))
    path = write_job(
        tmp_path,
        f"""
input = "data/in.jsonl"
output = "runs/first"
base_url = "{simulator.base_url}"
model = "from-file"
prompt = "{PROMPT}"
""",
    )

    result = cli("run", path, "--model", "from-flag")

    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "runs" / "first" / "results.jsonl")) == 3
    assert {b["model"] for b in simulator.server.received} == {"from-flag"}


def test_bad_input_from_a_real_process_prints_no_traceback(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("{oops\n")

    result = run_subprocess(*run_args(path, tmp_path / "run", "http://127.0.0.1:9/v1"))

    assert result.returncode == 2
    assert "line 1 is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr

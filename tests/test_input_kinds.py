"""The inputs people bring (issue 21, item 4): rows piped into standard input, CSV and TSV files, a
byte-order mark, rows without ids, every column kept, and a clear word for files batcher does not read.

Each run is a real `batcher` process against the simulator on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from batcher.cli.commands import main
from batcher.job import build_job
from batcher.prepare import prepare
from batcher.transports.ray import inputs as rayinput
from batcher.transports.ray.inputs import Reader, payloads, plan
from tests.helpers import (
    PROMPT,
    TEST_KEY,
    batcher_command,
    prompt_for,
    read_jsonl,
    review_rows,
    run_args,
    run_subprocess,
    start_subprocess_run,
    subprocess_env,
    wait_for_results,
    write_jsonl,
)

BOM = "\ufeff"


def run_piped(data: bytes, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    """`batcher` with `data` piped into its standard input."""
    return subprocess.run(
        batcher_command(*args), input=data, env=subprocess_env(), capture_output=True, timeout=timeout
    )


def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def refused(result, simulator) -> str:
    """The message of a run refused before sending: exit 2, no traceback, nothing sent."""
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert simulator.requests == 0
    return stderr


def strays(folder) -> list[str]:
    """Copies of standard input left beside a run directory."""
    return [p.name for p in folder.iterdir() if ".stdin-" in p.name]


# -- `-`: rows piped into standard input ---------------------------------------------------------


def test_rows_piped_into_standard_input_are_sent_and_kept_in_the_run_directory(simulator, tmp_path, run_dir):
    rows = review_rows(12)
    data = jsonl_bytes(rows)

    result = run_piped(data, *run_args("-", run_dir, simulator.base_url))

    assert result.returncode == 0, result.stderr.decode()
    assert sorted(r["id"] for r in read_jsonl(run_dir / "results.jsonl")) == sorted(r["id"] for r in rows)
    assert all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)
    assert (run_dir / ".batcher" / "input.jsonl").read_bytes() == data
    assert strays(tmp_path) == []


def test_piping_the_same_rows_again_resumes_and_sends_nothing(simulator, tmp_path, run_dir):
    data = jsonl_bytes(review_rows(12))
    first = run_piped(data, *run_args("-", run_dir, simulator.base_url))
    assert first.returncode == 0, first.stderr.decode()
    sent = simulator.requests

    again = run_piped(data, *run_args("-", run_dir, simulator.base_url))

    assert again.returncode == 0, again.stderr.decode()
    assert simulator.requests == sent
    assert len(read_jsonl(run_dir / "results.jsonl")) == 12


def test_piped_rows_resume_after_an_interruption_without_sending_a_row_twice(
    simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=100)
    rows = review_rows(80)
    data = jsonl_bytes(rows)
    process = subprocess.Popen(
        batcher_command(*run_args("-", run_dir, simulator.base_url, "--concurrency", "4")),
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdin.write(data)
    process.stdin.close()
    process.stdin = None  # (all written: communicate has nothing more to send)
    wait_for_results(run_dir, 8, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr.decode()
    fast = simulator_factory()

    resumed = run_piped(data, *run_args("-", run_dir, fast.base_url))

    assert resumed.returncode == 0, resumed.stderr.decode()
    ids = [r["id"] for r in read_jsonl(run_dir / "results.jsonl")]
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert all(
        simulator.completions_for(prompt_for(r)) + fast.completions_for(prompt_for(r)) == 1 for r in rows
    )
    assert 0 < fast.requests < len(rows)


def test_piping_other_rows_into_a_run_directory_is_refused_as_a_changed_input(
    simulator_factory, tmp_path, run_dir
):
    data = jsonl_bytes(review_rows(5))
    assert run_piped(data, *run_args("-", run_dir, simulator_factory().base_url)).returncode == 0
    simulator = simulator_factory()

    other = run_piped(jsonl_bytes(review_rows(6)), *run_args("-", run_dir, simulator.base_url))

    assert "holds a different job" in refused(other, simulator)
    assert "input_fingerprint" in other.stderr.decode()
    assert (run_dir / ".batcher" / "input.jsonl").read_bytes() == data  # the run's own copy stays
    assert strays(tmp_path) == []


def test_each_run_in_one_process_reads_its_own_standard_input(cli, simulator, tmp_path):
    environment = {"OPENAI_API_KEY": TEST_KEY, "OPENAI_BASE_URL": None}
    for n in (2, 3):  # (CliRunner gives each call a standard input of its own)
        run_dir = tmp_path / f"run{n}"
        args = [str(a) for a in run_args("-", run_dir, simulator.base_url)]

        result = cli.runner.invoke(main, args, input=jsonl_bytes(review_rows(n)), env=environment)

        assert result.exit_code == 0, result.output
        assert len(read_jsonl(run_dir / "results.jsonl")) == n
        assert (run_dir / ".batcher" / "input.jsonl").read_bytes() == jsonl_bytes(review_rows(n))


def test_piped_rows_that_fail_their_checks_leave_nothing_behind(simulator, tmp_path, run_dir):
    data = jsonl_bytes([{"id": "a", "text": "fine"}, {"id": "b", "txt": "typo"}])

    result = run_piped(data, *run_args("-", run_dir, simulator.base_url))

    stderr = refused(result, simulator)
    assert "standard input has 1 problem" in stderr and "line 2 has no column 'text'" in stderr
    assert not run_dir.exists()
    assert strays(tmp_path) == []


def test_a_dry_run_of_piped_rows_writes_nothing(simulator, tmp_path, run_dir):
    result = run_piped(jsonl_bytes(review_rows(3)), *run_args("-", run_dir, simulator.base_url, "--dry-run"))

    assert result.returncode == 0, result.stderr.decode()
    assert "3 rows" in result.stdout.decode()
    assert not run_dir.exists()
    assert strays(tmp_path) == []


def test_standard_input_that_is_a_terminal_is_refused(simulator, tmp_path, run_dir):
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            batcher_command(*run_args("-", run_dir, simulator.base_url)),
            stdin=terminal,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(controller)
        os.close(terminal)

    assert "nothing on standard input" in refused(result, simulator)
    assert not run_dir.exists()


def test_a_job_file_cannot_name_standard_input_as_its_input(simulator, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(
        f'input = "-"\noutput = "run"\nmodel = "m"\nprompt = "{{text}}"\nbase_url = "{simulator.base_url}"\n'
    )

    result = run_subprocess("run", job)

    stderr = refused(result, simulator)
    assert 'input = "-"' in stderr and "standard input" in stderr and "name a file" in stderr


def test_piped_rows_with_an_object_store_output_are_refused(simulator, tmp_path):
    result = run_piped(jsonl_bytes(review_rows(2)), *run_args("-", "s3://bucket/run", simulator.base_url))

    assert "must be on this machine" in refused(result, simulator)


# -- CSV and TSV -------------------------------------------------------------------------------

SPREADSHEET_CSV = (
    BOM + 'id,text,stars\r\n007,"fine, thanks",5\r\n008,"said ""hi""\nthen left",3\r\n009,plain,\r\n'
)
SPREADSHEET_TEXTS = ["fine, thanks", 'said "hi"\nthen left', "plain"]


def test_a_csv_with_a_bom_quoted_commas_quotes_and_newlines_is_read_row_by_row(simulator, tmp_path, run_dir):
    path = tmp_path / "reviews.csv"
    path.write_text(SPREADSHEET_CSV, encoding="utf-8", newline="")

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--keep-columns", "stars"))

    assert result.returncode == 0, result.stderr
    assert all(simulator.completions_for(PROMPT.format(text=t)) == 1 for t in SPREADSHEET_TEXTS)
    results = sorted(read_jsonl(run_dir / "results.jsonl"), key=lambda r: r["row_number"])
    # Columns are text: "007" stays "007"; an empty field is an empty string; rows counted, not lines.
    assert [(r["id"], r["row_number"], r["stars"]) for r in results] == [
        ("007", 1, "5"),
        ("008", 2, "3"),
        ("009", 3, ""),
    ]


def test_a_tsv_is_read_with_tabs_between_fields(simulator, tmp_path, run_dir):
    path = tmp_path / "reviews.tsv"
    path.write_text('id\ttext\n1\tcomma, kept\n2\t"a tab\there"\n', encoding="utf-8")

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url))

    assert result.returncode == 0, result.stderr
    assert simulator.completions_for(PROMPT.format(text="comma, kept")) == 1
    assert simulator.completions_for(PROMPT.format(text="a tab\there")) == 1


def test_a_csv_row_with_more_fields_than_the_header_is_named_by_its_row(simulator, tmp_path, run_dir):
    path = tmp_path / "reviews.csv"
    path.write_text('id,text\n1,"quoted, fine"\n2,not, quoted\n3,ok\n', encoding="utf-8")

    stderr = refused(run_subprocess(*run_args(path, run_dir, simulator.base_url)), simulator)

    assert f"{path}, row 2 has 3 fields where the header names 2 columns" in stderr


def test_a_csv_problem_is_named_by_its_row_not_its_line(simulator, tmp_path, run_dir):
    path = tmp_path / "reviews.csv"
    path.write_text('id,text\n1,"two\nlines"\n1,again\n', encoding="utf-8")

    stderr = refused(run_subprocess(*run_args(path, run_dir, simulator.base_url)), simulator)

    assert "row 2 repeats id '1' (first seen at row 1)" in stderr


def test_a_csv_input_needs_a_prompt_template(simulator, tmp_path, run_dir):
    path = tmp_path / "reviews.csv"
    path.write_text("id,text\n1,hello\n", encoding="utf-8")

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url, prompt=None))

    assert "a CSV input needs a prompt template" in refused(result, simulator)


def test_a_csv_run_resumes_after_an_interruption_without_sending_a_row_twice(
    simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=100)
    rows = review_rows(80)
    path = tmp_path / "reviews.csv"
    pyarrow.csv.write_csv(pa.Table.from_pylist(rows), path)
    process = start_subprocess_run(
        path, run_dir, simulator.base_url, "--concurrency", "4", "--keep-columns", "*"
    )
    wait_for_results(run_dir, 8, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    fast = simulator_factory()

    resumed = run_subprocess(*run_args(path, run_dir, fast.base_url, "--keep-columns", "*"))

    assert resumed.returncode == 0, resumed.stderr
    results = read_jsonl(run_dir / "results.jsonl")
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)
    assert all(
        simulator.completions_for(prompt_for(r)) + fast.completions_for(prompt_for(r)) == 1 for r in rows
    )
    assert 0 < fast.requests < len(rows)
    # Both sessions kept the same columns, as text.
    assert {(r["text"], r["stars"]) for r in results} == {(r["text"], str(r["stars"])) for r in rows}


def test_a_csv_is_read_the_same_by_the_ray_planner_as_by_a_local_run(tmp_path):
    path = tmp_path / "reviews.csv"
    lines = ["id,text"] + [f'r{i},"line one\nline {i}, two"' for i in range(300)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = {"input": str(path), "output": str(tmp_path / "run"), "prompt": "Say {text}"}
    source, kind = prepare(build_job({**settings, "model": "m", "base_url": "simulator"}))
    done = bytearray(301)
    for n in (1, 2, 3, 150, 299):
        done[n] = 1

    reader = Reader(source, source.columns(kind.builder), None, stopped=lambda: False)
    by_ranges = []
    for r in plan(source, done, workers=3):
        part = bytes(done[r.first : None if r.count is None else r.first + r.count])
        for block in reader.read(r, part):
            (batch,) = payloads(block)
            by_ranges += [(row.number, row.row_id, row.row["text"]) for row in batch]
    locally = [
        (row.number, row.row_id, row.row["text"]) for row in source.rows(kind.builder, done=done) if row
    ]

    assert by_ranges == locally
    assert len(locally) == 295 and locally[0] == (4, "r3", "line one\nline 3, two")


# -- a byte-order mark --------------------------------------------------------------------------


def test_a_jsonl_file_starting_with_a_bom_reads_its_first_line(simulator, tmp_path, run_dir):
    rows = review_rows(3)
    path = tmp_path / "reviews.jsonl"
    path.write_bytes(BOM.encode() + jsonl_bytes(rows))

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url))

    assert result.returncode == 0, result.stderr
    assert all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)


def test_a_bom_changes_no_line_number_when_done_lines_are_passed_over(tmp_path, monkeypatch):
    monkeypatch.setattr(rayinput, "_MIN_SPAN", 300)
    monkeypatch.setattr(rayinput, "_MAX_SPAN", 300)
    path = tmp_path / "reviews.jsonl"
    path.write_bytes(BOM.encode() + jsonl_bytes(review_rows(100)))
    settings = {"input": str(path), "output": str(tmp_path / "run"), "prompt": "Say {text}"}
    source, kind = prepare(build_job({**settings, "model": "m", "base_url": "simulator"}))
    done = bytearray(101)
    done[2:60] = b"\x01" * 58  # a run long enough to be passed over by counting newlines

    locally = [(row.number, row.row_id) for row in source.rows(kind.builder, done=done) if row]
    reader = Reader(source, None, None, stopped=lambda: False)
    by_ranges = []
    for r in plan(source, done, workers=3):
        for block in reader.read(r, bytes(done[r.first : None if r.count is None else r.first + r.count])):
            by_ranges += [(row.number, row.row_id) for row in payloads(block)[0]]

    expected = [(1, "r0")] + [(n, f"r{n - 1}") for n in range(60, 101)]
    assert locally == expected
    assert sorted(by_ranges) == expected


# -- rows without an id --------------------------------------------------------------------------


def test_jsonl_rows_without_ids_are_named_by_their_line(simulator, tmp_path, run_dir):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two"}\n{"text": "three"}\n', encoding="utf-8")

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url))

    assert result.returncode == 0, result.stderr
    results = read_jsonl(run_dir / "results.jsonl")
    assert sorted((r["id"], r["row_number"]) for r in results) == [("1", 1), ("3", 3), ("4", 4)]


def test_parquet_and_csv_rows_without_ids_are_named_by_their_row_number(simulator, tmp_path):
    parquet, csv = tmp_path / "texts.parquet", tmp_path / "texts.csv"
    pq.write_table(pa.Table.from_pylist([{"text": "one"}, {"text": "two"}]), parquet)
    csv.write_text('text\n"one"\n"two\nlines"\n', encoding="utf-8")

    for path in (parquet, csv):
        run_dir = tmp_path / f"run-{path.suffix[1:]}"
        result = run_subprocess(*run_args(path, run_dir, simulator.base_url))

        assert result.returncode == 0, result.stderr
        assert sorted(r["id"] for r in read_jsonl(run_dir / "results.jsonl")) == ["1", "2"]


def test_rows_without_ids_resume_after_an_interruption_without_sending_a_row_twice(
    simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=100)
    rows = [{"text": r["text"]} for r in review_rows(80)]
    path = write_jsonl(tmp_path / "texts.jsonl", rows)
    process = start_subprocess_run(path, run_dir, simulator.base_url, "--concurrency", "4")
    wait_for_results(run_dir, 8, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    fast = simulator_factory()

    resumed = run_subprocess(*run_args(path, run_dir, fast.base_url))

    assert resumed.returncode == 0, resumed.stderr
    ids = sorted(int(r["id"]) for r in read_jsonl(run_dir / "results.jsonl"))
    assert ids == list(range(1, 81))
    assert all(
        simulator.completions_for(prompt_for(r)) + fast.completions_for(prompt_for(r)) == 1 for r in rows
    )
    assert 0 < fast.requests < len(rows)


def test_a_file_where_only_some_rows_lack_an_id_is_refused_naming_them(simulator, tmp_path, run_dir):
    for rows in (
        [{"id": "a", "text": "x"}, {"text": "y"}, {"id": "c", "text": "z"}],
        [{"text": "x"}, {"id": "b", "text": "y"}, {"text": "z"}],
    ):
        path = write_jsonl(tmp_path / "texts.jsonl", rows)
        lacking = [n for n, r in enumerate(rows, start=1) if "id" not in r]

        stderr = refused(run_subprocess(*run_args(path, run_dir, simulator.base_url)), simulator)

        assert all(f"line {n} has no 'id'" in stderr for n in lacking), stderr
        assert not any(f"line {n} has no" in stderr for n in range(1, 4) if n not in lacking)


def test_an_id_column_named_explicitly_must_be_there(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "texts.jsonl", [{"text": "x"}, {"text": "y"}])

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--id-column", "id"))

    assert "line 1 has no 'id'" in refused(result, simulator)


# -- --keep-columns '*' ----------------------------------------------------------------------------


def test_keep_columns_star_keeps_every_input_column_but_the_id_and_result_names(simulator, tmp_path, run_dir):
    rows = [
        {"id": "a", "text": "x", "stars": 4, "model": "mine", "lang": "en"},
        {"id": "b", "text": "y", "stars": 2, "topic": {"k": 1}},
    ]
    path = write_jsonl(tmp_path / "texts.jsonl", rows)

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--keep-columns", "*"))

    assert result.returncode == 0, result.stderr
    by_id = {r["id"]: r for r in read_jsonl(run_dir / "results.jsonl")}
    assert {k: by_id["a"].get(k) for k in ("text", "stars", "lang", "topic")} == {
        "text": "x",
        "stars": 4,
        "lang": "en",
        "topic": None,
    }
    assert by_id["b"]["topic"] == {"k": 1} and by_id["b"]["lang"] is None
    assert by_id["a"]["model"] == "m"  # the result's own model, not the input column of that name


def test_keep_columns_star_keeps_parquet_columns_with_their_types(simulator, tmp_path, run_dir):
    path = tmp_path / "texts.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": 1, "text": "x", "year": 2001, "score": 0.5}]), path)

    result = run_subprocess(
        *run_args(path, run_dir, simulator.base_url, "--keep-columns", "*", "--output-format", "parquet")
    )

    assert result.returncode == 0, result.stderr
    table = pq.read_table(run_dir / "results.parquet")
    assert table.schema.field("year").type == pa.int64() and table.schema.field("score").type == pa.float64()
    assert table.column("text").to_pylist() == ["x"]


def test_keep_columns_star_is_refused_for_rows_that_are_requests(simulator, tmp_path, run_dir):
    path = write_jsonl(
        tmp_path / "chats.jsonl", [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}]
    )

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--keep-columns", "*", prompt=None))

    assert "keep_columns '*'" in refused(result, simulator)


# -- files of a kind batcher does not read --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.txt", b"Dear reader, this is prose.\nIt has no JSON in it.\n"),
        ("rows.json", b'[{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]\n'),
        ("pretty.json", b'{\n  "rows": []\n}\n'),
        ("book.xlsx", b"PK\x03\x04 not really a spreadsheet"),
        ("reviews.csv.gz", b"\x1f\x8b\x08\x00 compressed"),
    ],
)
def test_a_file_of_a_kind_batcher_does_not_read_gets_the_kinds_it_reads(
    simulator, tmp_path, run_dir, name, content
):
    path = tmp_path / name
    path.write_bytes(content)

    stderr = refused(run_subprocess(*run_args(path, run_dir, simulator.base_url)), simulator)

    assert "batcher reads JSONL" in stderr and "Parquet" in stderr and "CSV or TSV" in stderr
    assert "line 1" not in stderr


def test_a_jsonl_file_with_a_bad_first_line_is_still_named_by_its_line(simulator, tmp_path, run_dir):
    path = tmp_path / "rows.jsonl"
    path.write_text("Dear reader, this is prose.\n", encoding="utf-8")

    stderr = refused(run_subprocess(*run_args(path, run_dir, simulator.base_url)), simulator)

    assert f"{path}, line 1 is not valid JSON" in stderr


def test_json_lines_in_a_file_of_another_name_are_read(simulator, tmp_path, run_dir):
    rows = review_rows(2)
    path = tmp_path / "rows.txt"
    path.write_bytes(jsonl_bytes(rows))

    result = run_subprocess(*run_args(path, run_dir, simulator.base_url))

    assert result.returncode == 0, result.stderr
    assert all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)


# -- item 7: a bad line named once ---------------------------------------------------------------


def test_a_bad_jsonl_line_is_named_by_its_line_once_without_the_decoders_line(simulator, tmp_path, run_dir):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": "b" "c"}\n', encoding="utf-8")

    stderr = refused(run_subprocess(*run_args(path, run_dir, simulator.base_url)), simulator)

    assert "line 2 is not valid JSON (Expecting ',' delimiter at character 23)" in stderr
    assert "column" not in stderr and "line 1" not in stderr

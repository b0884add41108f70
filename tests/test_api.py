"""The Python API: batcher.run / arun / iter_results over real HTTP to the simulator."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet
import pytest

import batcher
from tests.helpers import PROMPT, TEST_KEY, prompt_for, read_jsonl, review_rows


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def answers_by_prompt(simulator, rows):
    return {row["id"]: simulator.completions_for(prompt_for(row)) for row in rows}


def test_run_returns_one_row_per_input_row_in_input_order(simulator, tmp_path):
    rows = review_rows(40)

    table = batcher.run(
        rows,
        model="m",
        prompt=PROMPT,
        base_url=simulator.base_url,
        output=tmp_path / "run",
        keep_columns=["stars"],
        concurrency=8,
    )

    assert isinstance(table, pa.Table)
    assert table["id"].to_pylist() == [r["id"] for r in rows]
    assert table["row_number"].to_pylist() == list(range(1, 41))
    assert table["stars"].to_pylist() == [r["stars"] for r in rows]
    assert table.schema.field("stars").type == pa.int64()
    assert all(content for content in table["content"].to_pylist())
    assert table["error"].null_count == 40
    assert set(answers_by_prompt(simulator, rows).values()) == {1}
    # The run directory is a run directory like any other.
    assert len(read_jsonl(tmp_path / "run" / "results.jsonl")) == 40
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["rows_ok"] == 40


def test_calling_again_resumes_and_sends_only_what_is_left(simulator, tmp_path):
    rows = review_rows(30)
    out = tmp_path / "run"
    options = dict(model="m", prompt=PROMPT, base_url=simulator.base_url, output=out)
    batcher.run(rows, **options)
    results = out / "results.jsonl"
    kept = read_jsonl(results)[:20]
    results.write_text("".join(json.dumps(r) + "\n" for r in kept))

    table = batcher.run(rows, **options)

    assert table["id"].to_pylist() == [r["id"] for r in rows]
    assert simulator.requests == 30 + 10
    changed = [{**r, "text": r["text"] + "!"} for r in rows]
    with pytest.raises(batcher.ConfigError, match="different job"):
        batcher.run(changed, **options)


def test_tables_dataframes_and_plain_strings_are_sources_too(simulator, tmp_path):
    texts = ["I love it", "It broke", "It is grey"]
    options = dict(model="m", base_url=simulator.base_url)

    from_strings = batcher.run(texts, **options)
    from_table = batcher.run(pa.table({"text": texts}), prompt="{text}", **options)
    from_frame = batcher.run(
        pd.DataFrame({"text": texts, "n": [1, 2, 3]}), prompt="{text}", keep_columns="n", **options
    )

    for table in (from_strings, from_table, from_frame):
        assert table["id"].to_pylist() == ["1", "2", "3"]  # rows without ids: their positions, as in files
    assert from_frame.to_pandas()["n"].tolist() == [1, 2, 3]
    assert all(simulator.completions_for(text) == 3 for text in texts)


def test_run_works_inside_a_running_event_loop_and_arun_awaits_in_it(simulator):
    rows = review_rows(6)

    async def notebook_cell():
        blocking = batcher.run(rows, model="m", prompt=PROMPT, base_url=simulator.base_url)
        awaited = await batcher.arun(rows, model="m", prompt=PROMPT, base_url=simulator.base_url)
        return blocking, awaited

    blocking, awaited = asyncio.run(notebook_cell())

    assert blocking.num_rows == awaited.num_rows == 6
    assert set(answers_by_prompt(simulator, rows).values()) == {2}


def test_iter_results_yields_records_as_they_finish_and_stops_cleanly_when_left(simulator_factory, tmp_path):
    simulator = simulator_factory(latency_ms=20)
    rows = review_rows(60)
    out = tmp_path / "run"
    options = dict(model="m", prompt=PROMPT, base_url=simulator.base_url, output=out, concurrency=4)

    seen = []
    for record in batcher.iter_results(rows, **options):
        seen.append(record)
        if len(seen) == 10:
            break
    stopped_with = len(read_jsonl(out / "results.jsonl"))
    summary = json.loads((out / "summary.json").read_text())
    table = batcher.run(rows, **options)

    assert 10 <= stopped_with < 60 and summary["status"] == "interrupted"

    assert all(r["content"] for r in seen) and len({r["id"] for r in seen}) == 10
    assert table["id"].to_pylist() == [r["id"] for r in rows] and table["error"].null_count == 60
    on_disk = [r["id"] for r in read_jsonl(out / "results.jsonl")]
    assert sorted(on_disk) == sorted(r["id"] for r in rows)  # nothing lost, nothing written twice
    assert simulator.requests <= 60 + 4  # at most the requests on the wire at the break were paid twice


def test_failed_rows_come_back_with_their_error_and_bad_calls_raise_clearly(simulator_factory, tmp_path):
    simulator = simulator_factory(reject_marker="BAD")
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": "BAD row"}]

    table = batcher.run(rows, model="m", prompt="{text}", base_url=simulator.base_url)

    assert table["error"].to_pylist()[0] is None
    assert table["error"].to_pylist()[1]["type"] == "invalid_request_error"
    assert table["content"].to_pylist()[1] is None
    with pytest.raises(batcher.ConfigError, match="unknown setting 'rpmm'"):
        batcher.run(rows, model="m", prompt="{text}", base_url=simulator.base_url, rpmm=10)
    with pytest.raises(batcher.InputError, match="line 2 has no column 'txt'"):
        batcher.run(rows, model="m", prompt="{txt}", base_url=simulator.base_url)
    with pytest.raises(batcher.ConfigError, match="give dicts"):
        batcher.run([1, 2], model="m", base_url=simulator.base_url)
    refusing = simulator_factory(fail_auth_after=0)
    with pytest.raises(batcher.RunAborted, match="refused the key"):
        batcher.run(rows, model="m", prompt="{text}", base_url=refusing.base_url, output=tmp_path / "x")


def test_a_parse_function_turns_each_answer_into_columns_and_its_failures_are_asked_again(simulator):
    rows = [{"id": i, "text": f"review {i}: I love it", "n": i} for i in range(8)]
    calls = []

    def parse(row, answer):
        calls.append(row["id"])
        if row["n"] == 3 and calls.count(3) == 1:
            raise ValueError("not this time")  # the first answer of row 3 is refused
        return {"length": len(answer), "shout": answer.upper(), "n_again": row["n"]}

    table = batcher.run(rows, model="m", prompt="{text}", base_url=simulator.base_url, parse=parse)

    assert table["n_again"].to_pylist() == list(range(8))
    assert table["length"].to_pylist() == [len(c) for c in table["content"].to_pylist()]
    assert table.schema.field("length").type == pa.int64()
    assert calls.count(3) == 2 and simulator.requests == 9  # row 3 was asked again
    assert table["error"].null_count == 8

    def clashing(row, answer):
        return {"content": "mine"}

    clashed = batcher.run(rows[:1], model="m", prompt="{text}", base_url=simulator.base_url, parse=clashing)

    assert clashed["error"].to_pylist()[0]["type"] == "parse_error"
    assert "results already use" in clashed["error"].to_pylist()[0]["message"]


def test_a_parse_function_reads_each_row_and_answer_in_batch_api_mode_too(simulator):
    rows = [{"id": i, "text": f"review {i}: I love it", "n": i} for i in range(6)]

    def parse(row, answer):
        return {"length": len(answer), "n_again": row["n"]}

    table = batcher.run(
        rows,
        model="m",
        prompt="{text}",
        base_url=simulator.base_url,
        parse=parse,
        mode="batch-api",
        poll_interval=0.1,
    )

    assert table["n_again"].to_pylist() == list(range(6))
    assert table["length"].to_pylist() == [len(c) for c in table["content"].to_pylist()]
    assert table["batch_id"].null_count == 0 and table["error"].null_count == 6


def test_a_dataframe_given_again_to_the_same_output_resumes_instead_of_resending(simulator, tmp_path):
    frame = pd.DataFrame({"text": [f"review {i}: fine" for i in range(12)], "n": range(12)})
    options = dict(model="m", prompt="{text}", base_url=simulator.base_url, output=tmp_path / "run")

    first = batcher.run(frame, **options)
    again = batcher.run(frame.copy(), **options)

    assert simulator.requests == 12  # the same data, written to the same bytes: nothing left to send
    assert again["content"].to_pylist() == first["content"].to_pylist()


@pytest.mark.parametrize("as_parquet", [False, True], ids=["rows", "parquet"])
def test_keep_columns_star_gives_every_input_column_in_the_table(simulator, tmp_path, as_parquet):
    rows = [{**row, "lang": "en"} for row in review_rows(6)]
    source = rows
    if as_parquet:
        source = tmp_path / "reviews.parquet"
        pa.parquet.write_table(pa.Table.from_pylist(rows), source)

    table = batcher.run(
        source,
        model="m",
        prompt=PROMPT,
        base_url=simulator.base_url,
        output=tmp_path / "run",
        keep_columns="*",
    )

    assert "*" not in table.column_names
    assert table["text"].to_pylist() == [r["text"] for r in rows]
    assert table["stars"].to_pylist() == [r["stars"] for r in rows]
    assert table["lang"].to_pylist() == ["en"] * 6

"""rayinput.py: a run's input cut into ranges on the driver and read range by range on the cluster
gives exactly the rows a local run reads: each once, with its number, done rows passed over."""

from __future__ import annotations

import json
import random

import pytest

from batcher.job import build_job
from batcher.prepare import prepare
from batcher.transports.base import SkipIds
from batcher.transports.ray import inputs as rayinput
from batcher.transports.ray.inputs import BATCH_ROWS, Reader, payloads, plan
from tests.helpers import review_rows
from tests.test_object_stores import parquet_bytes


def source_of(path):
    settings = {"input": str(path), "output": str(path.parent / "run"), "prompt": "Classify: {text}"}
    source, kind = prepare(build_job({**settings, "model": "m", "base_url": "simulator"}))
    return source, kind.builder


def read_by_ranges(source, builder, done, skip=None, workers=3, until=None):
    """What the read tasks of a Ray run yield, range by range, as (number, id) pairs."""
    reader = Reader(source, source.columns(builder), skip, stopped=lambda: False, until=until)
    got = []
    for r in plan(source, done, workers, until):
        part = bytes(done[r.first : None if r.count is None else r.first + r.count]) if done else b""
        for block in reader.read(r, part):
            (batch,) = payloads(block)
            assert 0 < len(batch) <= BATCH_ROWS
            got += [(row.number, row.row_id) for row in batch]
    return got


def read_locally(source, builder, done, skip=None):
    return [(row.number, row.row_id) for row in source.rows(builder, done=done, skip=skip) if row is not None]


def done_at(numbers) -> bytearray:
    done = bytearray(max(numbers) + 1)
    for n in numbers:
        done[n] = 1
    return done


@pytest.fixture
def tiny_spans(monkeypatch):
    """Spans of 300 bytes, so a small file is cut where lines and long lines fall across the cuts."""
    monkeypatch.setattr(rayinput, "_MIN_SPAN", 300)
    monkeypatch.setattr(rayinput, "_MAX_SPAN", 300)


def test_a_jsonl_cut_into_spans_reads_every_line_once_with_its_number(tiny_spans, tmp_path):
    rng = random.Random(7)
    lines = []
    for i in range(400):
        text = "x" * rng.choice([5, 40, 700])  # some lines longer than a span: no line starts in it
        lines.append(json.dumps({"id": f"r{i}", "text": text}))
        if i % 37 == 0:
            lines.append("   ")  # blank lines count as numbers, as in a local run
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")  # and no newline at the end
    source, builder = source_of(path)

    ranges = plan(source, None, workers=3)
    got = read_by_ranges(source, builder, None)

    assert len(ranges) > 20
    assert got == read_locally(source, builder, None)
    assert len(got) == 400 and len({n for n, _ in got}) == 400


def test_done_lines_are_passed_over_where_they_are_read_and_a_wholly_done_span_is_not_read(
    tiny_spans, tmp_path
):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in review_rows(300)), encoding="utf-8")
    source, builder = source_of(path)
    done = done_at([*range(1, 151), *range(200, 301, 3)])  # the first half, then every third line

    got = read_by_ranges(source, builder, done)

    assert got == read_locally(source, builder, done)
    assert {n for n, _ in got}.isdisjoint(n for n in range(len(done)) if done[n])
    assert len(plan(source, done, workers=3)) < len(plan(source, None, workers=3))


def test_a_parquet_input_is_read_a_row_group_a_task_and_done_groups_are_not_read(tmp_path):
    path = tmp_path / "in.parquet"
    path.write_bytes(parquet_bytes(review_rows(100), row_group_size=7))
    source, builder = source_of(path)
    done = done_at([*range(1, 15), 20, 50, 99])  # the first two groups whole, and three rows

    ranges = plan(source, done, workers=3)
    got = read_by_ranges(source, builder, done)

    assert [r.group for r in ranges] == list(range(2, 15))
    assert got == read_locally(source, builder, done)
    assert [n for n, _ in got] == [n for n in range(15, 101) if n not in (20, 50, 99)]


def test_rows_done_or_failed_by_id_are_passed_over_too(tiny_spans, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in review_rows(120)), encoding="utf-8")
    source, builder = source_of(path)
    skip = SkipIds(None, {"r3", "r77", "r119"})

    got = read_by_ranges(source, builder, None, skip=skip)

    assert got == read_locally(source, builder, None, skip=skip)
    assert len(got) == 117 and not {"r3", "r77", "r119"} & {i for _, i in got}


def test_a_line_that_no_longer_parses_stops_the_read_with_its_number(tmp_path):
    path = tmp_path / "in.jsonl"
    rows = review_rows(10)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    source, builder = source_of(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]) + "{torn\n", encoding="utf-8")

    reader = Reader(source, None, None, stopped=lambda: False)
    (r,) = plan(source, None, workers=3)
    (block,) = reader.read(r, b"")

    (error,) = payloads(block)
    assert "line 5" in str(error) and "in.jsonl" in str(error)


def test_a_stopping_run_yields_no_more_batches(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in review_rows(300)), encoding="utf-8")
    source, builder = source_of(path)
    asked = []

    def stopped():
        asked.append(1)
        return len(asked) > 2

    reader = Reader(source, None, None, stopped=stopped)
    (r,) = plan(source, None, workers=3)

    assert len(list(reader.read(r, b""))) == 2  # of 5 batches


def test_a_limit_reads_the_first_rows_only_and_plans_no_range_past_them(tiny_spans, tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(row) + ("\n\n" if i % 10 == 0 else "\n") for i, row in enumerate(review_rows(300))]
    path.write_text("".join(lines), encoding="utf-8")  # a blank line now and then: positions are not rows
    source, builder = source_of(path)
    until = source.position_of_row(120)

    got = read_by_ranges(source, builder, done_at([1, 2, 3]), until=until)

    everything = read_locally(source, builder, done_at([1, 2, 3]))  # (1 and 3 hold r0 and r1; 2 is blank)
    assert got == everything[:118]
    assert got[-1][1] == "r119"
    assert len(plan(source, None, 3, until)) < len(plan(source, None, 3))

"""Parts of a Batch API run: split under the provider's limits, journalled so a crash loses no step."""

from __future__ import annotations

import pytest

from batcher.errors import RunAborted
from batcher.transports.batchapi.parts import PartsLog, PartState, split


def lines(n: int, size: int = 10) -> list[bytes]:
    return [(f"{i:0{size - 1}d}" + "\n").encode() for i in range(n)]


def test_parts_hold_at_most_the_requests_and_bytes_a_batch_may_have_in_input_order():
    by_count = list(split(lines(7), max_requests=3, max_bytes=1_000))
    by_size = list(split(lines(7), max_requests=100, max_bytes=25))

    assert [len(g) for g in by_count] == [3, 3, 1]
    assert [len(g) for g in by_size] == [2, 2, 2, 1]  # 10-byte lines, 25 bytes a part
    assert b"".join(b"".join(g) for g in by_size) == b"".join(lines(7))


def test_each_part_holds_one_model_as_a_batch_must_in_the_order_its_rows_came():
    models = ["a", "b", "a", "a", "b", "c", "a"]
    rows = list(enumerate(models))

    groups = list(split(rows, max_requests=2, max_bytes=1_000, size=lambda row: 10, key=lambda row: row[1]))

    assert [[n for n, _ in g] for g in groups] == [[0, 2], [3, 6], [1, 4], [5]]
    assert all(len({model for _, model in g}) == 1 for g in groups)


def test_a_line_over_the_file_limit_is_refused_saying_so():
    with pytest.raises(ValueError, match="over the 25-byte file limit"):
        list(split([b"x" * 30 + b"\n"], max_requests=10, max_bytes=25))


def test_every_step_of_a_part_is_read_back_as_its_latest_state(tmp_path):
    log = PartsLog(tmp_path)
    part = log.write_part(1, 0, lines(3))
    log.record(part, PartState.UPLOADED, file_id="file-1")
    log.record(part, PartState.CREATING, nonce="n1", creations=1)
    log.record(part, PartState.CREATED, batch_id="batch_1")

    parts = PartsLog(tmp_path).load()

    assert parts[1].state == PartState.CREATED and parts[1].live
    assert (parts[1].file_id, parts[1].nonce, parts[1].batch_id) == ("file-1", "n1", "batch_1")
    assert PartsLog(tmp_path).read_lines(parts[1]) == lines(3)


def test_a_step_torn_by_a_crash_counts_as_not_taken(tmp_path):
    log = PartsLog(tmp_path)
    part = log.write_part(1, 0, lines(2))
    log.record(part, PartState.CREATING, nonce="n1", creations=1)
    with log.path.open("ab") as f:
        f.write(b'{"number": 1, "state": "created", "batch_id": "batch_9"')  # no newline: torn

    parts = PartsLog(tmp_path).load()

    assert (
        parts[1].state == PartState.CREATING and parts[1].batch_id is None
    )  # look the batch up by its nonce
    log.record(parts[1], PartState.CREATED, batch_id="batch_1")
    reread = PartsLog(tmp_path).load()
    assert (
        reread[1].state == PartState.CREATED and reread[1].batch_id == "batch_1"
    )  # not joined to the torn tail


def test_a_part_file_changed_after_planning_is_refused(tmp_path):
    log = PartsLog(tmp_path)
    part = log.write_part(1, 0, lines(2))
    (log.files / part.file).write_bytes(b"other\n")

    with pytest.raises(RunAborted, match="changed since it was planned"):
        log.read_lines(part)


def test_collected_and_planned_parts_hold_no_live_batch(tmp_path):
    log = PartsLog(tmp_path)
    first = log.write_part(1, 0, lines(1))
    log.write_part(2, 0, lines(1))
    log.record(first, PartState.COLLECTED)

    parts = log.load()

    assert parts[1].state == PartState.COLLECTED and not parts[1].live
    assert parts[2].state == PartState.PLANNED and not parts[2].live

"""Vectors beside the journal: the lines a power cut left ahead of the vector file are cut off."""

from __future__ import annotations

import json

from batcher.store.vectors import cut_lines_beyond

DIMS = 8


def journal_of(path, rows: int, padding: int = 0) -> None:
    with path.open("w") as f:
        for i in range(rows):
            line = {
                "id": f"r{i}",
                "row_number": i + 1,
                "vector_at": i * DIMS * 4,
                "dims": DIMS,
                "pad": "x" * padding,
            }
            f.write(json.dumps(line) + "\n")


def test_every_line_past_the_end_of_the_vectors_is_cut_however_far_back_it_starts(tmp_path):
    journal, vectors = tmp_path / "results.jsonl", tmp_path / "vectors.f32"
    journal_of(journal, 3000, padding=1000)  # 3 MB of journal, written ahead of its vectors
    vectors.write_bytes(bytes(100 * DIMS * 4 + 5))  # 100 whole vectors, and a torn one

    dropped = cut_lines_beyond(journal, vectors)

    lines = journal.read_text().splitlines()
    assert dropped == 2900 and len(lines) == 100
    assert json.loads(lines[-1])["id"] == "r99"


def test_a_journal_whose_vectors_are_all_there_is_left_alone(tmp_path):
    journal, vectors = tmp_path / "results.jsonl", tmp_path / "vectors.f32"
    journal_of(journal, 50)
    before = journal.read_bytes() + b'{"id": "torn'  # a torn last line is the journal's own repair's
    journal.write_bytes(before)
    vectors.write_bytes(bytes(50 * DIMS * 4))

    assert cut_lines_beyond(journal, vectors) == 0
    assert journal.read_bytes() == before

"""`batcher.ray.process`: batcher as a stage of a user's Ray Data pipeline, under one limit."""

from __future__ import annotations

import json

import pytest

from tests.helpers import PROMPT, TEST_KEY, prompt_for, review_rows


@pytest.mark.slow  # about 5 s: an actor pool's start-up
def test_a_pipeline_stage_adds_the_result_columns_and_composes_with_the_rest(
    ray_cluster, simulator_factory, monkeypatch
):
    import batcher.ray

    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    simulator = simulator_factory(reject_marker="REJECT")
    rows = [{"text": row["text"], "stars": row["stars"]} for row in review_rows(40)]
    rows[7]["text"] = "REJECT this one"
    ds = ray_cluster.data.from_items(rows)

    labelled = batcher.ray.process(
        ds, model="m", prompt=PROMPT, base_url=simulator.base_url, rpm=6000, workers=2, batch_size=10
    )
    out = labelled.filter(lambda row: row["stars"] > 0).take_all()  # the stage composes with the rest

    assert len(out) == 40
    by_text = {row["text"]: row for row in out}
    failed = by_text["REJECT this one"]
    assert failed["content"] is None and json.loads(failed["error"])["status"] == 400
    good = [row for row in out if row["text"] != "REJECT this one"]
    assert all(row["content"] and row["error"] is None and row["prompt_tokens"] > 0 for row in good)
    assert all(simulator.completions_for(prompt_for(row)) == 1 for row in good)

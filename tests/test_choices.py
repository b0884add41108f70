"""What was paid for is kept: every choice of an `n` > 1 answer, and the logprobs, in every output."""

from __future__ import annotations

import json

import openai
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batcher
from tests.helpers import TEST_KEY, read_jsonl, run_subprocess, write_jsonl

MANY = {"n": 3, "logprobs": True, "top_logprobs": 2}


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def chat_rows() -> list[dict]:
    """A row asking three choices with logprobs, and a plain one."""
    return [
        {"id": "many", "messages": ask("Describe a quiet harbour."), **MANY},
        {"id": "one", "messages": ask("Describe a busy market.")},
    ]


def run(path, run_dir, simulator, *extra):
    done = run_subprocess(
        "run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", *extra
    )
    assert done.returncode == 0, done.stderr
    return done


def answered(simulator, row: dict) -> dict:
    """The whole answer the server gives the row's request, as the official SDK reads it."""
    sdk = openai.OpenAI(base_url=simulator.base_url, api_key=TEST_KEY, max_retries=0, timeout=10)
    body = {k: v for k, v in row.items() if k != "id"}
    return sdk.chat.completions.create(model="m", **body).model_dump()


def kept(choice: dict) -> dict:
    """A choice of the API's answer as a result keeps it."""
    message = choice["message"]
    return {
        "index": choice["index"],
        "content": message["content"],
        "tool_calls": message.get("tool_calls"),
        "finish_reason": choice["finish_reason"],
        "logprobs": choice["logprobs"],
    }


def by_id(records: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in records}


def test_results_jsonl_keeps_every_choice_and_the_logprobs(simulator, tmp_path, run_dir):
    rows = chat_rows()
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    run(path, run_dir, simulator)

    record = by_id(read_jsonl(run_dir / "results.jsonl"))["many"]
    whole = answered(simulator, rows[0])
    assert record["choices"] == [kept(c) for c in whole["choices"]]
    assert [c["index"] for c in record["choices"]] == [0, 1, 2]
    assert len({c["content"] for c in record["choices"]}) == 3  # three answers, not one thrice
    first = record["choices"][0]
    assert (record["content"], record["finish_reason"]) == (first["content"], first["finish_reason"])
    assert record["logprobs"] == first["logprobs"]
    for choice in record["choices"]:
        tokens = choice["logprobs"]["content"]
        assert "".join(t["token"] for t in tokens) == choice["content"]
        assert all(
            len(t["top_logprobs"]) == 2 and t["top_logprobs"][0]["token"] == t["token"] for t in tokens
        )
        assert all(t["bytes"] == list(t["token"].encode()) and t["logprob"] <= 0 for t in tokens)


def test_a_one_choice_answer_without_logprobs_adds_no_key(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows())

    run(path, run_dir, simulator)

    record = by_id(read_jsonl(run_dir / "results.jsonl"))["one"]
    assert "choices" not in record and "logprobs" not in record
    assert record["content"]


def test_logprobs_alone_are_kept_without_a_choices_list(simulator, tmp_path, run_dir):
    row = {"id": "lp", "messages": ask("Name a colour."), "logprobs": True}
    path = write_jsonl(tmp_path / "in.jsonl", [row])

    run(path, run_dir, simulator)

    [record] = read_jsonl(run_dir / "results.jsonl")
    assert "choices" not in record
    tokens = record["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == record["content"]
    assert all(t["top_logprobs"] == [] for t in tokens)


def test_parquet_output_has_choices_and_logprobs_columns_as_json_text(simulator, tmp_path, run_dir):
    rows = chat_rows()
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    run(path, run_dir, simulator, "--output-format", "parquet")

    table = pq.read_table(run_dir / "results.parquet")
    assert table.schema.field("choices").type == pa.large_string()
    assert table.schema.field("logprobs").type == pa.large_string()
    parquet_rows = by_id(table.to_pylist())
    whole = answered(simulator, rows[0])
    many = parquet_rows["many"]
    assert json.loads(many["choices"]) == [kept(c) for c in whole["choices"]]
    assert json.loads(many["logprobs"]) == whole["choices"][0]["logprobs"]
    assert parquet_rows["one"]["choices"] is None and parquet_rows["one"]["logprobs"] is None


def test_openai_batch_output_keeps_the_whole_answer_with_every_choice(simulator, tmp_path, run_dir):
    rows = chat_rows()
    streamed = {**rows[0], "id": "streamed", "stream": True, "stream_options": {"include_usage": True}}
    path = write_jsonl(tmp_path / "in.jsonl", [*rows, streamed])

    run(path, run_dir, simulator, "--output-format", "openai-batch")

    lines = {line["custom_id"]: line for line in read_jsonl(run_dir / "results.jsonl")}
    whole = answered(simulator, rows[0])
    for custom_id in ("many", "streamed"):
        body = lines[custom_id]["response"]["body"]
        assert [kept(c) for c in body["choices"]] == [kept(c) for c in whole["choices"]], custom_id
        assert body["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]


def test_the_python_api_table_and_records_carry_choices_and_logprobs(simulator, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    rows = chat_rows()
    whole = answered(simulator, rows[0])

    table = batcher.run(rows, model="m", base_url=simulator.base_url, output=tmp_path / "api")
    streamed = list(
        batcher.iter_results(rows, model="m", base_url=simulator.base_url, output=tmp_path / "it")
    )

    assert table.schema.field("choices").type == pa.large_string()
    api_rows = by_id(table.to_pylist())
    assert json.loads(api_rows["many"]["choices"]) == [kept(c) for c in whole["choices"]]
    assert json.loads(api_rows["many"]["logprobs"]) == whole["choices"][0]["logprobs"]
    assert api_rows["one"]["choices"] is None and api_rows["one"]["logprobs"] is None
    records = by_id(streamed)
    assert records["many"]["choices"] == [kept(c) for c in whole["choices"]]
    assert "choices" not in records["one"]


def test_a_streamed_two_choice_answer_records_the_same_as_a_whole_one(simulator, tmp_path, run_dir):
    question = ask("Describe a mountain lake.")
    asked = {"messages": question, "n": 2, "logprobs": True, "top_logprobs": 1}
    rows = [
        {"id": "whole", **asked},
        {"id": "streamed", **asked, "stream": True, "stream_options": {"include_usage": True}},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    run(path, run_dir, simulator)

    records = by_id(read_jsonl(run_dir / "results.jsonl"))
    assert len(records["whole"]["choices"]) == 2
    for field in ("content", "tool_calls", "finish_reason", "choices", "logprobs", "usage"):
        assert records["streamed"][field] == records["whole"][field], field


def test_usage_and_cost_count_every_choice(simulator, tmp_path, run_dir):
    rows = chat_rows()
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    run(path, run_dir, simulator, "--price", "1000000,2000000")

    records = by_id(read_jsonl(run_dir / "results.jsonl"))
    usage = records["many"]["usage"]
    tokens = sum(len(c["logprobs"]["content"]) for c in records["many"]["choices"])
    assert usage["completion_tokens"] == tokens > len(records["many"]["logprobs"]["content"])
    assert records["many"]["cost_usd"] == pytest.approx(usage["prompt_tokens"] + 2 * tokens)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completion_tokens"] == sum(r["usage"]["completion_tokens"] for r in records.values())


def test_labels_read_the_first_choice_and_every_choice_is_kept(simulator, tmp_path, run_dir):
    rows = [{"id": "s", "messages": ask("Give the sentiment of: I love it, works great"), "n": 2}]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    run(path, run_dir, simulator, "--labels", "positive,negative,neutral")

    [record] = read_jsonl(run_dir / "results.jsonl")
    assert record["label"] == "positive"
    assert [c["index"] for c in record["choices"]] == [0, 1]
    assert record["choices"][0]["content"] == record["content"]


def test_a_batch_api_run_keeps_every_choice_too(simulator, tmp_path, run_dir):
    rows = chat_rows()
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    run(path, run_dir, simulator, "--mode", "batch-api", "--poll-interval", "0.1")

    records = by_id(read_jsonl(run_dir / "results.jsonl"))
    whole = answered(simulator, rows[0])
    assert records["many"]["choices"] == [kept(c) for c in whole["choices"]]
    assert "choices" not in records["one"]


# -- the simulator answers n and logprobs as OpenAI does -------------------------------------------


@pytest.fixture
def sdk(simulator):
    return openai.OpenAI(base_url=simulator.base_url, api_key=TEST_KEY, max_retries=0, timeout=10)


def test_simulator_answers_n_distinct_choices_and_sums_their_tokens(sdk, simulator):
    question = ask("Describe a winter morning.")

    one = sdk.chat.completions.create(model="m", messages=question)
    many = sdk.chat.completions.create(model="m", messages=question, n=4)
    again = sdk.chat.completions.create(model="m", messages=question, n=4)

    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].message.content == one.choices[0].message.content
    assert len({c.message.content for c in many.choices}) == 4
    assert [c.message.content for c in again.choices] == [c.message.content for c in many.choices]
    per_choice = [
        sdk.chat.completions.create(model="m", messages=question, n=4, logprobs=True).choices[i].logprobs
        for i in range(4)
    ]
    assert many.usage.completion_tokens == sum(len(lp.content) for lp in per_choice)
    assert many.usage.prompt_tokens == one.usage.prompt_tokens
    assert simulator.completions_for("Describe a winter morning.") == 7  # one per request, whatever n


def test_simulator_logprobs_give_one_entry_a_token_with_top_alternatives(sdk):
    reply = sdk.chat.completions.create(
        model="m", messages=ask("Describe a desert."), logprobs=True, top_logprobs=5, max_tokens=6
    )

    [choice] = reply.choices
    tokens = choice.logprobs.content
    assert len(tokens) == reply.usage.completion_tokens == 6
    assert "".join(t.token for t in tokens) == choice.message.content
    for token in tokens:
        top = token.top_logprobs
        assert len(top) == 5 and top[0].token == token.token and top[0].logprob == token.logprob
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
        assert len({t.token for t in top}) == 5


def test_simulator_streams_every_choice_by_index_with_its_logprobs(sdk):
    asked = dict(model="m", messages=ask("Describe a river."), n=2, logprobs=True)
    whole = sdk.chat.completions.create(**asked)

    chunks = list(sdk.chat.completions.create(**asked, stream=True))

    texts, tokens = {0: "", 1: ""}, {0: [], 1: []}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            tokens[choice.index] += choice.logprobs.content if choice.logprobs else []
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert tokens == {c.index: c.logprobs.content for c in whole.choices}


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"n": 0}, "n", "integer_below_min_value"),
        ({"n": 129}, "n", "integer_above_max_value"),
        ({"n": 1.5}, "n", "invalid_type"),
        ({"logprobs": "yes"}, "logprobs", "invalid_type"),
        ({"top_logprobs": 2}, "top_logprobs", None),
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs", None),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs", "integer_below_min_value"),
    ],
)
def test_simulator_refuses_bad_n_and_logprobs_as_openai_does(sdk, params, param, code):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="m", messages=ask("hi"), **params)

    error = caught.value.body
    assert caught.value.status_code == 400
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert param in error["message"]


def test_the_dry_runs_at_most_figure_counts_max_tokens_for_each_choice_asked(tmp_path):
    one = [{"id": f"r{i}", "messages": ask(f"Describe harbour {i}."), "max_tokens": 10} for i in range(4)]
    three = [{**row, "n": 3} for row in one]

    plans = []
    for name, rows in (("one", one), ("three", three)):
        path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        plan = run_subprocess(
            "run", path, "-o", tmp_path / name, "--base-url", "simulator", "--model", "m", "--dry-run"
        )
        assert plan.returncode == 0, plan.stderr
        plans.append(plan.stdout)

    def at_most(text: str) -> int:
        return int(text.split("at most ")[1].split(" ")[0].replace(",", ""))

    assert at_most(plans[1]) - at_most(plans[0]) == 4 * 10 * 2  # two more choices of up to 10 tokens a row


def test_the_limiter_and_budget_reserve_max_tokens_for_each_choice_asked():
    from batcher.kinds.tokens import TokenEstimator

    body = {"messages": ask("Describe a quiet harbour."), "max_tokens": 10}

    assert TokenEstimator().parts(body, 100)[1] == 10
    assert TokenEstimator().parts({**body, "n": 3}, 100)[1] == 30

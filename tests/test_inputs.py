"""Each kind of input, and how its rows become requests."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import prompt_for, read_jsonl, review_rows, run_args, write_jsonl


def test_template_rows_are_rendered_sent_and_answered(cli, simulator, reviews, run_dir):
    result = cli(
        *run_args(
            reviews,
            run_dir,
            simulator.base_url,
            "--system",
            "Answer in one word.",
            "--keep-columns",
            "stars",
            model="gpt-4o-mini",
        )
    )

    assert result.exit_code == 0, result.output
    results = read_jsonl(run_dir / "results.jsonl")
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in review_rows(30))
    by_id = {r["id"]: r for r in results}
    assert by_id["r0"]["content"] == "positive"
    assert by_id["r1"]["content"] == "negative"
    assert by_id["r0"]["stars"] == 1
    assert by_id["r0"]["finish_reason"] == "stop"
    assert by_id["r0"]["usage"]["total_tokens"] == (
        by_id["r0"]["usage"]["prompt_tokens"] + by_id["r0"]["usage"]["completion_tokens"]
    )
    assert by_id["r0"]["attempts"] == 1 and by_id["r0"]["latency_ms"] >= 0
    sent = next(
        b for b in simulator.server.received if b["messages"][-1]["content"] == prompt_for(review_rows(1)[0])
    )
    assert sent["messages"][0] == {"role": "system", "content": "Answer in one word."}
    assert sent["model"] == "gpt-4o-mini"


def test_parquet_rows_are_read_by_record_batch(cli, simulator, tmp_path, run_dir):
    # Two record batches of 4,096 rows, over row groups of 1,000 that do not line up with them.
    rows = [{"id": i, "text": f"article {i}. It was good.", "year": 2000 + i} for i in range(5_000)]
    path = tmp_path / "articles.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)

    result = cli(
        *run_args(
            path,
            run_dir,
            simulator.base_url,
            "--keep-columns",
            "year",
            "--concurrency",
            "32",
            prompt="Summarize: {text}",
        )
    )

    assert result.exit_code == 0, result.output
    results = read_jsonl(run_dir / "results.jsonl")
    assert len(results) == 5_000
    assert {r["id"] for r in results} == {str(i) for i in range(5_000)}
    assert next(r for r in results if r["id"] == "7")["year"] == 2007
    assert next(r for r in results if r["id"] == "4500")["year"] == 6500  # from the second batch


def test_chat_rows_pass_every_parameter_through_unchanged(cli, simulator, tmp_path, run_dir):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            ],
        },
    ]
    row = {
        "id": "chat-1",
        "model": "row-model",
        "messages": conversation,
        "temperature": 1.5,
        "top_p": 0.5,
        "max_tokens": 50,
        "seed": 7,
        "logit_bias": {"50256": -100},
        "user": "u-1",
    }
    path = write_jsonl(tmp_path / "chat.jsonl", [row])

    result = cli(
        *run_args(
            path,
            run_dir,
            simulator.base_url,
            "--temperature",
            "0",
            "--max-tokens",
            "5",
            model="default-model",
            prompt=None,
        )
    )

    assert result.exit_code == 0, result.output
    sent = simulator.server.received[-1]
    assert sent == {k: v for k, v in row.items() if k != "id"}  # the row's own values win over flags


def test_chat_rows_get_the_job_defaults_they_leave_out(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"id": 1, "messages": [{"role": "user", "content": "hi"}]}])

    result = cli(
        *run_args(
            path,
            run_dir,
            simulator.base_url,
            "--temperature",
            "0.3",
            "--top-p",
            "0.9",
            "--max-tokens",
            "7",
            prompt=None,
        )
    )

    assert result.exit_code == 0, result.output
    assert simulator.server.received[-1] == {
        "messages": [{"role": "user", "content": "hi"}],
        "model": "m",
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 7,
    }


def test_openai_batch_input_is_detected_and_keyed_by_custom_id(cli, simulator, tmp_path, run_dir):
    lines = [
        {
            "custom_id": f"task-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Summarize: item {i}."}],
                "max_tokens": 20,
            },
        }
        for i in range(5)
    ]
    path = write_jsonl(tmp_path / "batch_input.jsonl", lines)

    result = cli("run", path, "-o", run_dir, "--base-url", simulator.base_url)

    assert result.exit_code == 0, result.output
    assert sorted(r["id"] for r in read_jsonl(run_dir / "results.jsonl")) == [f"task-{i}" for i in range(5)]
    assert simulator.server.received[-1]["max_tokens"] == 20


def test_streamed_rows_record_the_same_result_as_plain_ones(cli, simulator, tmp_path, run_dir):
    question = [{"role": "user", "content": "Tell me something long about rivers."}]
    rows = [
        {"id": "plain", "messages": question},
        {"id": "streamed", "messages": question, "stream": True, "stream_options": {"include_usage": True}},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)

    result = cli(
        "run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", "--max-tokens", "8"
    )

    assert result.exit_code == 0, result.output
    by_id = {r["id"]: r for r in read_jsonl(run_dir / "results.jsonl")}
    for field in ("content", "finish_reason", "usage", "model", "tool_calls"):
        assert by_id["streamed"][field] == by_id["plain"][field], field
    assert by_id["plain"]["finish_reason"] == "length"


def test_tool_calls_are_recorded_streamed_or_not(cli, simulator, tmp_path, run_dir):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    ask = [{"role": "user", "content": "Use lookup for Oslo"}]
    rows = [
        {"id": "a", "messages": ask, "tools": tools, "tool_choice": "required"},
        {"id": "b", "messages": ask, "tools": tools, "tool_choice": "required", "stream": True},
    ]
    path = write_jsonl(tmp_path / "tools.jsonl", rows)

    result = cli("run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m")

    assert result.exit_code == 0, result.output
    by_id = {r["id"]: r for r in read_jsonl(run_dir / "results.jsonl")}
    for row_id in ("a", "b"):
        call = by_id[row_id]["tool_calls"][0]
        assert by_id[row_id]["finish_reason"] == "tool_calls"
        assert call["function"]["name"] == "lookup"
        assert set(json.loads(call["function"]["arguments"])) == {"city"}
    assert by_id["a"]["tool_calls"] == by_id["b"]["tool_calls"]

"""Structured answers: a JSON Schema or labels sent as response_format, parsed into typed columns."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batcher.job.answers import AnswerFormat, AnswerInvalid
from tests.helpers import read_jsonl, review_rows, run_args, write_jsonl

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "sarcastic": {"type": "boolean"},
        "topics": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["sentiment", "confidence", "stars", "sarcastic", "topics"],
    "additionalProperties": False,
}


@pytest.fixture
def schema_file(tmp_path):
    path = tmp_path / "answer.schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def test_a_json_schema_is_sent_and_each_answer_becomes_typed_columns(
    cli, simulator, tmp_path, run_dir, schema_file
):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(12))

    result = cli(
        *run_args(
            path, run_dir, simulator.base_url, "--json-schema", schema_file, "--output-format", "parquet"
        )
    )

    assert result.exit_code == 0, result.output
    sent = simulator.server.received[-1]["response_format"]
    assert sent == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    table = pq.read_table(run_dir / "results.parquet")
    assert table.num_rows == 12
    types = {name: table.schema.field(name).type for name in SCHEMA["properties"]}
    assert types == {
        "sentiment": pa.string(),
        "confidence": pa.float64(),
        "stars": pa.int64(),
        "sarcastic": pa.bool_(),
        "topics": pa.large_string(),  # arrays and objects are kept as JSON text
    }
    for row in table.to_pylist():
        assert row["sentiment"] in ("positive", "negative", "neutral")
        assert 0 <= row["confidence"] <= 1 and 1 <= row["stars"] <= 5
        assert json.loads(row["content"])["topics"] == json.loads(row["topics"])


def test_labels_constrain_the_answer_and_land_normalised_in_a_label_column(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(9))

    result = cli(*run_args(path, run_dir, simulator.base_url, "--labels", "Positive, Negative, Neutral"))

    assert result.exit_code == 0, result.output
    enum = simulator.server.received[-1]["response_format"]["json_schema"]["schema"]["properties"]["label"]
    assert enum == {"type": "string", "enum": ["Positive", "Negative", "Neutral"]}
    assert {r["label"] for r in read_jsonl(run_dir / "results.jsonl")} <= {"Positive", "Negative", "Neutral"}


@pytest.mark.parametrize(
    "answer, label",
    [
        ('{"label": "positive"}', "Positive"),
        ("  NEGATIVE.  ", "Negative"),  # a server that ignores the schema
        ('"neutral"', "Neutral"),
        ("**Positive**!", "Positive"),
        ("very  positive", None),
        ('{"label": "mixed"}', None),
    ],
)
def test_label_answers_are_normalised_by_case_whitespace_and_punctuation(answer, label):
    labels = AnswerFormat.from_settings(json_schema=None, labels=("Positive", "Negative", "Neutral"))
    if label is None:
        with pytest.raises(AnswerInvalid, match="none of the labels"):
            labels.parse(answer, "stop")
    else:
        assert labels.parse(answer, "stop") == {"label": label}


def test_answers_that_do_not_parse_are_asked_again_until_they_do(
    cli, simulator_factory, tmp_path, run_dir, schema_file
):
    simulator = simulator_factory(invalid_answer_rate=0.3, seed=7)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(40))

    result = cli(
        *run_args(path, run_dir, simulator.base_url, "--json-schema", schema_file, "--parse-retries", "8")
    )

    assert result.exit_code == 0, result.output
    assert len(read_jsonl(run_dir / "results.jsonl")) == 40
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["session"]["retries"] == simulator.requests - 40 > 0


def test_an_answer_that_never_parses_is_a_parse_error_with_its_raw_text(
    cli, simulator_factory, tmp_path, run_dir, schema_file
):
    simulator = simulator_factory(invalid_answer_rate=1.0)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))

    result = cli(
        *run_args(path, run_dir, simulator.base_url, "--json-schema", schema_file, "--parse-retries", "1")
    )

    assert result.exit_code == 1, result.output
    errors = read_jsonl(run_dir / "errors.jsonl")
    assert len(errors) == 3 and simulator.requests == 6  # each asked once more
    for error in errors:
        assert error["error"]["type"] == "parse_error" and "not JSON" in error["error"]["message"]
        assert error["content"].startswith("Sure!") and error["usage"]["completion_tokens"] > 0


def test_a_schema_violation_names_the_field(schema_file):
    answers = AnswerFormat.from_settings(json_schema=str(schema_file), labels=())
    bad = {"sentiment": "positive", "confidence": 7, "stars": 3, "sarcastic": False, "topics": []}

    with pytest.raises(AnswerInvalid, match="confidence: 7 is greater than the maximum of 1"):
        answers.parse(json.dumps(bad), "stop")


def test_an_answer_cut_at_max_tokens_is_not_asked_again_and_says_why(
    cli, simulator, tmp_path, run_dir, schema_file
):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(4))

    result = cli(
        *run_args(path, run_dir, simulator.base_url, "--json-schema", schema_file, "--max-tokens", "3")
    )

    assert result.exit_code == 1
    assert simulator.requests == 4
    for error in read_jsonl(run_dir / "errors.jsonl"):
        assert error["error"]["type"] == "parse_error" and "raise max_tokens" in error["error"]["message"]


def test_plain_answers_cut_at_max_tokens_are_counted_and_warned_about(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": f"row {i}"} for i in range(5)])

    result = cli(
        *run_args(path, run_dir, simulator.base_url, "--max-tokens", "2", "--quiet", prompt="Say: {text}")
    )

    assert result.exit_code == 0
    assert json.loads((run_dir / "summary.json").read_text())["session"]["answers_cut_at_max_tokens"] == 5
    assert "5 answers were cut at max_tokens" in result.output


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--json-schema", "missing.json"], "json_schema file not found"),
        (["--json-schema", "{bad}"], "not valid JSON"),
        (["--json-schema", '{"type": "string"}'], "must describe an object"),
        (
            ["--json-schema", '{"type": "object", "properties": {"a": {"type": 5}}}'],
            "not a valid JSON Schema",
        ),
        (["--json-schema", '{"type": "object", "properties": {"content": {}}}'], "clash"),
        (["--labels", "yes,YES"], "must differ"),
        (["--labels", "a,b", "--json-schema", "s.json"], "not both"),
    ],
)
def test_a_bad_answer_format_is_refused_before_sending(cli, simulator, tmp_path, run_dir, flags, message):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(2))
    flags = list(flags)
    if flags[0] == "--json-schema" and flags[1].startswith("{"):
        schema = tmp_path / "s.json"
        schema.write_text(flags[1])
        flags[1] = schema
    elif "missing.json" in flags:
        flags[1] = tmp_path / "missing.json"

    result = cli(*run_args(path, run_dir, simulator.base_url, *flags))

    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert simulator.requests == 0


def test_a_job_file_holds_the_schema_inline_or_by_a_path_relative_to_it(cli, simulator, tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "answer.json").write_text(json.dumps(SCHEMA))
    write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    common = (
        f'input = "in.jsonl"\nmodel = "m"\nprompt = "Review: {{text}}"\nbase_url = "{simulator.base_url}"\n'
    )
    (tmp_path / "by-path.toml").write_text(common + 'output = "out1"\njson_schema = "schemas/answer.json"\n')
    inline = (
        'output = "out2"\n[json_schema]\ntype = "object"\nproperties = { sentiment = { type = "string" } }\n'
    )
    (tmp_path / "inline.toml").write_text(common + inline)

    by_path = cli("run", tmp_path / "by-path.toml")
    by_table = cli("run", tmp_path / "inline.toml")

    assert by_path.exit_code == 0 and by_table.exit_code == 0, by_path.output + by_table.output
    assert all(r["stars"] in range(1, 6) for r in read_jsonl(tmp_path / "out1" / "results.jsonl"))
    assert all(isinstance(r["sentiment"], str) for r in read_jsonl(tmp_path / "out2" / "results.jsonl"))

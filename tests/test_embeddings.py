"""`--endpoint embeddings`: rows to vectors, packed many to a request, journaled beside the results."""

from __future__ import annotations

import json
import math
import signal
import subprocess
from array import array

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batcher.simulator.vectors import vector_for
from tests.helpers import TEST_KEY, batcher_command, read_jsonl, subprocess_env, wait_for_results, write_jsonl

MODEL = "text-embedding-3-small"
TEMPLATE = "{title}: {body}"


def articles(n: int, words: int = 6) -> list[dict]:
    return [
        {"id": f"a{i}", "title": f"Title {i}", "body": " ".join(["word"] * (words + i % 5))} for i in range(n)
    ]


def text_of(row: dict) -> str:
    return TEMPLATE.format(**row)


def embed_args(path, run_dir, base_url, *extra, prompt: str | None = TEMPLATE, model: str | None = MODEL):
    args = ["run", path, "-o", run_dir, "--base-url", base_url, "--endpoint", "embeddings"]
    args += ["--model", model] if model else []
    args += ["--prompt", prompt] if prompt else []
    return [*args, *extra]


def ledger(simulator):
    return simulator.server.ledger


def vectors_of(run_dir) -> dict[str, list[float]]:
    table = pq.read_table(run_dir / "results.parquet")
    return dict(zip(table["id"].to_pylist(), table["embedding"].to_pylist(), strict=True))


def floats(vector: bytes) -> list[float]:
    return array("f", vector).tolist()


def test_rows_become_vectors_in_a_parquet_column_equal_to_what_the_server_sent(
    cli, simulator, tmp_path, run_dir
):
    rows = articles(50)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(
        *embed_args(path, run_dir, simulator.base_url, "--dimensions", "32", "--output-format", "parquet")
    )

    assert result.exit_code == 0, result.output
    table = pq.read_table(run_dir / "results.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    vectors = vectors_of(run_dir)
    assert all(vectors[row["id"]] == floats(vector_for(text_of(row), 32)) for row in rows)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors.values())
    assert ledger(simulator).embedding_requests == 1  # fifty rows, one request
    usage = [u["prompt_tokens"] for u in table["usage"].to_pylist()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sum(usage) == summary["prompt_tokens"] > 0 and all(n > 0 for n in usage)
    assert (
        summary["cost_usd"] == pytest.approx(sum(table["cost_usd"].to_pylist())) and summary["cost_usd"] > 0
    )


@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_vectors_in_results_jsonl_are_json_lists_whichever_way_they_travelled(
    encoding, cli, simulator, tmp_path, run_dir
):
    rows = articles(5)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(
        *embed_args(path, run_dir, simulator.base_url, "--dimensions", "8", "--encoding-format", encoding)
    )

    assert result.exit_code == 0, result.output
    assert ledger(simulator).received[-1]["encoding_format"] == encoding
    results = {r["id"]: r for r in read_jsonl(run_dir / "results.jsonl")}
    assert all(results[row["id"]]["embedding"] == floats(vector_for(text_of(row), 8)) for row in rows)
    assert not any("vector_at" in r for r in results.values())


def test_request_shaped_rows_and_batch_input_lines_are_embedded_too(cli, simulator, tmp_path):
    requests = [{"id": f"q{i}", "input": f"query number {i}", "model": MODEL} for i in range(4)]
    lines = [
        {
            "custom_id": f"b{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": f"doc {i}"},
        }
        for i in range(3)
    ]
    chat_line = {**lines[0], "url": "/v1/chat/completions"}

    one = cli(
        *embed_args(
            write_jsonl(tmp_path / "q.jsonl", requests),
            tmp_path / "q",
            simulator.base_url,
            prompt=None,
            model=None,
        )
    )
    two = cli(
        *embed_args(
            write_jsonl(tmp_path / "b.jsonl", lines),
            tmp_path / "b",
            simulator.base_url,
            prompt=None,
            model=None,
        )
    )
    wrong = cli(
        *embed_args(
            write_jsonl(tmp_path / "w.jsonl", [chat_line]),
            tmp_path / "w",
            simulator.base_url,
            prompt=None,
            model=None,
        )
    )

    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    assert [len(r["embedding"]) for r in read_jsonl(tmp_path / "q" / "results.jsonl")] == [1536] * 4
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "b" / "results.jsonl")) == ["b0", "b1", "b2"]
    assert wrong.exit_code == 2 and "needs url /v1/embeddings" in wrong.output and "line 1" in wrong.output


def test_rows_are_packed_up_to_the_inputs_and_the_tokens_a_request_may_carry(cli, simulator, tmp_path):
    rows = articles(40)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    by_count = cli(*embed_args(path, tmp_path / "count", simulator.base_url, "--inputs-per-request", "7"))
    sent_by_count = ledger(simulator).embedding_requests
    by_tokens = cli(*embed_args(path, tmp_path / "tokens", simulator.base_url, "--tokens-per-request", "60"))
    sent_by_tokens = ledger(simulator).embedding_requests - sent_by_count

    assert by_count.exit_code == 0 and by_tokens.exit_code == 0, by_count.output + by_tokens.output
    assert sent_by_count == 6  # 40 rows, 7 a request
    packs = [body["input"] for body in list(ledger(simulator).received)[-sent_by_tokens:]]
    assert sum(len(p) for p in packs) == 40 and sent_by_tokens > 6
    assert all(
        len(pack) <= 7
        for pack in list(ledger(simulator).received)[:sent_by_count]
        for pack in [pack["input"]]
    )


def test_an_input_over_the_per_input_limit_is_a_row_error_before_anything_is_sent(
    cli, simulator, tmp_path, run_dir
):
    rows = articles(6)
    rows[2]["body"] = "long " * 400
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(*embed_args(path, run_dir, simulator.base_url, "--tokens-per-input", "100"))

    assert result.exit_code == 1, result.output
    [error] = read_jsonl(run_dir / "errors.jsonl")
    assert error["id"] == "a2" and error["error"]["type"] == "input_too_long"
    assert "over the 100-token limit for one input by about" in error["error"]["message"]
    assert all(text_of(rows[2]) not in body["input"] for body in ledger(simulator).received)
    assert len(read_jsonl(run_dir / "results.jsonl")) == 5


def test_a_packed_request_refused_for_one_row_is_split_until_that_row_fails_alone(
    cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(reject_marker="POISON")
    rows = articles(20)
    rows[13]["body"] = "POISON pill"
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(*embed_args(path, run_dir, simulator.base_url))

    assert result.exit_code == 1, result.output
    assert [e["id"] for e in read_jsonl(run_dir / "errors.jsonl")] == ["a13"]
    assert sorted(r["id"] for r in read_jsonl(run_dir / "results.jsonl")) == sorted(
        row["id"] for row in rows if row["id"] != "a13"
    )
    assert all(ledger(simulator).embedded[text_of(row)] == 1 for row in rows if row["id"] != "a13")
    assert ledger(simulator).embedding_requests <= 1 + 2 * math.ceil(math.log2(20)) + 1


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        batcher_command(*args),
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_kill_9_then_the_same_command_embeds_no_input_twice_and_loses_none(
    simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=150, rpm=600)
    rows = articles(300)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    command = embed_args(
        path, run_dir, simulator.base_url, "--inputs-per-request", "10", "--concurrency", "4"
    )

    first = start(*command)
    wait_for_results(run_dir / ".batcher", 60, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    journal = (run_dir / ".batcher" / "results.jsonl").read_bytes().split(b"\n")[:-1]  # whole lines
    done_at_kill = {json.loads(line)["id"] for line in journal}
    final = start(*command)
    _, stderr = final.communicate(timeout=120)

    assert final.returncode == 0, stderr
    assert 60 <= len(done_at_kill) < 300
    results = {r["id"]: r for r in read_jsonl(run_dir / "results.jsonl")}
    assert sorted(results) == sorted(row["id"] for row in rows)  # none lost, none written twice
    embedded = ledger(simulator).embedded
    assert all(embedded[text_of(row)] == 1 for row in rows if row["id"] in done_at_kill)
    assert sum(embedded[text_of(row)] - 1 for row in rows) <= 4 * 10  # at most the packs in flight
    assert all(results[row["id"]]["embedding"] == floats(vector_for(text_of(row), 1536)) for row in rows)


def test_identical_texts_are_embedded_once_and_the_cache_answers_them_in_later_runs(cli, simulator, tmp_path):
    rows = [{"id": f"d{i}", "title": f"Title {i % 4}", "body": "same body"} for i in range(24)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    cache = tmp_path / "cache"

    def run(name):
        result = cli(
            *embed_args(
                path, tmp_path / name, simulator.base_url, "--inputs-per-request", "3", "--cache", cache
            )
        )
        assert result.exit_code == 0, result.output
        return {r["id"]: r for r in read_jsonl(tmp_path / name / "results.jsonl")}

    first = run("one")

    assert all(ledger(simulator).embedded[text_of(row)] == 1 for row in rows)  # 4 texts, 24 rows
    copies = [r for r in first.values() if "reused_from" in r]
    assert len(copies) == 20 and all(r["cost_usd"] == 0 and r["usage"] is None for r in copies)
    assert all(r["embedding"] == first[r["reused_from"]]["embedding"] for r in copies)
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["session"]["rows_deduplicated"] == 20

    sent_before = ledger(simulator).embedding_requests
    second = run("two")

    assert ledger(simulator).embedding_requests == sent_before  # every vector from the cache
    assert all(r["reused_from"] == "cache" for r in second.values())
    assert {k: r["embedding"] for k, r in second.items()} == {k: r["embedding"] for k, r in first.items()}


def test_a_budget_stops_before_a_pack_that_would_go_over_and_status_counts_the_vectors(
    cli, simulator, tmp_path, run_dir
):
    path = write_jsonl(tmp_path / "in.jsonl", articles(40))
    command = embed_args(path, run_dir, simulator.base_url, "--inputs-per-request", "10")

    stopped = cli(*command, "--max-total-tokens", "150")

    assert stopped.exit_code == 3, stopped.output
    assert "budget reached" in stopped.output
    status = json.loads(cli("status", run_dir, "--json").output)
    assert 0 < status["rows_ok"] < 40 and status["total_tokens"] <= 150
    assert status["rows_ok"] == len(read_jsonl(run_dir / "results.jsonl"))

    finished = cli(*command)

    assert finished.exit_code == 0, finished.output
    assert json.loads(cli("status", run_dir, "--json").output)["rows_ok"] == 40
    assert all(ledger(simulator).embedded[text_of(row)] == 1 for row in articles(40))


def test_packs_are_spread_over_several_endpoints(cli, simulator_factory, tmp_path):
    first, second = simulator_factory(latency_ms=20), simulator_factory(latency_ms=20)
    write_jsonl(tmp_path / "in.jsonl", articles(200))
    job = tmp_path / "job.toml"
    job.write_text(
        'input = "in.jsonl"\noutput = "run"\nendpoint = "embeddings"\n'
        f'model = "{MODEL}"\nprompt = "{{title}}: {{body}}"\ninputs_per_request = 5\n'
        + "".join(f'\n[[endpoints]]\nbase_url = "{sim.base_url}"\nrpm = 3000\n' for sim in (first, second))
    )

    result = cli("run", job)

    assert result.exit_code == 0, result.output
    assert ledger(first).embedding_requests > 0 and ledger(second).embedding_requests > 0
    assert ledger(first).embedding_requests + ledger(second).embedding_requests == 40
    assert len(read_jsonl(tmp_path / "run" / "results.jsonl")) == 200


def test_embeddings_go_through_the_batch_api_at_half_the_price(cli, simulator, tmp_path, run_dir):
    rows = articles(30)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    flags = ("--mode", "batch-api", "--poll-interval", "0.1", "--batch-size", "20", "--dimensions", "16")

    result = cli(*embed_args(path, run_dir, simulator.base_url, *flags, "--output-format", "parquet"))

    assert result.exit_code == 0, result.output
    table = pq.read_table(run_dir / "results.parquet")
    assert vectors_of(run_dir) == {row["id"]: floats(vector_for(text_of(row), 16)) for row in rows}
    assert len(set(table["batch_id"].to_pylist())) == 2  # 20 + 10 rows
    for usage, cost in zip(table["usage"].to_pylist(), table["cost_usd"].to_pylist(), strict=True):
        assert cost == pytest.approx(usage["prompt_tokens"] * 0.02 / 2 / 1e6)  # text-embedding-3-small
    assert ledger(simulator).embedding_requests == 0  # nothing online
    assert all(ledger(simulator).embedded[text_of(row)] == 1 for row in rows)


def test_a_server_that_announces_no_limit_is_found_out_from_its_429s_as_for_chat(
    cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(rpm=600, rate_limit_headers="none")
    rows = articles(150)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(
        *embed_args(path, run_dir, simulator.base_url, "--inputs-per-request", "5", "--concurrency", "16")
    )

    assert result.exit_code == 0, result.output
    assert len(read_jsonl(run_dir / "results.jsonl")) == 150 and not (run_dir / "errors.jsonl").read_text()
    assert ledger(simulator).statuses["429"] > 0  # the limit was met, and found
    assert all(ledger(simulator).embedded[text_of(row)] == 1 for row in rows)


def test_after_a_power_cut_left_the_journal_ahead_of_its_vectors_every_row_ends_with_its_own_vector(
    cli, simulator, tmp_path, run_dir
):
    rows = [{**row, "notes": "n" * 6000} for row in articles(300)]  # long lines: 1.8 MB of journal
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    command = embed_args(path, run_dir, simulator.base_url, "--dimensions", "8", "--keep-columns", "notes")
    assert cli(*command).exit_code == 0
    vectors = run_dir / ".batcher" / "vectors.f32"
    with vectors.open("r+b") as f:  # what the OS had written of the vectors when the power went
        f.truncate(100 * 8 * 4)

    resumed = cli(*command)

    assert resumed.exit_code == 0, resumed.output
    results = {r["id"]: r for r in read_jsonl(run_dir / "results.jsonl")}
    assert sorted(results) == sorted(row["id"] for row in rows)
    assert all(results[row["id"]]["embedding"] == floats(vector_for(text_of(row), 8)) for row in rows)
    assert sum(ledger(simulator).embedded[text_of(row)] for row in rows) == 300 + 200  # the cut rows again


@pytest.mark.parametrize("refused_by", ["the server", "batcher before sending"])
def test_copies_of_one_bad_input_fail_as_one_failure_not_as_a_run_of_them(
    refused_by, cli, simulator_factory, tmp_path, run_dir
):
    rows = articles(240)
    for i in range(0, 240, 20):
        rows[i] = {**rows[i], "body": "long " * 400}  # one text, twelve times, among good rows
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    server_limit = refused_by == "the server"
    simulator = simulator_factory(**({"embedding_max_input_tokens": 100} if server_limit else {}))
    flags = () if server_limit else ("--tokens-per-input", "100")

    result = cli(*embed_args(path, run_dir, simulator.base_url, *flags))

    assert result.exit_code == 1, result.output  # rows failed; the run was not stopped as systematic
    assert len(read_jsonl(run_dir / "errors.jsonl")) == 12
    assert len(read_jsonl(run_dir / "results.jsonl")) == 228


def test_rows_asking_for_vectors_of_several_sizes_are_refused_for_parquet_before_anything_is_sent(
    cli, simulator, tmp_path, run_dir
):
    rows = [
        {"id": f"q{i}", "input": f"text {i}", "model": MODEL, "dimensions": 8 if i else 16} for i in range(5)
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    parquet = cli(*embed_args(path, run_dir, simulator.base_url, "--output-format", "parquet", prompt=None))
    jsonl = cli(*embed_args(path, tmp_path / "lists", simulator.base_url, prompt=None))

    assert parquet.exit_code == 2 and "one Parquet column holds vectors of one size" in parquet.output
    assert ledger(simulator).embedding_requests == 2  # both for the jsonl run: one pack a shape
    assert jsonl.exit_code == 0, jsonl.output
    assert sorted(len(r["embedding"]) for r in read_jsonl(tmp_path / "lists" / "results.jsonl")) == [
        8,
        8,
        8,
        8,
        16,
    ]


def test_rows_that_differ_in_more_than_their_input_never_share_a_request(cli, simulator, tmp_path):
    rows = [
        {"id": "a", "input": "first", "model": MODEL, "user": None},
        {"id": "b", "input": "second", "model": MODEL, "dimensions": 8},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(*embed_args(path, tmp_path / "run", simulator.base_url, prompt=None, model=None))

    assert result.exit_code == 0, result.output
    results = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "results.jsonl")}
    assert (len(results["a"]["embedding"]), len(results["b"]["embedding"])) == (1536, 8)


def test_a_dry_run_counts_the_requests_rows_make_once_packed(cli, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", articles(100))

    result = cli(*embed_args(path, tmp_path / "run", "simulator", "--inputs-per-request", "30", "--dry-run"))

    assert result.exit_code == 0, result.output
    assert "100 rows in about 4 requests" in result.output
    assert "embeddings have no completion" in result.output and not (tmp_path / "run").exists()


def test_the_python_api_returns_the_vectors_as_a_fixed_size_list_column(simulator, tmp_path, monkeypatch):
    import batcher

    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)

    texts = ["the first text", "the second one", "and a third"]

    table = batcher.run(
        texts,
        endpoint="embeddings",
        model=MODEL,
        base_url=simulator.base_url,
        dimensions=4,
        output=tmp_path / "run",
    )

    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert table["embedding"].to_pylist() == [floats(vector_for(text, 4)) for text in texts]

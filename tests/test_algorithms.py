"""Unit specifications of the algorithms: backoff, estimates, journal repair (pacing: test_limits.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from batcher.errors import AuthenticationFailed, BadRequest, RateLimited, Retryable, Unreachable
from batcher.kinds.completion import error_for_status, retry_after
from batcher.kinds.tokens import CHARS_PER_TOKEN, TokenEstimator
from batcher.store.checkpoint import read_journal
from batcher.transports.online.retry import RetryPolicy, Tries


def test_backoff_is_full_jitter_below_an_exponential_cap():
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=8)
    error = Retryable("boom", type="internal_error")

    for failures, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (10, 8.0)]:
        delays = [policy.delay(error, failures) for _ in range(300)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8 and min(delays) < cap * 0.2


def test_a_servers_retry_after_is_the_wait_with_a_little_jitter_up_to_the_cap():
    policy = RetryPolicy(max_delay=30)
    delays = [
        policy.delay(RateLimited("slow", type="rate_limit_error", retry_after=7), 5) for _ in range(100)
    ]

    assert all(7 <= d <= 7.7 for d in delays)
    assert 30 <= policy.delay(RateLimited("slow", type="rate_limit_error", retry_after=900), 1) <= 33


def test_429s_and_unreachable_servers_never_use_up_a_rows_retries():
    policy = RetryPolicy(max_retries=2)
    timeout = Retryable("x", type="timeout")
    limited = RateLimited("x", type="rate_limit_error")
    refused = Unreachable("cannot connect", hint="is it running?")
    tries = Tries(attempts=1000, failures=2, waits=997)

    assert policy.next_delay(timeout, tries) is not None
    assert policy.next_delay(limited, tries) == 0.0  # the limiter holds every worker back instead
    assert 0 < policy.next_delay(refused, Tries(waits=3)) <= 2.0
    tries.failures = 3
    assert policy.next_delay(timeout, tries) is None
    assert policy.next_delay(limited, tries) == 0.0
    assert policy.next_delay(BadRequest("x", type="invalid_request_error"), Tries(failures=1)) is None


@pytest.mark.parametrize(
    "headers, seconds",
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "100", "retry-after": "9"}, 0.1),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers_are_read_in_seconds(headers, seconds):
    assert retry_after(headers) == seconds


def test_token_estimate_calibrates_itself_from_returned_usage():
    estimator = TokenEstimator()
    body = {"messages": [{"role": "user", "content": "x" * 984}], "max_tokens": 10}
    chars = estimator.prompt_chars(body)
    first = estimator.estimate(body, chars)
    for _ in range(50):  # the server counts 2 characters a token, not 4.4
        estimator.observe(chars, {"prompt_tokens": chars // 2, "completion_tokens": 10})

    assert first == pytest.approx(chars / CHARS_PER_TOKEN + 10, abs=2)
    assert estimator.estimate(body, chars) == pytest.approx(chars / 2 + 10, rel=0.05)


def test_token_estimate_without_max_tokens_learns_the_completion_length():
    estimator = TokenEstimator()
    body = {"messages": [{"role": "user", "content": "hi"}]}
    for _ in range(50):
        estimator.observe(estimator.prompt_chars(body), {"prompt_tokens": 5, "completion_tokens": 40})

    assert estimator.estimate(body, estimator.prompt_chars(body)) < 60


def test_journal_repair_keeps_every_whole_line(tmp_path):
    path = tmp_path / "results.jsonl"
    whole = [{"id": str(i), "content": "é" * i} for i in range(5)]
    data = "".join(json.dumps(r) + "\n" for r in whole).encode()
    path.write_bytes(data + b'{"id": "5", "cont')

    seen = []
    broken = read_journal(path, seen.append)

    assert broken == 1
    assert seen == whole
    assert path.read_bytes() == data


def test_journal_line_whole_but_for_its_newline_counts_as_torn(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"id": "1"}\n{"id": "2"}')

    seen = []

    assert read_journal(path, seen.append) == 1
    assert seen == [{"id": "1"}]


def test_rows_finished_in_one_loop_turn_reach_the_file_together_when_the_turn_ends(tmp_path):
    # What a kill -9 can cost: the answers of the turn it interrupts, not those of earlier turns.
    from batcher.store.checkpoint import Checkpoint

    async def go():
        checkpoint = Checkpoint(tmp_path)
        checkpoint.open({"job": 1}, force=False)
        for i in range(3):
            checkpoint.add(True, {"id": str(i)})
        checkpoint.add(False, {"id": "3", "error": {"type": "x"}})
        before = checkpoint.results_path.read_bytes() if checkpoint.results_path.exists() else b""
        await asyncio.sleep(0)
        after = [line for line in checkpoint.results_path.read_bytes().splitlines()]
        errors = checkpoint.errors_path.read_bytes().splitlines()
        durable = await checkpoint.sync()
        checkpoint.close()
        return before, after, errors, durable

    before, after, errors, durable = asyncio.run(go())

    assert before == b""
    assert [json.loads(line)["id"] for line in after] == ["0", "1", "2"]
    assert [json.loads(line)["id"] for line in errors] == ["3"]
    assert [(ok, r["id"]) for ok, r in durable] == [(True, "0"), (True, "1"), (True, "2"), (False, "3")]


def test_syncer_ends_when_cancelled_in_the_same_instant_it_is_woken(tmp_path):
    # Regression: asyncio.wait_for on Python 3.11 swallowed this cancellation, so a
    # run whose last rows arrived as it shut down hung for ever.
    from batcher.store.checkpoint import SYNC_ROWS, Checkpoint

    async def go():
        checkpoint = Checkpoint(tmp_path)
        checkpoint.open({"job": 1}, force=False)
        durable = []
        syncer = asyncio.create_task(checkpoint.keep_syncing(durable.extend))
        await asyncio.sleep(0.01)
        for i in range(SYNC_ROWS):
            checkpoint.add(True, {"id": str(i)})  # wakes the syncer...
        syncer.cancel()  # ...and cancels it in the same tick
        done, _ = await asyncio.wait({syncer}, timeout=2)
        remaining = await checkpoint.sync()
        checkpoint.close()
        return done, durable, remaining

    done, durable, remaining = asyncio.run(go())

    assert done, "the syncer kept running after it was cancelled"
    assert len(durable) + len(remaining) == SYNC_ROWS


@pytest.mark.parametrize(
    "status, kind",
    [
        (400, BadRequest),
        (404, BadRequest),
        (422, BadRequest),
        (302, BadRequest),
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (408, Retryable),
        (409, Retryable),
        (429, RateLimited),
        (500, Retryable),
        (502, Retryable),
        (503, Retryable),
        (529, Retryable),
    ],
)
def test_each_status_means_what_openai_clients_expect(status, kind):
    payload = {"error": {"message": "why", "type": "some_error", "param": "p"}}

    error = error_for_status(status, payload, json.dumps(payload), {"retry-after": "2"})

    assert type(error) is kind
    assert error.status == status
    if kind is not BadRequest or status != 302:
        assert (error.message, error.type, error.param) == ("why", "some_error", "p")


def test_an_html_error_page_is_reported_by_status_and_a_snippet():
    page = "<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>"

    error = error_for_status(502, None, page, {})

    assert isinstance(error, Retryable)
    assert error.type == "http_502"
    assert "502 Bad Gateway" in error.message and "\n" not in error.message


def test_a_429_for_exhausted_quota_stops_the_run_instead_of_being_retried():
    payload = {
        "error": {
            "message": "You exceeded your current quota",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
            "param": None,
        }
    }

    error = error_for_status(429, payload, json.dumps(payload), {})

    assert isinstance(error, AuthenticationFailed)


def test_latency_percentiles_are_within_two_percent_in_constant_memory():
    from batcher.outputs.stats import LatencyHistogram

    histogram = LatencyHistogram()
    values = [float(v) for v in range(1, 10_001)]
    for v in values:
        histogram.add(v)

    assert histogram.percentile(0.50) == pytest.approx(5000, rel=0.02)
    assert histogram.percentile(0.95) == pytest.approx(9500, rel=0.02)
    assert LatencyHistogram().percentile(0.5) is None


def test_idset_finds_members_and_repeats_in_compact_form():
    from batcher.inputs.idset import IdSet

    ids = IdSet(f"row-{i}" for i in range(50_000))
    ids.add("row-17")

    assert "row-49999" in ids and "row-0" in ids
    assert "row-50000" not in ids and "" not in ids
    assert ids.repeated_hashes() == {IdSet.hash_of("row-17")}
    assert len(ids) == 50_001


def _usage(prompt, completion):
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def test_journal_lines_of_any_shape_load_alike_by_the_fast_path_or_the_full_parse(tmp_path):
    from batcher.jsoncodec import dumps
    from batcher.store.checkpoint import Checkpoint

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    records = [
        {"id": "plain", "row_number": 1, "usage": _usage(3, 2), "cost_usd": 0.25, "content": "x"},
        {"id": 'quo"te', "row_number": 2, "usage": _usage(1, 1), "cost_usd": 1e-05, "content": "y"},
        {"id": "no-usage", "row_number": 4, "usage": None, "cost_usd": None, "content": '"usage":{"x":9}'},
        {  # an answer that looks like the start of a line must not be read as one
            "id": "nested",
            "row_number": 5,
            "usage": _usage(2, 2),
            "cost_usd": None,  # a model with no price
            "response": {"body": {"id": "x", "row_number": 9, "usage": None, "cost_usd": 5}},
        },
        {"id": "spaced", "row_number": 7, "usage": _usage(10, 10), "cost_usd": 2},  # not batcher's layout
    ]
    text = "".join(dumps(r) + "\n" for r in records[:4]) + json.dumps(records[4]) + "\n"
    (run_dir / "results.jsonl").write_text(text)
    fast = []
    read_journal(run_dir / "results.jsonl", lambda record: None, fast.extend, repair=False)

    by_position = Checkpoint(run_dir).load(by_position=True)
    by_id = Checkpoint(run_dir).load(by_position=False)

    assert [line[0] for line in fast] == [b"plain", b'quo\\"te', b"no-usage", b"nested"]
    for progress in (by_position, by_id):
        assert len(progress.done) == 5
        assert all(progress.done.has(r["id"], r["row_number"]) for r in records)
        assert (progress.prompt_tokens, progress.completion_tokens) == (16, 15)
        assert progress.cost_usd == pytest.approx(2.25001) and progress.unpriced == 1
    assert [n for n in range(12) if by_position.done.has("?", n)] == [1, 2, 4, 5, 7]
    assert not by_id.done.has("other", 1)


def test_a_journal_line_without_a_row_number_makes_the_load_go_by_id(tmp_path):
    from batcher.jsoncodec import dumps
    from batcher.store.checkpoint import Checkpoint

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = [{"id": "a", "row_number": 1, "usage": None}, {"id": "b", "usage": None}]
    (run_dir / "results.jsonl").write_text("".join(dumps(r) + "\n" for r in lines))

    progress = Checkpoint(run_dir).load(by_position=True)

    assert progress.done.positions is None
    assert progress.done.has("a", None) and progress.done.has("b", None)


@pytest.fixture
def codecs(monkeypatch):
    """batcher.jsoncodec loaded with orjson (installed by the test extra), and as if without it."""
    import importlib
    import sys

    import orjson  # noqa: F401  (the test extra installs it: fail loudly if not)

    import batcher.jsoncodec as codec

    fast = importlib.reload(codec)
    fast_functions = fast.dumpb, fast.canonical
    monkeypatch.setitem(sys.modules, "orjson", None)  # an import of it now fails
    stdlib = importlib.reload(codec)  # the same module object, reloaded
    yield fast_functions, (stdlib.dumpb, stdlib.canonical), stdlib.orjson
    monkeypatch.undo()
    importlib.reload(codec)


JSON_VALUES = [
    {"id": "r1", "row_number": 1, "usage": None, "content": 'héllo \u2028 "quoted"\n', "n": [1, 2.5, -0.0]},
    {"big": 2**70, "small": -(2**63), "flags": [True, False, None], "nested": {"a": {"b": []}}},
    {"when": __import__("datetime").date(2026, 11, 25), "emoji": "\U0001f600", "ctrl": "\x00\x1f"},
    [1e300, 1e-300, 0.1, 12345678901234567890.0],
]


@pytest.mark.parametrize("value", JSON_VALUES)
def test_json_codec_writes_the_same_bytes_with_orjson_or_the_stdlib(codecs, value):
    (fast_dumpb, fast_canonical), (stdlib_dumpb, stdlib_canonical), orjson_without = codecs

    assert orjson_without is None
    assert fast_dumpb(value) == stdlib_dumpb(value)
    assert fast_canonical(value) == stdlib_canonical(value)  # request keys agree across installs
    # The one documented difference, which also shows each is what it claims to be:
    assert (fast_dumpb(float("nan")), stdlib_dumpb(float("nan"))) == (b"null", b"NaN")

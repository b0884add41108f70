"""The embedded simulator serves OpenAI's Files and Batches endpoints, as the official SDK sees them."""

from __future__ import annotations

import json
import time

import openai
import pytest

from batcher.simulator.batchinput import enqueued_tokens
from tests.helpers import TEST_KEY

CHAT = "/v1/chat/completions"
ENDED = ("completed", "failed", "expired", "cancelled")


@pytest.fixture
def client(simulator_factory):
    """An SDK client on a fresh simulator; `client.simulator` is the simulator (for its ledger)."""

    def make(key: str = TEST_KEY, **config) -> openai.OpenAI:
        simulator = simulator_factory(**config)
        sdk = openai.OpenAI(base_url=simulator.base_url, api_key=key, max_retries=0, timeout=10)
        sdk.simulator = simulator
        return sdk

    return make


def body(prompt: str, **extra) -> dict:
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def request_line(custom_id: str, prompt: str | None = None, **extra) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": body(prompt or f"prompt {custom_id}", **extra),
    }


def lines(n: int) -> list[dict]:
    return [request_line(f"row-{i}") for i in range(n)]


def upload(sdk: openai.OpenAI, requests: list[dict] | bytes) -> str:
    content = (
        requests if isinstance(requests, bytes) else "".join(json.dumps(r) + "\n" for r in requests).encode()
    )
    return sdk.files.create(file=("input.jsonl", content), purpose="batch").id


def submit(sdk: openai.OpenAI, requests: list[dict] | bytes, **metadata: str):
    return sdk.batches.create(
        input_file_id=upload(sdk, requests), endpoint=CHAT, completion_window="24h", metadata=metadata or None
    )


def wait(sdk: openai.OpenAI, batch_id: str, until=ENDED, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in until or time.monotonic() > deadline:
            return batch
        time.sleep(0.03)


def download(sdk: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines()]


# -- files ---------------------------------------------------------------------------------


def test_upload_answers_a_file_object_serves_its_bytes_and_deletes_it(client):
    sdk = client()
    content = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'

    uploaded = sdk.files.create(file=("requests.jsonl", content), purpose="batch")

    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose, uploaded.status) == (
        len(content),
        "requests.jsonl",
        "batch",
        "processed",
    )
    assert sdk.files.retrieve(uploaded.id) == uploaded
    assert sdk.files.content(uploaded.id).content == content
    assert [f.id for f in sdk.files.list(purpose="batch")] == [uploaded.id]
    assert sdk.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(uploaded.id)


def test_upload_for_batch_refuses_a_file_not_named_jsonl_and_an_unknown_purpose(client):
    sdk = client()

    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        sdk.files.create(file=("input.csv", b"a,b\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        sdk.files.create(file=("input.jsonl", b"{}\n"), purpose="homework")


def test_files_and_batches_need_the_key_as_chat_does(client):
    sdk = client(key="sk-wrong", api_key=TEST_KEY)

    with pytest.raises(openai.AuthenticationError):
        sdk.files.create(file=("input.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.AuthenticationError):
        sdk.batches.list()


# -- a batch's life ------------------------------------------------------------------------


def test_batch_runs_to_completed_with_output_and_error_lines_in_openai_shape(client):
    sdk = client()
    requests = [*lines(4), request_line("bad", temperature=5)]

    created = submit(sdk, requests)
    done = wait(sdk, created.id)

    assert created.status == "validating" and created.id.startswith("batch_")
    assert done.status == "completed"
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.request_counts.model_dump() == {"total": 5, "completed": 4, "failed": 1}
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens > 0
    output = download(sdk, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == [f"row-{i}" for i in range(4)]
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        assert line["response"]["body"]["object"] == "chat.completion"
    [refused] = download(sdk, done.error_file_id)
    assert refused["custom_id"] == "bad" and refused["error"] is None
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "temperature"
    assert sdk.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_batch_answers_are_the_online_answers_each_counted_once_in_the_ledger(client):
    sdk = client()
    requests = lines(3)

    done = wait(sdk, submit(sdk, requests).id)

    online = sdk.chat.completions.create(**requests[0]["body"])
    by_id = {line["custom_id"]: line["response"]["body"] for line in download(sdk, done.output_file_id)}
    assert by_id["row-0"]["choices"][0]["message"]["content"] == online.choices[0].message.content
    assert by_id["row-0"]["usage"] == online.usage.model_dump(exclude_none=True)
    assert [sdk.simulator.completions_for(f"prompt row-{i}") for i in range(3)] == [2, 1, 1]


def test_invalid_input_file_fails_the_batch_naming_each_bad_line(client):
    sdk = client()
    content = b"".join(
        [
            json.dumps(request_line("a")).encode() + b"\n",
            b"this is not json\n",
            json.dumps(request_line("a")).encode() + b"\n",
            json.dumps({**request_line("c"), "url": "/v1/embeddings"}).encode() + b"\n",
        ]
    )

    failed = wait(sdk, submit(sdk, content).id)

    assert failed.status == "failed" and failed.failed_at
    assert failed.errors.object == "list"
    assert [(e.code, e.line, e.param) for e in failed.errors.data] == [
        ("invalid_json_line", 2, None),
        ("duplicate_custom_id", 3, "custom_id"),
        ("url_mismatch", 4, "url"),
    ]
    assert failed.output_file_id is None and failed.error_file_id is None
    assert sdk.simulator.server.completions == {}


def test_batch_over_the_enqueued_token_limit_fails_until_the_live_batches_finish(client):
    requests = lines(3)
    one_batch = sum(enqueued_tokens(r["body"]) for r in requests)
    sdk = client(batch_token_limit=one_batch + 10, batch_requests_per_second=5)

    first = submit(sdk, requests)
    wait(sdk, first.id, until=("in_progress",))
    refused = wait(sdk, submit(sdk, requests).id)
    wait(sdk, first.id)
    later = wait(sdk, submit(sdk, requests).id)

    assert refused.status == "failed"
    assert [e.code for e in refused.errors.data] == ["token_limit_exceeded"]
    assert "Enqueued token limit reached" in refused.errors.data[0].message
    assert later.status == "completed"


def test_a_single_batch_over_the_enqueued_token_limit_fails(client):
    sdk = client(batch_token_limit=10)

    refused = wait(sdk, submit(sdk, lines(2)).id)

    assert refused.status == "failed" and refused.errors.data[0].code == "token_limit_exceeded"


# -- listing -------------------------------------------------------------------------------


def test_list_batches_newest_first_in_pages_and_find_one_by_metadata(client):
    sdk = client()
    made = [submit(sdk, lines(1), run="r1", part=str(part)).id for part in range(3)]

    page = sdk.batches.list(limit=2)
    everything = list(sdk.batches.list(limit=2))  # the SDK follows `after` while `has_more`

    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    assert [b.id for b in everything] == made[::-1]
    found = [b.id for b in everything if b.metadata == {"run": "r1", "part": "1"}]
    assert found == [made[1]]


# -- cancel and expiry ---------------------------------------------------------------------


def test_cancel_keeps_the_answered_requests_and_returns_the_rest_as_batch_cancelled(client):
    sdk = client(batch_requests_per_second=20)
    created = submit(sdk, lines(20))
    while sdk.batches.retrieve(created.id).request_counts.completed < 3:
        time.sleep(0.03)

    cancelling = sdk.batches.cancel(created.id)
    cancelled = wait(sdk, created.id)

    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    answered = {line["custom_id"] for line in download(sdk, cancelled.output_file_id)}
    not_run = download(sdk, cancelled.error_file_id)
    assert 3 <= len(answered) < 20 and cancelled.request_counts.completed == len(answered)
    assert {line["error"]["code"] for line in not_run} == {"batch_cancelled"}
    assert answered | {line["custom_id"] for line in not_run} == {f"row-{i}" for i in range(20)}
    assert all(line["response"] is None for line in not_run)
    assert sum(sdk.simulator.server.completions.values()) == len(answered)
    with pytest.raises(openai.BadRequestError, match="Cannot cancel"):
        sdk.batches.cancel(created.id)


def test_a_batch_goes_on_answering_while_cancelling_for_the_configured_seconds_then_stops(client):
    sdk = client(batch_requests_per_second=20, batch_cancelling_seconds=0.5)
    created = submit(sdk, lines(60))  # 3 s of work
    while sdk.batches.retrieve(created.id).request_counts.completed < 5:
        time.sleep(0.03)

    asked = sdk.batches.cancel(created.id).request_counts.completed
    time.sleep(0.25)
    still = sdk.batches.retrieve(created.id)
    cancelled = wait(sdk, created.id)

    assert still.status == "cancelling" and still.request_counts.completed > asked  # answering on
    assert cancelled.status == "cancelled"
    answered = len(download(sdk, cancelled.output_file_id))
    assert asked + 5 <= answered <= asked + 0.5 * 20 + 2  # half a second more at 20 a second
    assert answered < 60 and sum(sdk.simulator.server.completions.values()) == answered


def test_cancel_while_validating_runs_nothing(client):
    sdk = client(batch_validating_seconds=0.5)
    created = submit(sdk, lines(3))

    sdk.batches.cancel(created.id)
    cancelled = wait(sdk, created.id)

    assert cancelled.status == "cancelled"
    assert (cancelled.output_file_id, cancelled.error_file_id) == (None, None)
    assert sdk.simulator.server.completions == {}


def test_expiring_batch_keeps_its_answers_and_returns_the_rest_as_batch_expired(client):
    sdk = client(batch_expire_after=3, batch_expiring_batches=1)

    expired = wait(sdk, submit(sdk, lines(8)).id)
    second = wait(sdk, submit(sdk, lines(8)).id)

    assert expired.status == "expired" and expired.expired_at
    assert expired.request_counts.model_dump() == {"total": 8, "completed": 3, "failed": 0}
    assert len(download(sdk, expired.output_file_id)) == 3
    not_run = download(sdk, expired.error_file_id)
    assert [line["error"]["code"] for line in not_run] == ["batch_expired"] * 5
    assert second.status == "completed"  # only the first batch created expires


def test_expire_fraction_expires_part_way(client):
    sdk = client(batch_expire_fraction=0.5)

    expired = wait(sdk, submit(sdk, lines(10)).id)

    assert expired.status == "expired" and expired.request_counts.completed == 5


# -- faults --------------------------------------------------------------------------------


def test_line_error_rate_answers_seeded_lines_500_in_the_error_file(client):
    failing = []
    for _ in range(2):  # two simulators with the same seed fail the same lines
        sdk = client(batch_line_error_rate=0.5, seed=7)
        done = wait(sdk, submit(sdk, lines(20)).id)
        errors = download(sdk, done.error_file_id)
        failing.append(sorted(line["custom_id"] for line in errors))
        assert {line["response"]["status_code"] for line in errors} == {500}
        assert errors[0]["response"]["body"]["error"]["type"] == "server_error"
        assert done.request_counts.failed == len(errors) and 0 < len(errors) < 20
        assert sum(sdk.simulator.server.completions.values()) == done.request_counts.completed

    assert failing[0] == failing[1]


def test_refused_create_makes_no_batch(client):
    sdk = client(batch_create_error_rate=1.0)
    file_id = upload(sdk, lines(2))

    with pytest.raises(openai.InternalServerError):
        sdk.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")

    assert list(sdk.batches.list()) == []


def test_lost_create_makes_the_batch_which_listing_by_metadata_finds(client):
    sdk = client(batch_create_lost_rate=1.0)
    file_id = upload(sdk, lines(2))

    with pytest.raises(openai.InternalServerError):
        sdk.batches.create(
            input_file_id=file_id, endpoint=CHAT, completion_window="24h", metadata={"part": "7"}
        )

    [found] = [b for b in sdk.batches.list() if b.metadata == {"part": "7"}]
    assert found.input_file_id == file_id
    assert wait(sdk, found.id).status == "completed"


def test_create_refuses_an_unknown_file_a_wrong_window_and_an_unserved_endpoint(client):
    sdk = client()
    file_id = upload(sdk, lines(1))

    with pytest.raises(openai.BadRequestError, match="No such File"):
        sdk.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="completion_window|24h"):
        sdk.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="48h")
    with pytest.raises(openai.BadRequestError, match="endpoint|serves"):
        sdk.batches.create(input_file_id=file_id, endpoint="/v1/moderations", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_nope")

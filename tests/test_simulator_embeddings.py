"""The embedded simulator serves `POST /v1/embeddings` as OpenAI does, as the SDK and the wire see it."""

from __future__ import annotations

import base64
import json
import math
import time
import urllib.error
import urllib.request
from array import array

import openai
import pytest

from batcher.simulator import count_tokens, floats, vector_for
from tests.helpers import TEST_KEY

SMALL = "text-embedding-3-small"
EMBEDDINGS = "/v1/embeddings"
INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
)


@pytest.fixture
def client(simulator_factory):
    """An SDK client on a fresh simulator; `client.simulator` is the simulator (for its ledger)."""

    def make(**config) -> openai.OpenAI:
        simulator = simulator_factory(**config)
        sdk = openai.OpenAI(base_url=simulator.base_url, api_key=TEST_KEY, max_retries=0, timeout=10)
        sdk.simulator = simulator
        return sdk

    return make


def post(sdk: openai.OpenAI, body: dict, path: str = "/embeddings") -> tuple[int, dict]:
    """POST a body as it is, past the SDK: the status and the JSON on the wire."""
    request = urllib.request.Request(
        str(sdk.base_url).rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def refusal(sdk: openai.OpenAI, **params) -> dict:
    """The error body of a request the simulator refuses with 400."""
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(**params)
    return caught.value.body


# -- the answer ----------------------------------------------------------------------------


def test_a_string_is_answered_one_embedding_in_openai_shape(client):
    sdk = client()

    status, answer = post(sdk, {"model": SMALL, "input": "The tide comes in.", "dimensions": 4})

    assert status == 200
    assert list(answer) == ["object", "data", "model", "usage"]
    assert answer["object"] == "list" and answer["model"] == SMALL
    [item] = answer["data"]
    assert item == {
        "object": "embedding",
        "index": 0,
        "embedding": floats(vector_for("The tide comes in.", 4)),
    }
    assert answer["usage"] == {"prompt_tokens": 5, "total_tokens": 5}  # four words and a full stop


def test_an_array_of_strings_is_answered_one_embedding_each_in_order(client):
    texts = ["first row", "second row", "third row"]

    answer = client().embeddings.create(model=SMALL, input=texts, dimensions=32)

    assert [item.index for item in answer.data] == [0, 1, 2]
    assert [item.embedding for item in answer.data] == [floats(vector_for(t, 32)) for t in texts]


def test_token_inputs_one_array_or_an_array_of_arrays_count_their_length(client):
    sdk = client()

    one = sdk.embeddings.create(model=SMALL, input=[1, 2, 3], dimensions=8)
    two = sdk.embeddings.create(model=SMALL, input=[[1, 2, 3], [4, 5]], dimensions=8)

    assert len(one.data) == 1 and one.usage.prompt_tokens == 3
    assert one.data[0].embedding == two.data[0].embedding == floats(vector_for([1, 2, 3], 8))
    assert len(two.data) == 2 and two.usage.prompt_tokens == two.usage.total_tokens == 5


def test_usage_counts_the_tokens_of_every_input(client):
    texts = ["Tell me about tides.", "And the moon, please!"]

    answer = client().embeddings.create(model=SMALL, input=texts, dimensions=8)

    assert answer.usage.prompt_tokens == answer.usage.total_tokens == sum(map(count_tokens, texts))


@pytest.mark.parametrize(
    "model, size",
    [(SMALL, 1536), ("text-embedding-3-large", 3072), ("text-embedding-ada-002", 1536), ("bge-small", 48)],
)
def test_vectors_have_the_models_native_size_unless_dimensions_is_given(client, model, size):
    sdk = client(embedding_dimensions=48)  # the size of any model not OpenAI's

    native = sdk.embeddings.create(model=model, input="hello")

    assert len(native.data[0].embedding) == size
    if model != "text-embedding-ada-002":
        assert len(sdk.embeddings.create(model=model, input="hello", dimensions=16).data[0].embedding) == 16


# -- the vectors ---------------------------------------------------------------------------


def test_base64_on_the_wire_is_the_float_vector_as_little_endian_float32(client):
    sdk = client()
    ask = {"model": SMALL, "input": ["a row", "another row"], "dimensions": 64}

    _, as_base64 = post(sdk, {**ask, "encoding_format": "base64"})
    _, as_floats = post(sdk, {**ask, "encoding_format": "float"})

    decoded = [array("f", base64.b64decode(item["embedding"])).tolist() for item in as_base64["data"]]
    assert decoded == [item["embedding"] for item in as_floats["data"]]
    assert base64.b64decode(as_base64["data"][1]["embedding"]) == vector_for("another row", 64)


def test_the_sdk_default_base64_reads_the_same_vector_as_float(client):
    sdk = client()

    default = sdk.embeddings.create(model=SMALL, input="a row", dimensions=64)  # the SDK asks base64
    explicit = sdk.embeddings.create(model=SMALL, input="a row", dimensions=64, encoding_format="float")

    assert default.data[0].embedding == explicit.data[0].embedding


def test_a_text_with_a_lone_surrogate_is_embedded_not_a_server_error(client):
    status, answer = post(client(), {"model": SMALL, "input": "broken \ud800 text", "dimensions": 4})

    assert status == 200 and len(answer["data"]) == 1


@pytest.mark.parametrize("dimensions", [1, 3, 256, 1536, 3072])
def test_vectors_are_unit_vectors(dimensions):
    vector = floats(vector_for(f"some text {dimensions}", dimensions))

    assert len(vector) == dimensions
    assert math.sqrt(math.fsum(v * v for v in vector)) == pytest.approx(1.0, abs=1e-5)


def test_the_same_text_gets_the_same_vector_and_different_texts_different_ones(client):
    first, second = client(seed=1), client(seed=2)  # the seed of faults plays no part
    texts = [f"row {i}" for i in range(2000)]

    one = first.embeddings.create(model=SMALL, input=texts, dimensions=64)
    again = second.embeddings.create(model=SMALL, input=texts, dimensions=64)

    vectors = [tuple(item.embedding) for item in one.data]
    assert vectors == [tuple(item.embedding) for item in again.data]
    assert len(set(vectors)) == len(texts)


# -- refusals ------------------------------------------------------------------------------


def test_ada_002_refuses_dimensions_with_openais_message(client):
    body = refusal(client(), model="text-embedding-ada-002", input="hi", dimensions=256)

    assert body["message"] == "This model does not support specifying dimensions."
    assert body["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "dimensions, message", [(0, "Expected a value >= 1"), (1537, "Expected a value <= 1536")]
)
def test_dimensions_must_be_positive_and_at_most_the_native_size(client, dimensions, message):
    body = refusal(client(), model=SMALL, input="hi", dimensions=dimensions)

    assert body["param"] == "dimensions" and message in body["message"]


@pytest.mark.parametrize("value", ["", [], [""], [[]], ["text", [1, 2]], [1.5], {"text": "hi"}, None])
def test_an_empty_or_malformed_input_is_refused_as_openai_words_it(client, value):
    status, answer = post(client(), {"model": SMALL, "input": value})

    assert status == 400
    assert answer["error"] == {
        "message": INVALID_INPUT,
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }


def test_unknown_fields_and_formats_are_refused(client):
    sdk = client()

    unknown_status, unknown = post(sdk, {"model": SMALL, "input": "hi", "truncate": True})
    format_status, wrong_format = post(sdk, {"model": SMALL, "input": "hi", "encoding_format": "int8"})

    assert unknown_status == format_status == 400
    assert unknown["error"]["message"] == "Unrecognized request argument supplied: truncate"
    assert wrong_format["error"]["param"] == "encoding_format"


def test_an_unknown_model_is_answered_404_as_chat_is(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client(models=(SMALL,)).embeddings.create(model="no-such-model", input="hi")

    assert caught.value.body["code"] == "model_not_found"


def test_more_inputs_than_openai_allows_are_refused_naming_the_count(client):
    body = refusal(client(), model=SMALL, input=["x"] * 2049)

    assert body["param"] == "input"
    assert body["message"] == (
        "Invalid 'input': maximum length of array is 2048, but got an array with length 2049."
    )


@pytest.mark.parametrize(
    "limits, inputs, message",
    [
        (
            {"embedding_max_inputs": 3},
            ["a", "b", "c", "d"],
            "Invalid 'input': maximum length of array is 3, but got an array with length 4.",
        ),
        (
            {"embedding_max_input_tokens": 5},
            ["one two", "one two three four five six"],
            "This model's maximum context length is 5 tokens, however you requested 6 tokens "
            "(6 in your prompt; 0 for the completion). Please reduce your prompt; or completion length.",
        ),
        (
            {"embedding_max_request_tokens": 10},
            ["one two three four", "five six seven eight", "nine ten eleven"],
            "Requested 11 tokens, max 10 tokens per request",
        ),
    ],
)
def test_the_limits_refuse_a_request_with_param_input(client, limits, inputs, message):
    sdk = client(**limits)

    body = refusal(sdk, model=SMALL, input=inputs)

    assert (body["param"], body["message"]) == ("input", message)
    assert sdk.embeddings.create(model=SMALL, input=inputs[:1], dimensions=4).data  # within them: served


def test_reject_marker_refuses_a_packed_request_holding_the_bad_row(client):
    sdk = client(reject_marker="POISON")

    body = refusal(sdk, model=SMALL, input=["fine", "row with POISON in it", "fine too"])

    assert body["param"] == "input" and "reject_marker" in body["message"]
    assert sdk.simulator.embeddings_for("fine") == 0


# -- limits, faults and the ledger ---------------------------------------------------------


def test_rate_limits_count_a_request_against_rpm_and_its_input_tokens_against_tpm(client):
    sdk = client(rpm=60)  # a burst of one request

    sdk.embeddings.create(model=SMALL, input=["one two", "three"], dimensions=4)
    with pytest.raises(openai.RateLimitError):
        sdk.embeddings.create(model=SMALL, input="again", dimensions=4)

    assert sdk.simulator.server.admitted_tokens == 3  # the inputs only: no completion is charged


def test_injected_faults_meet_embeddings_as_they_meet_chat(client):
    sdk = client(error_rate=1.0)

    with pytest.raises(openai.InternalServerError):
        sdk.embeddings.create(model=SMALL, input="hi", dimensions=4)

    assert sdk.simulator.server.statuses == {"500": 1}
    assert sdk.simulator.embeddings_for("hi") == 0  # nothing delivered, nothing billed


def test_the_ledger_counts_each_input_delivered_and_the_requests_to_embeddings(client):
    sdk = client()

    sdk.embeddings.create(model=SMALL, input=["a", "b"], dimensions=4)
    sdk.embeddings.create(model=SMALL, input="a", dimensions=4)
    sdk.embeddings.create(model=SMALL, input=[[7, 8]], dimensions=4)
    post(sdk, {"model": SMALL, "input": ""})
    sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    sim = sdk.simulator
    assert [sim.embeddings_for(item) for item in ("a", "b", [7, 8], "c")] == [2, 1, 1, 0]
    assert sim.server.ledger.embedding_requests == 4 and sim.requests == 5
    with urllib.request.urlopen(sim.base_url.removesuffix("/v1") + "/_simulator/ledger") as response:
        report = json.loads(response.read())
    assert report["embedded"] == {"a": 2, "b": 1, "[7, 8]": 1}
    assert report["embedding_requests"] == 4 and report["completions"] == {"hi": 1}


# -- the Batch API -------------------------------------------------------------------------


def test_a_batch_of_embeddings_is_answered_as_online_and_counted_once(client):
    sdk = client(reject_marker="POISON")
    lines = [
        {"custom_id": f"row-{i}", "method": "POST", "url": EMBEDDINGS, "body": body}
        for i, body in enumerate(
            [
                {"model": SMALL, "input": ["first", "second"], "dimensions": 8, "encoding_format": "base64"},
                {"model": SMALL, "input": "third", "dimensions": 8},
                {"model": SMALL, "input": ["fine", "POISON"], "dimensions": 8},
            ]
        )
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file_id = sdk.files.create(file=("input.jsonl", content), purpose="batch").id

    created = sdk.batches.create(input_file_id=file_id, endpoint=EMBEDDINGS, completion_window="24h")
    done = wait(sdk, created.id)

    assert created.endpoint == EMBEDDINGS and done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    assert done.usage.input_tokens == 3 and done.usage.output_tokens == 0
    output = {line["custom_id"]: line["response"] for line in download(sdk, done.output_file_id)}
    assert output["row-0"]["status_code"] == 200 and output["row-0"]["body"]["object"] == "list"
    first = output["row-0"]["body"]["data"][0]["embedding"]
    assert base64.b64decode(first) == vector_for("first", 8)
    assert output["row-1"]["body"]["data"][0]["embedding"] == floats(vector_for("third", 8))
    [refused] = download(sdk, done.error_file_id)
    assert refused["custom_id"] == "row-2" and refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "input"
    assert [sdk.simulator.embeddings_for(t) for t in ("first", "second", "third", "fine")] == [1, 1, 1, 0]


def test_a_chat_line_in_an_embeddings_batch_fails_validation_as_a_url_mismatch(client):
    sdk = client()
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": SMALL}}
    content = (json.dumps(line) + "\n").encode()
    file_id = sdk.files.create(file=("input.jsonl", content), purpose="batch").id

    failed = wait(
        sdk, sdk.batches.create(input_file_id=file_id, endpoint=EMBEDDINGS, completion_window="24h").id
    )

    assert failed.status == "failed" and [e.code for e in failed.errors.data] == ["url_mismatch"]


def wait(sdk: openai.OpenAI, batch_id: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled") or time.monotonic() > deadline:
            return batch
        time.sleep(0.03)


def download(sdk: openai.OpenAI, file_id: str | None) -> list[dict]:
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines()] if file_id else []

"""The embedded simulator keeps the Chat Completions contract, as the official SDK sees it."""

from __future__ import annotations

import json

import openai
import pytest

from tests.helpers import TEST_KEY


@pytest.fixture
def client(simulator_factory):
    def make(key: str = TEST_KEY, **config) -> openai.OpenAI:
        simulator = simulator_factory(**config)
        return openai.OpenAI(base_url=simulator.base_url, api_key=key, max_retries=0, timeout=10)

    return make


def test_answers_are_deterministic_with_usage(client):
    sdk = client()
    ask = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell me about tides."}])

    first = sdk.chat.completions.create(**ask)
    second = sdk.chat.completions.create(**ask)

    assert first.object == "chat.completion"
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    usage = first.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def test_max_tokens_truncates_with_finish_reason_length(client):
    reply = client().chat.completions.create(
        model="m", max_tokens=3, messages=[{"role": "user", "content": "Tell me a long story."}]
    )

    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_streaming_sends_chunks_up_to_done_with_usage(client):
    sdk = client()
    ask = dict(model="m", messages=[{"role": "user", "content": "Describe a forest."}])
    whole = sdk.chat.completions.create(**ask)

    chunks = list(sdk.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_tools_are_called_with_arguments_matching_their_schema(client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                },
            },
        }
    ]

    reply = client().chat.completions.create(
        model="m", tools=tools, messages=[{"role": "user", "content": "Call get_weather for Rome"}]
    )

    assert reply.choices[0].finish_reason == "tool_calls"
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city", "days"}


def test_response_format_json_schema_and_json_object(client):
    sdk = client()
    schema = {"type": "object", "properties": {"label": {"enum": ["yes", "no"]}, "score": {"type": "number"}}}

    shaped = sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Is it?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
    )
    loose = sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Answer in json."}],
        response_format={"type": "json_object"},
    )

    verdict = json.loads(shaped.choices[0].message.content)
    assert verdict["label"] in ("yes", "no") and isinstance(verdict["score"], float)
    assert isinstance(json.loads(loose.choices[0].message.content), dict)


@pytest.mark.parametrize(
    "params, param",
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.[0].role"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages.[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages.[0].content"),
        ({"response_format": {"type": "json_object"}}, "messages"),
    ],
)
def test_invalid_requests_are_answered_400_with_param(client, params, param):
    sdk = client(models=("gpt-4o-mini",))
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **params}

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(**request)

    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.body["param"] == param


def test_an_unknown_model_is_answered_404_model_not_found_as_openai_does(client):
    sdk = client(models=("gpt-4o-mini",))

    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])

    assert caught.value.status_code == 404
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"


def test_a_wrong_key_is_answered_401(client):
    sdk = client(key="sk-wrong", api_key="sk-right")

    with pytest.raises(openai.AuthenticationError) as caught:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    assert caught.value.body["type"] == "authentication_error"


def test_rate_limits_answer_429_with_retry_after_and_ratelimit_headers(client):
    sdk = client(rpm=60)  # a burst of one request
    ask = dict(model="m", messages=[{"role": "user", "content": "hi"}])

    first = sdk.chat.completions.with_raw_response.create(**ask)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(**ask)

    assert first.headers["x-ratelimit-limit-requests"] == "60"
    assert "x-ratelimit-reset-requests" in first.headers
    headers = caught.value.response.headers
    assert caught.value.body["type"] == "rate_limit_error"
    assert 0 < float(headers["retry-after-ms"]) <= 1000
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_injected_faults_follow_their_rates(client):
    sdk = client(error_rate=0.5, seed=1)
    outcomes = []
    for i in range(200):
        try:
            sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            outcomes.append("ok")
        except openai.InternalServerError:
            outcomes.append("500")

    assert 70 <= outcomes.count("500") <= 130

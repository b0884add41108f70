"""Several endpoints for one model: spread by capacity, failing ones rested, figures per endpoint."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from batcher.errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    NoEndpointLeft,
    RateLimited,
    Retryable,
)
from batcher.job.endpoints import EndpointConfig, endpoint_configs
from batcher.kinds.chat import ChatKind
from batcher.kinds.prompts import TEMPLATE, RequestBuilder
from batcher.limits.ratelimits import Verdict
from batcher.transports.online.endpoints import REST_AFTER, REST_SECONDS, Endpoint, Router
from tests.helpers import TEST_KEY, prompt_for, read_jsonl, review_rows, write_jsonl


def job_file(tmp_path, endpoints, *, rows=60, extra=""):
    write_jsonl(tmp_path / "in.jsonl", review_rows(rows))
    tables = "".join(
        "\n[[endpoints]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in endpoint.items())
        for endpoint in endpoints
    )
    path = tmp_path / "job.toml"
    path.write_text(
        'input = "in.jsonl"\noutput = "run"\nmodel = "gpt-4o-mini"\n'
        'prompt = "Classify the sentiment of this review: {text}"\nconcurrency = 16\n' + extra + tables
    )
    return path


def summary(tmp_path):
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def test_work_is_spread_in_proportion_to_each_endpoints_limits(cli, simulator_factory, tmp_path):
    small = simulator_factory(latency_ms=20)
    large = simulator_factory(latency_ms=20)
    job = job_file(
        tmp_path,
        [
            {"name": "small", "base_url": small.base_url, "rpm": 1200},
            {"name": "large", "base_url": large.base_url, "rpm": 3600},
        ],
        rows=120,
    )

    result = cli("run", job)

    assert result.exit_code == 0, result.output
    assert small.requests + large.requests == 120
    # 1 s of burst each (20 and 60 requests), then 20/s and 60/s: about a quarter and three quarters.
    assert 15 <= small.requests <= 45, (small.requests, large.requests)
    endpoints = summary(tmp_path)["session"]["endpoints"]
    assert (
        endpoints["small"]["answered"] == small.requests and endpoints["large"]["answered"] == large.requests
    )
    assert endpoints["large"]["tokens"] > endpoints["small"]["tokens"] > 0


def test_an_endpoint_that_keeps_failing_is_rested_and_its_rows_go_to_the_others(
    cli, simulator_factory, tmp_path
):
    broken = simulator_factory(error_rate=1.0)
    healthy = simulator_factory()
    job = job_file(
        tmp_path,
        [{"name": "broken", "base_url": broken.base_url}, {"name": "ok", "base_url": healthy.base_url}],
    )

    result = cli("run", job)

    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "run" / "results.jsonl")) == 60
    figures = summary(tmp_path)["session"]["endpoints"]
    assert figures["broken"]["answered"] == 0 and figures["ok"]["answered"] == 60
    # Held to one request at a time (it never answers, so its window never opens), then rested:
    # a few failures, not one per row. (Whether the run lasts long enough to rest it is timing.)
    assert broken.requests < 20


def endpoint(name: str, **limits) -> Endpoint:
    """An endpoint as a session builds one (never opened: these specifications send nothing)."""
    kind = ChatKind(RequestBuilder(TEMPLATE, template="{text}", system=None, defaults={}, id_column="id"))
    config = EndpointConfig(name, "simulator", **limits)  # (a simulator's limits are not shared)
    return Endpoint(config, "http://127.0.0.1:9/v1", kind=kind, timeout=1, connections=1)


SERVER_ERROR = Retryable("boom", type="internal_error", status=500)
REFUSED_KEY = AuthenticationFailed("Incorrect API key provided", type="invalid_request_error", status=401)


def fail_in_a_row(router: Router, endpoint: Endpoint, times: int) -> tuple[float, float]:
    """`times` server errors in a row; the clock just before and just after, to bracket a rest."""
    before = time.monotonic()
    for _ in range(times):
        router.failed(endpoint, SERVER_ERROR)
    return before, time.monotonic()


def test_an_endpoint_is_rested_after_failing_five_times_in_a_row_and_longer_each_time():
    first, second = endpoint("first"), endpoint("second")
    router = Router([first, second])

    fail_in_a_row(router, first, 4)
    router.failed(first, BadRequest("the row's own fault", type="invalid_request_error", status=400))
    assert first.available  # a row's own failure is not the endpoint's
    before, after = fail_in_a_row(router, first, 1)
    assert not first.available and first.stats.rests == 1
    assert before + REST_SECONDS <= first.resting_until <= after + REST_SECONDS
    assert second.available

    first.resting_until = 0.0
    before, after = fail_in_a_row(router, first, 5)
    assert before + 2 * REST_SECONDS <= first.resting_until <= after + 2 * REST_SECONDS

    router.answered(first, None, 10.0)  # an answer resets the rest to its first length
    first.resting_until = 0.0
    before, after = fail_in_a_row(router, first, 5)
    assert before + REST_SECONDS <= first.resting_until <= after + REST_SECONDS


def test_an_endpoints_rest_doubles_up_to_five_minutes():
    first = endpoint("first")
    router = Router([first, endpoint("second")])
    rests = []

    for _ in range(7):
        first.resting_until = 0.0
        before, _ = fail_in_a_row(router, first, REST_AFTER)
        rests.append(round(first.resting_until - before, 1))

    assert rests == [10, 20, 40, 80, 160, 300, 300]


def test_429s_are_counted_but_never_rest_an_endpoint():
    first = endpoint("first")
    router = Router([first, endpoint("second")])

    for _ in range(3 * REST_AFTER):
        assert router.failed(first, RateLimited("slow down", type="rate_limit_error", status=429)) is False

    assert first.available
    assert (first.stats.rate_limited, first.stats.failures, first.stats.rests) == (3 * REST_AFTER, 0, 0)


def test_a_refused_key_retires_its_endpoint_and_says_so_in_the_figures():
    strict, other = endpoint("strict"), endpoint("other")
    router = Router([strict, other])

    retired = router.failed(strict, REFUSED_KEY)

    assert retired is True  # the caller sends the row elsewhere at once
    assert not strict.available and other.available
    figures = router.summary()
    assert figures["strict"]["retired"] == "HTTP 401: Incorrect API key provided"
    assert figures["other"]["retired"] is None


def test_a_lone_endpoint_is_never_rested_or_retired_by_the_router():
    # With nothing to fall back on, the run's own rules decide (a refused key stops the run).
    only = endpoint("only")
    router = Router([only])

    fail_in_a_row(router, only, 3 * REST_AFTER)
    retired = router.failed(only, REFUSED_KEY)

    assert retired is False and only.available and only.stats.rests == 0
    assert only.stats.failures == 3 * REST_AFTER + 1
    assert router.summary() is None  # one endpoint's figures are the run's


def test_requests_go_only_to_endpoints_not_resting():
    resting, ready = endpoint("resting"), endpoint("ready")
    router = Router([resting, ready])
    fail_in_a_row(router, resting, REST_AFTER)

    async def send(n):
        chosen = []
        for _ in range(n):
            where, permit = await router.acquire(1)
            where.limits.settle(permit, Verdict.ANSWERED)
            chosen.append(where.name)
        return chosen

    assert asyncio.run(send(20)) == ["ready"] * 20


def test_when_every_endpoint_is_retired_a_request_stops_the_run_naming_each_reason():
    first, second = endpoint("first"), endpoint("second")
    router = Router([first, second])
    router.failed(first, REFUSED_KEY)
    router.retire(second, "does not serve this model")

    with pytest.raises(NoEndpointLeft) as stopped:
        asyncio.run(router.acquire(1))

    message = str(stopped.value)
    assert "first: HTTP 401: Incorrect API key provided; second: does not serve this model" in message
    assert "No row was marked failed" in message


def test_the_limits_in_force_are_the_sum_over_the_endpoints_still_in_use():
    small, large, unlimited = (
        endpoint("small", rpm=600),
        endpoint("large", rpm=1200, tpm=90_000),
        endpoint("u"),
    )

    assert Router([small, large]).limits() == (1800, None)  # one without a token limit: none overall
    assert Router([small, large, unlimited]).limits() == (None, None)
    router = Router([small, large])
    router.retire(small, "HTTP 401: refused")
    assert router.limits() == (1200, 90_000)
    router.retire(large, "HTTP 401: refused")
    assert router.limits() == (1800, None)  # all retired: what they were, for the figures


@pytest.mark.parametrize(
    "entries, message",
    [
        (["https://api.example.com/v1"], "endpoints[1] must be a table"),
        ([{"name": "a"}], "endpoints[1] needs a base_url"),
        (
            [{"base_url": "http://a/v1"}, {"base_url": "http://b/v1", "rpm": 0}],
            "endpoints[2]: rpm must be a positive",
        ),
        ([{"base_url": "http://a/v1", "tpm": True}], "endpoints[1]: 'tpm' must be int or float, got True"),
        ([{"base_url": "http://a/v1", "model": 4}], "endpoints[1]: 'model' must be str, got 4"),
        (
            [{"name": "x", "base_url": "http://a/v1"}, {"name": "x", "base_url": "http://b/v1"}],
            "different names",
        ),
    ],
)
def test_each_endpoint_entry_is_checked_and_named_by_its_place(entries, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        endpoint_configs(entries)


def test_an_endpoint_without_a_name_is_named_by_its_place_and_address():
    configs = endpoint_configs([{"base_url": "http://a:8000/v1/"}, {"name": "b", "base_url": "http://b/v1"}])

    assert [(c.name, c.base_url) for c in configs] == [
        ("1:http://a:8000/v1", "http://a:8000/v1"),
        ("b", "http://b/v1"),
    ]
    assert configs[0].api_key_env == "OPENAI_API_KEY" and configs[0].rpm is None


def test_an_endpoint_that_refuses_its_key_is_retired_and_the_run_goes_on(
    cli, simulator_factory, tmp_path, monkeypatch
):
    strict = simulator_factory(api_key="sk-only-this-one")
    healthy = simulator_factory()
    monkeypatch.setenv("OTHER_KEY", "sk-wrong")
    job = job_file(
        tmp_path,
        [
            {"name": "strict", "base_url": strict.base_url, "api_key_env": "OTHER_KEY"},
            {"name": "ok", "base_url": healthy.base_url},
        ],
        rows=30,
    )

    result = cli("run", job, env={"OTHER_KEY": "sk-wrong"})

    assert result.exit_code == 0, result.output
    figures = summary(tmp_path)["session"]["endpoints"]
    assert figures["strict"]["retired"].startswith("HTTP 401") and figures["ok"]["answered"] == 30
    assert strict.requests <= 16  # at most the first requests of each worker met the refusal
    assert "sk-wrong" not in result.output and TEST_KEY not in result.output


def test_when_every_endpoint_refuses_its_key_the_run_stops_resumably(cli, simulator_factory, tmp_path):
    first = simulator_factory(api_key="sk-a")
    second = simulator_factory(api_key="sk-b")
    job = job_file(tmp_path, [{"base_url": first.base_url}, {"base_url": second.base_url}], rows=10)

    result = cli("run", job)

    assert result.exit_code == 3
    assert "no endpoint can be used" in result.output and result.output.count("HTTP 401") == 2
    assert read_jsonl(tmp_path / "run" / "errors.jsonl") == []


def test_each_endpoint_can_name_the_model_its_own_way(cli, simulator_factory, tmp_path):
    gateway = simulator_factory()
    job = job_file(tmp_path, [{"base_url": gateway.base_url, "model": "openai/gpt-4o-mini"}], rows=3)

    result = cli("run", job)

    assert result.exit_code == 0, result.output
    assert {body["model"] for body in gateway.server.received} == {"openai/gpt-4o-mini"}
    assert gateway.completions_for(prompt_for(review_rows(1)[0])) == 1


def test_endpoints_and_a_job_wide_limit_or_an_unknown_key_are_refused(cli, simulator, tmp_path):
    both = cli("run", job_file(tmp_path, [{"base_url": simulator.base_url}], extra="rpm = 100\n"))

    assert both.exit_code == 2 and "set rpm in each endpoint" in both.output

    typo = cli("run", job_file(tmp_path, [{"base_url": simulator.base_url, "api_base": "x"}]))

    assert typo.exit_code == 2 and "endpoints[1]: unknown setting 'api_base'" in typo.output
    assert simulator.requests == 0


def test_an_endpoint_without_the_model_is_retired_and_its_rows_answered_elsewhere(
    cli, simulator_factory, tmp_path
):
    elsewhere = simulator_factory(models=("another-model",))  # answers 404 for ours
    healthy = simulator_factory()
    job = job_file(
        tmp_path,
        [{"name": "wrong", "base_url": elsewhere.base_url}, {"name": "ok", "base_url": healthy.base_url}],
    )

    result = cli("run", job)

    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "run" / "results.jsonl")) == 60
    assert read_jsonl(tmp_path / "run" / "errors.jsonl") == []
    wrong = summary(tmp_path)["session"]["endpoints"]["wrong"]
    assert "does not serve this model" in wrong["retired"]
    assert elsewhere.requests == 1  # its first answer said it all

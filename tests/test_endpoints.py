"""Several endpoints for one model: spread by capacity, failing ones rested, figures per endpoint."""

from __future__ import annotations

import json
import time

import pytest
from conftest import TEST_KEY, prompt_for, read_jsonl, review_rows, write_jsonl


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


def test_an_endpoint_is_rested_after_failing_five_times_in_a_row_and_longer_each_time():
    from batcher.endpoints import REST_SECONDS, Endpoint, EndpointConfig, Router
    from batcher.errors import BadRequest, Retryable

    first, second = (
        Endpoint(EndpointConfig(name, "simulator"), "http://127.0.0.1:9/v1", timeout=1, connections=1)
        for name in ("first", "second")
    )
    router = Router([first, second])
    server_error = Retryable("boom", type="internal_error", status=500)

    for _ in range(4):
        router.failed(first, server_error)
    router.failed(first, BadRequest("the row's own fault", type="invalid_request_error", status=400))
    assert first.available  # a row's own failure is not the endpoint's
    router.failed(first, server_error)
    assert not first.available and first.stats.rests == 1
    assert first.resting_until - time.monotonic() == pytest.approx(REST_SECONDS, abs=1)
    assert second.available

    first.resting_until = 0.0
    for _ in range(5):
        router.failed(first, server_error)
    assert first.resting_until - time.monotonic() == pytest.approx(2 * REST_SECONDS, abs=1)

    router.answered(first, None, 10.0)  # an answer resets the rest to its first length
    first.resting_until = 0.0
    for _ in range(5):
        router.failed(first, server_error)
    assert first.resting_until - time.monotonic() == pytest.approx(REST_SECONDS, abs=1)


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

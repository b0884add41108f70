"""A job that cannot work stops within seconds, naming the cause, the base URL and the fix.

Connection refused, a TLS failure, nothing at the path, a refused key, a model the
server does not have: when the first request fails so and nothing has succeeded,
the run stops (exit 3) with no row marked failed. (A name that does not resolve
is the same rule; it is not tried here, since resolving would leave this machine.)
"""

from __future__ import annotations

import socket
import time

import pytest

from batcher.transports.client import job_level_cause, unreachable
from tests.helpers import read_jsonl, review_rows, run_args, write_jsonl


@pytest.fixture
def rows(tmp_path):
    return write_jsonl(tmp_path / "in.jsonl", review_rows(50))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def stop(cli, rows, run_dir, base_url, *extra):
    started = time.monotonic()
    result = cli(*run_args(rows, run_dir, base_url, *extra))
    return result, time.monotonic() - started


def assert_stopped_cleanly(result, seconds, run_dir):
    assert result.exit_code == 3, result.output
    assert seconds < 10
    assert read_jsonl(run_dir / "errors.jsonl") == [] and read_jsonl(run_dir / "results.jsonl") == []
    assert "no row was marked failed" in result.output.lower()


@pytest.mark.slow  # no connection for 3 s before anything succeeded is what stops it
def test_connection_refused_stops_the_run_in_seconds_naming_host_and_port(cli, rows, run_dir):
    port = closed_port()
    base_url = f"http://127.0.0.1:{port}/v1"

    result, seconds = stop(cli, rows, run_dir, base_url)

    assert_stopped_cleanly(result, seconds, run_dir)
    assert f"cannot connect to 127.0.0.1:{port}" in result.output
    assert "check that the server is running" in result.output
    assert "200 requests" not in result.output and seconds >= 1  # a few tries over seconds, not a storm


@pytest.mark.slow  # no connection for 3 s before anything succeeded is what stops it
def test_https_to_a_plain_http_server_stops_the_run_suggesting_http(cli, simulator, rows, run_dir):
    base_url = simulator.base_url.replace("http://", "https://")

    result, seconds = stop(cli, rows, run_dir, base_url)

    assert_stopped_cleanly(result, seconds, run_dir)
    assert "TLS handshake" in result.output and "use http://" in result.output


def test_a_base_url_with_the_wrong_path_stops_at_the_first_404(cli, simulator, rows, run_dir):
    base_url = simulator.base_url.removesuffix("/v1") + "/api"

    result, seconds = stop(cli, rows, run_dir, base_url)

    assert_stopped_cleanly(result, seconds, run_dir)
    assert f"nothing answers at {base_url}/chat/completions" in result.output
    assert "usually ends in /v1" in result.output


def test_a_model_the_server_does_not_have_stops_at_the_first_answer(cli, simulator_factory, rows, run_dir):
    simulator = simulator_factory(models=("gpt-4o-mini",))

    result, seconds = stop(cli, rows, run_dir, simulator.base_url, "--model", "gpt-4o")

    assert_stopped_cleanly(result, seconds, run_dir)
    assert "does not serve this model" in result.output and f"{simulator.base_url}/models" in result.output
    assert simulator.requests == 1


def test_a_refused_key_stops_at_the_first_answer_naming_the_base_url(cli, simulator_factory, rows, run_dir):
    simulator = simulator_factory(api_key="sk-the-right-one")

    result, seconds = stop(cli, rows, run_dir, simulator.base_url)

    assert_stopped_cleanly(result, seconds, run_dir)
    assert f"{simulator.base_url} refused the key (HTTP 401" in result.output
    assert simulator.requests == 1


def test_a_name_that_does_not_resolve_is_a_job_level_cause_naming_the_host():
    import aiohttp
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("no-such-host.invalid", 443, True, True, None, None, None)
    error = aiohttp.ClientConnectorDNSError(key, OSError(-2, "Name or service not known"))

    cause = job_level_cause(unreachable(error), "https://no-such-host.invalid/v1")

    assert cause == "the host name no-such-host.invalid does not resolve: check the host name in the base URL"

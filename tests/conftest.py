"""Shared fixtures: a running simulator, a run directory, an input file, the CLI (helpers: helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import TEST_KEY, Cli, RunningSimulator, S3Server, review_rows, write_jsonl


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Shared limit state (sharedlimits.py) goes to a directory of the test session's, for every process."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def s3_server():
    """One S3-compatible server for the whole test session (started on first use)."""
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server, with the standard AWS environment pointing at it for this test."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One local Ray cluster for the whole test session (started on first use, about 3 s), its
    workers' environment pointing at the test session's S3 server, as a real cluster's nodes have
    their own credentials (batcher never sends them)."""
    # Set before Ray is imported: bind to 127.0.0.1 only, no token file in ~/.ray, no usage report.
    os.environ.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DATA_DISABLE_PROGRESS_BARS="1",
    )
    import ray

    root = str(Path(__file__).resolve().parent.parent)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
        # Workers import the tests' helpers as pytest does, and hold the test key (a real cluster's
        # workers get the key from their own environment: it is never sent to them).
        runtime_env={"env_vars": {"PYTHONPATH": root, "OPENAI_API_KEY": TEST_KEY, **s3_server.env}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def simulator_factory():
    started = []

    def start(**config) -> RunningSimulator:
        sim = RunningSimulator(**config)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(simulator_factory) -> RunningSimulator:
    return simulator_factory()


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def reviews(tmp_path) -> Path:
    return write_jsonl(tmp_path / "reviews.jsonl", review_rows(30))


@pytest.fixture
def cli() -> Cli:
    return Cli()

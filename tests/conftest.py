"""Shared fixtures: a running simulator, a run directory, an input file, the CLI (helpers: helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import (
    RAY_ENV,
    TEST_KEY,
    Cli,
    RayNodes,
    RunningSimulator,
    S3Server,
    review_rows,
    write_jsonl,
)


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
def ray_cluster(s3_server, tmp_path_factory):
    """One Ray cluster for the whole test session, as a user's is: a head node and a second node
    joined to it by address (`ray start --head`, `ray start --address`), two processes of their own
    on this machine, one CPU each; this test process joins it as a driver (about 10 s, once). The
    nodes' environment points at the test session's S3 server, as a real cluster's nodes have their
    own credentials (batcher never sends them)."""
    os.environ.update(RAY_ENV)  # (before Ray is imported)
    nodes = RayNodes(tmp_path_factory.mktemp("ray"), s3_server.env)
    import ray

    root = str(Path(__file__).resolve().parent.parent)
    try:
        ray.init(
            address=nodes.address,
            log_to_driver=False,
            # Workers import the tests' helpers as pytest does, and hold the test key for the tests
            # that send from this process (a run's workers get the key with their work).
            runtime_env={"env_vars": {"PYTHONPATH": root, "OPENAI_API_KEY": TEST_KEY}},
        )
        nodes.wait_joined(ray)
        ray.nodes_started = nodes  # (for the tests that look at where the work ran)
        yield ray
    finally:
        ray.shutdown()
        nodes.stop()


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

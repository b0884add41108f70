"""What the tests share besides fixtures: input rows, the CLI in-process and as a process, a simulator.

Fixtures live in conftest.py; everything here is a plain import (`from tests.helpers import ...`),
which works under every pytest import mode, where importing from conftest does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from batcher.cli.commands import main
from batcher.job import SimulatorConfig
from batcher.simulator import Simulator, embedding_key

TEST_KEY = "sk-test-0123456789abcdef"
PROMPT = "Classify the sentiment of this review: {text}"


class RunningSimulator:
    """The embedded simulator served on 127.0.0.1 from a thread of its own."""

    def __init__(self, port: int = 0, **config):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Simulator(SimulatorConfig(**config))
        self.base_url = self._call(self.server.start(port=port))

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        self._call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    @property
    def requests(self) -> int:
        return self.server.requests

    def completions_for(self, prompt: str) -> int:
        """How many completions the simulator served (and so billed) for this prompt text."""
        return self.server.completions.get(prompt, 0)

    def embeddings_for(self, text: str | list[int]) -> int:
        """How many embeddings the simulator served (and so billed) for this input (text or token ids)."""
        return self.server.ledger.embedded.get(embedding_key(text), 0)


# -- inputs and outputs ----------------------------------------------------------------------


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def review_rows(n: int) -> list[dict]:
    moods = ["I love it, works great", "It broke, terrible", "It is grey"]
    return [
        {"id": f"r{i}", "text": f"review number {i}: {moods[i % 3]}", "stars": i % 5 + 1} for i in range(n)
    ]


def prompt_for(row: dict) -> str:
    return PROMPT.format(text=row["text"])


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- the CLI ---------------------------------------------------------------------------------


class Cli:
    """`batcher` run in-process (CliRunner) with the test key in the environment."""

    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args, env: dict | None = None):
        environment = {"OPENAI_API_KEY": TEST_KEY, "OPENAI_BASE_URL": None}
        environment.update(env or {})
        return self.runner.invoke(main, [str(a) for a in args], env=environment, catch_exceptions=False)


def run_args(path, run_dir, base_url, *extra, model: str | None = "m", prompt: str | None = PROMPT) -> list:
    """`batcher run` arguments for an input, a run directory and a server; extra flags last."""
    args = ["run", path, "-o", run_dir, "--base-url", base_url]
    if model is not None:
        args += ["--model", model]
    if prompt is not None:
        args += ["--prompt", prompt]
    return [*args, *extra]


def batcher_command(*args) -> list[str]:
    return [sys.executable, "-m", "batcher", *[str(a) for a in args]]


def subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_API_KEY"] = TEST_KEY
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_subprocess(*args, timeout: float = 60, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        batcher_command(*args), env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout
    )


def start_subprocess_run(path, run_dir, base_url, *extra) -> subprocess.Popen:
    """`batcher run` as a process of its own (to kill, signal, or watch while it runs)."""
    args = batcher_command(*run_args(path, run_dir, base_url, *extra))
    return subprocess.Popen(
        args, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def signal_when(process, reached, sig: int = signal.SIGKILL, timeout: float = 40) -> None:
    """Send `sig` to a running process as soon as `reached()` and wait for it to end; fail (and
    kill it) if it ends or `timeout` passes first, since the moment the test is about never came."""
    deadline = time.monotonic() + timeout
    while not reached():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, stderr = process.communicate(timeout=10)
            raise AssertionError(f"the run ended, or {timeout} s passed, before the moment came: {stderr}")
        time.sleep(0.01)
    process.send_signal(sig)
    process.wait(timeout=30)


def wait_for_results(run_dir, at_least: int, process, timeout: float = 30) -> None:
    """Wait until a running process has written `at_least` result lines (failing if it ends first)."""
    deadline = time.monotonic() + timeout
    results = run_dir / "results.jsonl"
    while time.monotonic() < deadline:
        if results.exists() and results.read_bytes().count(b"\n") >= at_least:
            return
        if process.poll() is not None:
            raise AssertionError(f"run ended early: {process.communicate()}")
        time.sleep(0.02)
    raise AssertionError("no results in time")


# -- a Ray cluster of two node processes joined by address, as a user's is ----------------------------

#: The environment of the test session's Ray nodes and drivers: more than one node (the nodes are
#: given 127.0.0.1 to bind to), no token file in ~/.ray, no usage report, Ray Data's bars off.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
}


class RayNodes:
    """`ray start --head` and `ray start --address` in processes of their own (`--block`: each
    lives, and takes its node's processes with it, until stopped), one CPU each."""

    def __init__(self, logs: Path, extra_env: dict[str, str]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self.env = {**os.environ, **RAY_ENV, **extra_env}
        ray = str(Path(sys.executable).parent / "ray")
        common = ["--num-cpus", "1", "--object-store-memory", str(200 * 1024 * 1024), "--block"]
        here = ["--node-ip-address", "127.0.0.1"]
        # A temp directory of the cluster's own (short: Ray's socket paths must fit in 107 bytes), so
        # that /tmp/ray/ray_current_cluster, which a later `ray.init()` with no address joins, is not
        # left naming this cluster once it is stopped.
        self.temp_dir = tempfile.mkdtemp(prefix="ray-")
        head = [ray, "start", "--head", *here, "--port", str(port), "--temp-dir", self.temp_dir]
        head += ["--include-dashboard", "false", *common]
        self.head = self._start(logs / "head.log", head)
        wait_for_port(port, self.head, "the Ray head node")
        worker = [ray, "start", "--address", self.address, *here, *common]
        self.worker = self._start(logs / "worker.log", worker)

    def _start(self, log: Path, command: list[str]) -> subprocess.Popen:
        with log.open("wb") as out:  # (a process group of its own: the node's processes, stopped together)
            return subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_joined(self, ray, timeout: float = 60) -> None:
        """Until the driver `ray` sees both nodes alive."""
        deadline = time.monotonic() + timeout
        while sum(node["Alive"] for node in ray.nodes()) < 2:
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the second Ray node did not join the head")
            time.sleep(0.2)

    def raylet_pids(self) -> set[int]:
        """The raylets of the two nodes (the parents of their worker processes)."""
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if b"raylet" in (entry / "cmdline").read_bytes().split(b"\0")[0]:
                        pids.add(int(entry.name))
                except OSError:
                    pass
        return pids

    def stop(self) -> None:
        """Each node's processes stopped, then killed if any is left (its agents outlive `ray start`;
        `ray start --block` itself takes 13-20 s to end on SIGTERM: it is given 3 s)."""
        for node in (self.worker, self.head):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for node in (self.worker, self.head):
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


# -- an S3-compatible server on 127.0.0.1 (moto's server mode: the real S3 protocol over HTTP) ------


class S3Server:
    """moto's S3 server in a process of its own, and the standard environment that points at it."""

    KEY_ID, SECRET = "AKIATESTBATCHER00001", "test-secret-never-written-anywhere"

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.05)
        self.env = {
            "AWS_ACCESS_KEY_ID": self.KEY_ID,
            "AWS_SECRET_ACCESS_KEY": self.SECRET,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask the cloud's metadata address for keys
        }

    def filesystem(self):
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=self.KEY_ID,
            secret_key=self.SECRET,
            region="us-east-1",
            endpoint_override=self.url,
            allow_bucket_creation=True,
        )

    def put(self, uri: str, data: bytes) -> str:
        """Write an object (its bucket made if need be); the URI."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        filesystem = self.filesystem()
        filesystem.create_dir(bucket)
        with filesystem.open_output_stream(f"{bucket}/{key}") as f:
            f.write(data)
        return uri

    def bucket(self, name: str) -> str:
        """A bucket made (if need be) for outputs; its URI."""
        self.filesystem().create_dir(name)
        return f"s3://{name}"

    def get(self, uri: str) -> bytes:
        with self.filesystem().open_input_stream(uri.removeprefix("s3://")) as f:
            return f.read()

    def names(self, uri: str) -> list[str]:
        """The keys under a prefix, relative to it."""
        from pyarrow import fs

        base = uri.removeprefix("s3://").rstrip("/")
        infos = self.filesystem().get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(i.path[len(base) + 1 :] for i in infos if i.type == fs.FileType.File)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

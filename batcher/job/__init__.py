"""`Job`: everything one run needs, built once from a TOML job file and flags.

Flags override the job file, which overrides the defaults here. Paths in a job
file are relative to the job file's own folder, so a job runs the same from any
working directory. The key is never part of a job: only the *name* of the
environment variable that holds it (`api_key_env`).

The package holds what a job is made of and the checks it passes before it runs:
- `files`: a TOML job file read (`load_job_file`), keys and types checked, secrets refused;
- `endpoints`: where requests may go (`EndpointConfig`); `gateway`: the headers and query a gateway
  needs (`Pairs`, `Gateway`), values from `env:NAME` read where requests are sent;
- `answers`: the answers a job asks for (`AnswerFormat`: labels or a JSON Schema);
- `preflight`, `extras`: a job checked against this machine (its keys, its extras) before a run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batcher.errors import ConfigError
from batcher.job.answers import AnswerFormat
from batcher.job.deadline import parse_deadline
from batcher.job.endpoints import EndpointConfig, endpoint_configs
from batcher.job.gateway import NO_PAIRS, Pairs, check_variables, job_settings
from batcher.limits.costs import Prices
from batcher.simulator.config import SimulatorConfig
from batcher.storage import RemotePath, is_remote, location

#: The output format of an OpenAI Batch output file (whole responses), not the input kind of the same
#: name (prompts.BATCH_INPUT): the API calls both files "batch".
BATCH_OUTPUT = "openai-batch"
ONLINE, BATCH_API = "online", "batch-api"
MODES = (ONLINE, BATCH_API)
#: The provider's limit on the requests of one batch.
MAX_BATCH_REQUESTS = 50_000
OUTPUT_FORMATS = ("jsonl", "parquet", BATCH_OUTPUT)
#: The `base_url` value that runs the embedded simulator inside the run itself.
SIMULATOR = "simulator"
#: What a job's rows are sent to (`endpoint`): Chat Completions, or Embeddings.
CHAT, EMBEDDINGS = "chat", "embeddings"
ENDPOINTS = (CHAT, EMBEDDINGS)
LOCAL, RAY = "local", "ray"
EXECUTORS = (LOCAL, RAY)
#: Requests on the wire at once for embeddings, unless told otherwise (chat: Job.concurrency).
EMBEDDINGS_CONCURRENCY = 4
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Job:
    """A validated run: what to read, how to ask, where to write, how fast."""

    input: Path | RemotePath
    #: The run directory; in an object store, worked on in a local staging copy (store/mirror.py).
    output: Path | RemotePath
    model: str | None = None
    prompt: str | None = None
    system: str | None = None
    #: The column naming each row; None (not given): `id`, or, in a file with no `id` at all, each
    #: row's line or row number (sources.Source).
    id_column: str | None = None
    keep_columns: tuple[str, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 8
    timeout: float = 600.0
    output_format: str = "jsonl"
    retry_failed: bool = True
    force: bool = False
    #: Seconds to let in-flight requests finish after Ctrl-C / SIGTERM.
    drain_timeout: float = 30.0
    #: Stop the run when this many rows in a row fail with the same error (0: never).
    stop_after_identical_failures: int = 10
    #: Seconds of nothing but 429s or an unreachable server after which the run stops, resumably.
    patience: float = 300.0
    #: Send the key over plain http to a host that is not this machine.
    allow_insecure_http: bool = False
    #: The JSON Schema each answer must meet (a file's path, or the schema itself), or the labels
    #: a classification answer must be one of: parsed into result columns (see answers.py).
    json_schema: str | dict | None = None
    labels: tuple[str, ...] = ()
    #: How many times an answer that does not parse or validate is asked for again.
    parse_retries: int = 2
    #: USD per million tokens by model, over the built-in table: {"model": {"input": .., "output": ..}}.
    prices: dict | None = None
    #: Budgets over every session of the run directory (see limits/costs.py).
    max_cost: float | None = None
    max_total_tokens: int | None = None
    #: Send identical requests of a session once (see kinds/reuse.py); off for independent samples.
    dedupe: bool = True
    #: Directory of an answer cache shared across runs (requests at temperature 0).
    cache: str | None = None
    #: Several endpoints serving the model, each with its own key and limits (see endpoints.py).
    endpoints: tuple[EndpointConfig, ...] = ()
    #: How rows are sent: one request each ("online"), or as the provider's batches ("batch-api",
    #: docs/batch-api.md) of at most `batch_size` requests, polled every `poll_interval` seconds.
    mode: str = "online"
    batch_size: int = 50_000
    poll_interval: float = 60.0
    #: In batch-api mode, submit the batches and exit (EXIT_SUBMITTED) instead of waiting for them.
    no_wait: bool = False
    #: In batch-api mode, when every row must be answered by (job/deadline.py): the rows the batches
    #: have not answered in time go online then, at the online price.
    deadline: str | None = None
    #: What rows are sent to: "chat" (/chat/completions) or "embeddings" (/embeddings, rows packed
    #: into requests of at most `inputs_per_request` inputs and `tokens_per_request` tokens, each
    #: input at most `tokens_per_input`; see kinds/embeddings.py).
    endpoint: str = CHAT
    dimensions: int | None = None
    encoding_format: str = "base64"
    inputs_per_request: int = 2048
    tokens_per_request: int = 300_000
    tokens_per_input: int = 8192
    #: Where the requests are sent from: this process ("local"), or workers on a Ray cluster ("ray",
    #: transports/ray/transport.py) found at `ray_address` (None: the running one, or a new local one).
    executor: str = "local"
    ray_address: str | None = None
    workers: int = 2
    #: With the output in an object store: seconds between commits of the journal's new lines to it
    #: (store/mirror.py). A crash sends again what was answered since the last commit.
    commit_seconds: float = 5.0
    #: Send only the first `limit` rows of the input (in input order; not part of the job's identity,
    #: so the same job without it continues with the rest).
    limit: int | None = None
    #: Headers and query parameters sent on every request (gateway.py): values never written or
    #: shown, not part of the job's identity (a rotated key in a header is the same job).
    headers: Pairs = NO_PAIRS
    query: Pairs = NO_PAIRS
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)

    @property
    def embeddings(self) -> bool:
        return self.endpoint == EMBEDDINGS

    @property
    def uses_simulator(self) -> bool:
        return self.base_url == SIMULATOR

    def defaults(self) -> dict[str, Any]:
        """Request parameters the job sets; a row's own values win over these."""
        if self.embeddings:
            values = {
                "model": self.model,
                "dimensions": self.dimensions,
                "encoding_format": self.encoding_format,
            }
            return {k: v for k, v in values.items() if v is not None}
        values = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "response_format": self.answer_format.response_format() if self.answer_format else None,
        }
        return {k: v for k, v in values.items() if v is not None}

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same job (recorded in the run directory; no key)."""
        return {
            "input": str(self.input),
            "model": self.model,
            "prompt": self.prompt,
            "system": self.system,
            "id_column": self.id_column,
            "keep_columns": list(self.keep_columns),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "output_format": self.output_format,
            "answer_schema": self.answer_format.schema if self.answer_format else None,
            # (said only of embeddings, so that chat runs from before keep their record)
            **({"endpoint": self.endpoint, "dimensions": self.dimensions} if self.embeddings else {}),
        }

    @property
    def endpoint_configs(self) -> tuple[EndpointConfig, ...]:
        """Where requests go: the job's endpoints, or the one its base_url names."""
        if self.endpoints:
            return tuple(endpoint.under(self.headers, self.query) for endpoint in self.endpoints)
        default = EndpointConfig("default", self.base_url, self.api_key_env, self.rpm, self.tpm)
        return (default.under(self.headers, self.query),)

    @functools.cached_property
    def price_table(self) -> Prices:
        return Prices.from_settings(self.prices)

    @functools.cached_property
    def answer_format(self) -> AnswerFormat | None:
        return AnswerFormat.from_settings(json_schema=self.json_schema, labels=self.labels)


def build_job(settings: dict[str, Any]) -> Job:
    """Validate merged settings (job file, then flags) into a `Job`."""
    settings = {k: v for k, v in settings.items() if v is not None}
    _require_input_and_output(settings)
    if "endpoints" in settings:
        settings["endpoints"] = _endpoints(settings)
    job_settings(settings, os.environ)
    for key in ("keep_columns", "labels"):
        settings[key] = _names(settings.get(key, ()))
    settings["input"] = location(settings["input"])
    settings["output"] = location(settings["output"])
    settings.setdefault("base_url", os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
    settings["base_url"] = settings["base_url"].rstrip("/")
    if settings.get("endpoint") == EMBEDDINGS:
        # A packed request carries up to 2,048 rows and its answer their vectors (16 MB of base64
        # at 1,536 dimensions): four on the wire keep a fast server busy and the memory small.
        settings.setdefault("concurrency", EMBEDDINGS_CONCURRENCY)
    sim = settings.get("simulator", {})
    if isinstance(sim, dict):
        settings["simulator"] = _simulator_config(sim)
    job = Job(**settings)
    _check(job)
    job.answer_format  # noqa: B018  (a bad schema or label set is refused here, once)
    job.price_table  # noqa: B018
    return job


def _require_input_and_output(settings: dict[str, Any]) -> None:
    if "input" not in settings:
        raise ConfigError("no input given: name a file (`batcher run INPUT`) or set `input` in the job file")
    if "output" not in settings:
        raise ConfigError("no output directory given: use -o/--output DIR or set `output` in the job file")


def _endpoints(settings: dict[str, Any]) -> tuple[EndpointConfig, ...]:
    """The job's endpoints; with them, the connection settings belong to each, not to the job."""
    given = [k for k in ("base_url", "api_key_env", "rpm", "tpm") if k in settings]
    if given:
        raise ConfigError(f"with endpoints, set {', '.join(given)} in each endpoint, not for the whole job")
    endpoints = endpoint_configs(settings["endpoints"])
    if not endpoints:
        raise ConfigError("endpoints is empty: name at least one, or use base_url")
    return endpoints


def _names(names: Any) -> tuple[str, ...]:
    """Column or label names, from a list or a comma-separated string."""
    if isinstance(names, str):
        names = [c.strip() for c in names.split(",") if c.strip()]
    return tuple(str(name) for name in names)


def _simulator_config(sim: dict[str, Any]) -> SimulatorConfig:
    unknown = set(sim) - {f.name for f in dataclasses.fields(SimulatorConfig)}
    if unknown:
        raise ConfigError(f"unknown simulator setting(s): {', '.join(sorted(unknown))}")
    if "models" in sim:
        sim = {**sim, "models": tuple(sim["models"])}
    return SimulatorConfig(**sim)


#: Settings with a least value, checked alike: (name, the least it may be).
_AT_LEAST = (
    ("max_tokens", 1),
    ("concurrency", 1),
    ("max_retries", 0),
    ("limit", 1),
    ("parse_retries", 0),
    ("stop_after_identical_failures", 0),
    ("drain_timeout", 0),
)


def _check(job: Job) -> None:
    def positive(name: str, value: float | None, allow_none: bool = True) -> None:
        if value is None and allow_none:
            return
        if value is None or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value}")

    if job.output_format not in OUTPUT_FORMATS:
        raise ConfigError(
            f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {job.output_format!r}"
        )
    if job.temperature is not None and not 0 <= job.temperature <= 2:
        raise ConfigError(f"temperature must be between 0 and 2, got {job.temperature}")
    if job.top_p is not None and not 0 <= job.top_p <= 1:
        raise ConfigError(f"top_p must be between 0 and 1, got {job.top_p}")
    for name, least in _AT_LEAST:
        value = getattr(job, name)
        if value is not None and value < least:
            raise ConfigError(f"{name} must be {'at least 1' if least else '0 or more'}, got {value}")
    for name in ("max_cost", "max_total_tokens", "rpm", "tpm"):
        positive(name, getattr(job, name))
    positive("timeout", job.timeout, allow_none=False)
    positive("patience", job.patience, allow_none=False)
    _check_mode(job)
    _check_endpoint(job)
    _check_executor(job)
    if job.id_column == "":
        raise ConfigError("id_column must not be empty")
    _check_endpoints(job)


def _check_endpoints(job: Job) -> None:
    for endpoint in job.endpoint_configs:
        check_variables(endpoint.headers, endpoint.query)
        if not endpoint.uses_simulator and not endpoint.base_url.startswith(("http://", "https://")):
            wanted = f"base_url must start with http:// or https:// (or be '{SIMULATOR}')"
            raise ConfigError(f"{wanted}, got {endpoint.base_url!r}")


def _check_endpoint(job: Job) -> None:
    if job.endpoint not in ENDPOINTS:
        raise ConfigError(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {job.endpoint!r}")
    if not job.embeddings:
        given = [n for n in ("dimensions",) if getattr(job, n) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} is for embeddings: add --endpoint embeddings")
        return
    chat_only = {
        "max_tokens": job.max_tokens,
        "temperature": job.temperature,
        "top_p": job.top_p,
        "system": job.system,
        "json_schema": job.json_schema,
        "labels": job.labels or None,
    }
    given = [name for name, value in chat_only.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} do(es) not apply to embeddings: leave it out")
    if job.encoding_format not in ("base64", "float"):
        raise ConfigError(f"encoding_format must be base64 or float, got {job.encoding_format!r}")
    for name in ("dimensions", "inputs_per_request", "tokens_per_request", "tokens_per_input"):
        value = getattr(job, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if job.output_format == BATCH_OUTPUT:
        raise ConfigError("embeddings are written as jsonl or parquet (openai-batch output is for chat)")


def _check_executor(job: Job) -> None:
    if job.executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {job.executor!r}")
    if job.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {job.workers}")
    if job.executor != RAY:
        return
    unsupported = {
        "mode batch-api": job.mode == BATCH_API,
        "cache for embeddings": job.cache is not None and job.embeddings,
    }
    given = [name for name, set_ in unsupported.items() if set_]
    if given:
        raise ConfigError(
            f"{', '.join(given)} do(es) not hold with --executor ray yet, so they are refused rather than "
            "ignored: run it without, or with the local executor"
        )


def _check_deadline(job: Job) -> None:
    parse_deadline(job.deadline)
    if job.mode != BATCH_API:
        raise ConfigError("deadline is for batch-api mode: an online run sends every row at once anyway")
    if job.no_wait:
        raise ConfigError("deadline needs the run to wait for its batches: leave out no_wait")


def _check_mode(job: Job) -> None:
    if job.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {job.mode!r}")
    if not 1 <= job.batch_size <= MAX_BATCH_REQUESTS:
        raise ConfigError(
            f"batch_size must be between 1 and {MAX_BATCH_REQUESTS:,} (the provider's limit), "
            f"got {job.batch_size}"
        )
    if not math.isfinite(job.poll_interval) or job.poll_interval <= 0:
        raise ConfigError(f"poll_interval must be a positive number of seconds, got {job.poll_interval}")
    if job.no_wait and job.mode != BATCH_API:
        raise ConfigError("no_wait is for batch-api mode: an online run waits for its answers")
    if job.deadline is not None:
        _check_deadline(job)
    if not math.isfinite(job.commit_seconds) or job.commit_seconds <= 0:
        raise ConfigError(f"commit_seconds must be a positive number of seconds, got {job.commit_seconds}")
    if job.mode == BATCH_API and is_remote(job.output):
        raise ConfigError(
            f"{job.output}: batch-api mode keeps its batches' log in a local run directory, not yet in an "
            "object store: give a local --output"
        )

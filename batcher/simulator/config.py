"""`SimulatorConfig`: the knobs of the embedded OpenAI-compatible simulator (batcher/simulator/).

A job's `[simulator]` table, the flags of `batcher simulate`, and the tests all set these; each
knob is checked here, once, with a message naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from batcher.errors import ConfigError


@dataclass(frozen=True)
class SimulatorConfig:
    """Behaviour of the embedded OpenAI-compatible simulator."""

    #: Requests and tokens per minute the simulator admits before answering 429.
    rpm: float | None = None
    tpm: float | None = None
    #: Seconds of burst its buckets allow (OpenAI-like providers: about one second).
    burst_seconds: float = 1.0
    #: Which x-ratelimit-* headers it sends: "all" (OpenAI), "remaining" (Azure: no limit headers),
    #: or "none" (a gateway or self-hosted server that enforces a limit and announces nothing).
    rate_limit_headers: str = "all"
    #: The retry-after-ms of every 429, instead of the time until the bucket has room.
    retry_after_ms: float | None = None
    #: Mean latency of an answer, and the +/- fraction it varies by.
    latency_ms: float = 0.0
    latency_jitter: float = 0.5
    #: Fractions of requests answered with a 500, a dropped connection, a broken body.
    error_rate: float = 0.0
    drop_rate: float = 0.0
    garbage_rate: float = 0.0
    #: Model names it serves; an empty tuple serves any name.
    models: tuple[str, ...] = ()
    #: If set, the only Bearer key it accepts; otherwise any non-empty key.
    api_key: str | None = None
    #: Rows whose prompt contains this text are answered 400 (a permanently bad row).
    reject_marker: str | None = None
    #: Status of the injected errors (500; 503 comes with retry-after: 1).
    error_status: int = 500
    #: Fractions answered with a proxy's HTML 502 page, slower than `slow_ms`, never,
    #: or with a 200 body of `huge_bytes`.
    html_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 5000.0
    hang_rate: float = 0.0
    huge_rate: float = 0.0
    huge_bytes: int = 64 * 1024 * 1024
    #: Fraction answered 200 with text that ignores the response_format asked for.
    invalid_answer_rate: float = 0.0
    #: Every `storm_every` seconds, `storm_seconds` of 429s to everything (0: no storms).
    storm_every: float = 0.0
    storm_seconds: float = 1.0
    #: After this many requests, every request is answered 401 (a key revoked mid-run).
    fail_auth_after: int | None = None
    #: Put the key a request carried in its 401 message, as some gateways do.
    echo_key: bool = False
    #: Answer every request with a 307 redirect to this URL.
    redirect_to: str | None = None
    seed: int = 0
    # -- the Batch API (files.py, batches.py, batchrun.py): quick batches unless told otherwise --
    #: Seconds a batch spends validating, then the requests per second it answers, then the
    #: seconds it spends finalizing (or cancelling, once asked to cancel).
    batch_validating_seconds: float = 0.2
    batch_requests_per_second: float = 200.0
    batch_finalizing_seconds: float = 0.1
    #: Seconds a batch in progress goes on answering once asked to cancel (as a provider's batch
    #: does for up to minutes while "cancelling"), before it stops and finalizes.
    batch_cancelling_seconds: float = 0.0
    #: A batch expires once it has answered this many of its requests, or this fraction of them;
    #: only the first `batch_expiring_batches` batches created do (None: every batch).
    batch_expire_after: int | None = None
    batch_expire_fraction: float | None = None
    batch_expiring_batches: int | None = None
    #: Fraction of a batch's requests answered `error_status` (drawn from a generator seeded per batch).
    batch_line_error_rate: float = 0.0
    #: Fractions of batch creations answered 500: refused, or made and then the answer lost.
    batch_create_error_rate: float = 0.0
    batch_create_lost_rate: float = 0.0
    #: Tokens (prompt estimate + max_tokens) of live batches, over which a new one fails validation
    #: with `token_limit_exceeded`, as OpenAI's enqueued-token limit (one for all models here).
    batch_token_limit: int | None = None
    #: Milliseconds a batch creation waits, the batch already made, before it is answered.
    batch_create_delay_ms: float = 0.0
    #: Seconds after its creation before a batch shows in the list of batches (a lagging list).
    batch_list_lag_seconds: float = 0.0
    #: Milliseconds an upload waits, the file already stored, before it is answered; and a
    #: download before its bytes are sent.
    files_delay_ms: float = 0.0
    # -- the Embeddings endpoint (embeddings.py): OpenAI's limits unless told otherwise --
    #: Dimensions of a model's vectors when it is none of OpenAI's (text-embedding-3-small and
    #: -large, ada-002 have their own: 1536, 3072, 1536).
    embedding_dimensions: int = 1536
    #: Inputs one request may hold, tokens one input may hold, tokens one request may hold;
    #: over any, the request is answered 400 (a TEI-like server has smaller ones).
    embedding_max_inputs: int = 2048
    embedding_max_input_tokens: int = 8192
    embedding_max_request_tokens: int = 300_000

    def __post_init__(self) -> None:
        if self.rate_limit_headers not in ("all", "remaining", "none"):
            raise ConfigError(
                "simulator rate_limit_headers must be all, remaining or none, "
                f"got {self.rate_limit_headers!r}"
            )
        rates = (
            "error_rate",
            "drop_rate",
            "garbage_rate",
            "html_rate",
            "slow_rate",
            "hang_rate",
            "huge_rate",
            "invalid_answer_rate",
        )
        if sum(getattr(self, name) for name in rates) > 1:
            raise ConfigError("simulator fault rates add up to more than 1")
        for name in (*rates, "latency_jitter"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"simulator {name} must be between 0 and 1, got {value}")
        self._check_batch_settings()
        self._check_embedding_settings()

    def _check_batch_settings(self) -> None:
        for name in ("batch_line_error_rate", "batch_create_error_rate", "batch_create_lost_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"simulator {name} must be between 0 and 1, got {value}")
        if self.batch_create_error_rate + self.batch_create_lost_rate > 1:
            raise ConfigError(
                "simulator batch_create_error_rate and batch_create_lost_rate add up to more than 1"
            )
        fraction = self.batch_expire_fraction
        if fraction is not None and not 0 <= fraction < 1:
            raise ConfigError(
                f"simulator batch_expire_fraction must be at least 0 and below 1, got {fraction}"
            )
        if self.batch_requests_per_second <= 0:
            raise ConfigError(
                f"simulator batch_requests_per_second must be positive, got {self.batch_requests_per_second}"
            )
        for name in (
            "batch_validating_seconds",
            "batch_finalizing_seconds",
            "batch_cancelling_seconds",
            "batch_list_lag_seconds",
            "batch_create_delay_ms",
            "files_delay_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"simulator {name} must not be negative, got {getattr(self, name)}")
        for name in ("batch_expire_after", "batch_expiring_batches", "batch_token_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"simulator {name} must not be negative, got {value}")

    def _check_embedding_settings(self) -> None:
        for name in (
            "embedding_dimensions",
            "embedding_max_inputs",
            "embedding_max_input_tokens",
            "embedding_max_request_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"simulator {name} must be a positive integer, got {value!r}")

    def __repr__(self) -> str:  # never print a key, even a simulator's
        fields = (
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.name != "api_key"
        )
        return f"SimulatorConfig({', '.join(fields)}, api_key={'***' if self.api_key else None})"

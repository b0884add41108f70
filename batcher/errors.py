"""The exceptions batcher raises, and the exit code each one maps to.

One root, split by who must act::

    BatcherError                 exit 2 unless a subclass says otherwise
    ├── ConfigError              a job file, flag or run directory to fix
    ├── InputError               an input file, line or row to fix (names the place)
    ├── WriteFailed              exit 3: a result could not be made durable
    ├── RunAborted               exit 3: the run cannot go on; nothing is marked failed
    │   ├── BudgetReached        --max-cost / --max-total-tokens reached
    │   └── NoEndpointLeft       every endpoint retired (keys refused, nothing there)
    └── RequestFailed            one attempt at one row failed (see transports/online/retry.py)
        ├── Retryable            timeouts, dropped connections, 408/409/5xx
        │   ├── RateLimited      429: the run slows down; never a row's failure
        │   └── Unreachable      no connection at all; never a row's failure
        ├── BadRequest           400 and other 4xx: the row fails the same way every time
        ├── AuthenticationFailed 401/403: no row can succeed
        └── AnswerInvalid        answered, but not in the shape asked for

A `RequestFailed` stays inside the worker pool, which turns it into a retry, a
row's error record or, when it says the job itself is wrong, a `RunAborted`.
Lower libraries' exceptions (aiohttp, OSError, pyarrow) are translated where
they are caught and never reach the user as a traceback.
"""

from __future__ import annotations

from typing import Any

#: Exit codes, stable and documented in docs/reference.md.
EXIT_OK = 0
EXIT_FAILED_ROWS = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
#: Batches submitted with --no-wait and not yet collected: the same command collects them.
EXIT_SUBMITTED = 4
EXIT_INTERRUPTED = 130


class BatcherError(Exception):
    """Root of every error batcher reports to a user."""

    exit_code = EXIT_USAGE


class ConfigError(BatcherError):
    """A job file, flag or run directory that cannot be used as given."""


class InputError(BatcherError):
    """An input file, line or row that cannot be read or turned into a request."""

    def __init__(self, message: str, *, path: object = None, where: str | None = None):
        #: The file, and the place in it ("line 4", "row 12"), when known.
        self.path = str(path) if path is not None else None
        self.where = where
        place = ", ".join(p for p in (self.path, where) if p)
        # Messages read as predicates: "reviews.jsonl, line 4 is not valid JSON".
        super().__init__(f"{place} {message}" if place else message)


class RunAborted(BatcherError):
    """The run cannot go on (e.g. the key is refused); nothing is marked failed."""

    exit_code = EXIT_ABORTED


class BudgetReached(RunAborted):
    """The next request would go over --max-cost or --max-total-tokens; raising it resumes."""


class NoEndpointLeft(RunAborted):
    """Every endpoint of the job was retired (its key refused, nothing there)."""


class WriteFailed(BatcherError):
    """A result could not be made durable (disk full, read-only directory)."""

    exit_code = EXIT_ABORTED


class RequestFailed(BatcherError):
    """One request failed; `retryable` says whether another attempt may succeed."""

    retryable = False
    #: The endpoint's fault rather than the row's: another endpoint may answer it.
    endpoint_fault = False

    def __init__(
        self,
        message: str,
        *,
        type: str,
        status: int | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.type = type
        self.status = status
        self.param = param
        #: Seconds the server asked us to wait (retry-after / retry-after-ms).
        self.retry_after = retry_after
        #: The answer's headers, when there was an answer (the limiter reads them).
        self.headers = None

    def as_record(self) -> dict:
        """The `error` object written to errors.jsonl."""
        return {"type": self.type, "message": self.message, "status": self.status, "param": self.param}


class Retryable(RequestFailed):
    """Timeouts, dropped connections, 408/409/5xx, unparseable bodies."""

    retryable = True
    endpoint_fault = True


class RateLimited(Retryable):
    """HTTP 429: slows every worker, not only the one that got it; never a row's failure."""


class Unreachable(Retryable):
    """No connection at all (refused, no such host, TLS handshake failed): never a row's failure."""

    def __init__(self, message: str, *, hint: str):
        super().__init__(message, type="connection_error")
        #: What the user may check, when this happens before anything succeeded.
        self.hint = hint


class BadRequest(RequestFailed):
    """HTTP 400 and other 4xx: this row will fail the same way every time."""


class AuthenticationFailed(RequestFailed):
    """HTTP 401/403: the key is refused, so no row can succeed."""


class AnswerInvalid(RequestFailed):
    """The server answered, but not in the shape asked for."""

    retryable = True

    def __init__(self, message: str, content: str | None, *, cut: bool = False):
        super().__init__(message, type="parse_error", status=200)
        self.content = content
        #: What the answer cost (set by the runner).
        self.usage: dict[str, Any] | None = None
        self.cost: float | None = None
        #: Cut at max_tokens: asking again would cut it again.
        self.cut = cut
        if cut:
            self.retryable = False

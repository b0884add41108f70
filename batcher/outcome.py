"""How a session ended: a status, the counters, and the error that stopped it, if one did."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from batcher.errors import (
    EXIT_FAILED_ROWS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SUBMITTED,
    BatcherError,
    BudgetReached,
)
from batcher.outputs.stats import RunStats
from batcher.words import plural


class Status(enum.StrEnum):
    """The `status` of summary.json."""

    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    INTERRUPTED = "interrupted"
    ABORTED = "aborted"
    BUDGET_REACHED = "budget_reached"
    #: Batches were submitted and left to run (--no-wait): the same command collects them.
    SUBMITTED = "submitted"
    #: The session itself ended in an exception (summary.json is still written).
    FAILED = "failed"


@dataclass
class RunOutcome:
    """What a session became, for the CLI and the Python API to report."""

    status: Status
    stats: RunStats
    #: What stopped the run (ABORTED, BUDGET_REACHED): raised as it is by the Python API.
    error: BatcherError | None = None
    #: What the user should know of work left running elsewhere (batches at the provider).
    note: str | None = None

    @classmethod
    def of(cls, stats: RunStats, error: BatcherError | None, interrupted: bool) -> RunOutcome:
        """How a session ended: stopped by `error`, interrupted, or done (with failed rows or not)."""
        if error is not None:
            return cls(
                Status.BUDGET_REACHED if isinstance(error, BudgetReached) else Status.ABORTED, stats, error
            )
        if interrupted:
            return cls(Status.INTERRUPTED, stats)
        return cls(Status.COMPLETED_WITH_ERRORS if stats.failed else Status.COMPLETED, stats)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        if self.status is Status.INTERRUPTED:
            return EXIT_INTERRUPTED
        if self.status is Status.SUBMITTED:
            return EXIT_SUBMITTED
        return EXIT_FAILED_ROWS if self.status is Status.COMPLETED_WITH_ERRORS else EXIT_OK

    @property
    def message(self) -> str | None:
        if self.error is not None:
            return str(self.error)
        if self.status is Status.COMPLETED_WITH_ERRORS:
            return f"{plural(self.stats.failed, 'row')} failed; see errors"
        if self.status is Status.SUBMITTED:
            return "batches submitted and left to run at the provider; run the same command to collect them"
        return "interrupted" if self.status is Status.INTERRUPTED else None

    @property
    def stopped_early(self) -> bool:
        """Rows were left unsent on purpose or by a stop: the same command continues."""
        return self.status in (Status.INTERRUPTED, Status.ABORTED, Status.BUDGET_REACHED, Status.SUBMITTED)

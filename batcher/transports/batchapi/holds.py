"""Parts held back for a budget (--max-cost, --max-total-tokens) in Batch API mode.

A part's batch is made only if its rows' worst case, at online prices, fits beside what every
session spent and the worst case of every batch that may still run (docs/batch-api.md, Budgets).
A part that does not fit is held, unsent, and looked at again as batches end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from batcher.errors import BudgetReached
from batcher.job import Job
from batcher.limits.costs import Budget
from batcher.outputs.stats import RunStats
from batcher.transports.batchapi.parts import Part, PartState


class Holds:
    """The parts held for a budget, and whether a part fits."""

    def __init__(self, job: Job, stats: RunStats, parts: Callable[[], Iterable[Part]]):
        self.job, self.stats, self._parts = job, stats, parts
        self.held: set[int] = set()

    def budget(self) -> Budget:
        """The budgets, against what every session spent and the worst case of every batch that may run."""
        budget = Budget.of_run(self.job, self.stats)
        for part in self._parts():
            if part.state in (PartState.CREATING, PartState.CREATED, PartState.ENDED):
                budget.hold(part.worst_tokens, part.worst_cost)
        return budget

    def admit(self, part: Part) -> bool:
        """Whether the part's batch can be made without a budget going over; held if not."""
        if self._fits(part):
            self.held.discard(part.number)
            return True
        self.held.add(part.number)  # not sent; looked at again as batches end
        return False

    def only_held(self, open_parts: list[Part]) -> bool:
        """Every part left is held for a budget, with nothing running that could free it."""
        return all(p.number in self.held and not self._fits(p) for p in open_parts)

    def reached(self) -> BudgetReached:
        first = min(self.held)
        return BudgetReached(
            self.budget().exhausted_message(f"the batch of part {first}, at its worst case,")
        )

    def _fits(self, part: Part) -> bool:
        budget = self.budget()
        return not budget.limited or budget.reserve(part.worst_tokens, part.worst_cost)

"""A Ray run's budget (`--max-cost`, `--max-total-tokens`): one for the cluster, held by an actor.

Each request's worst case (its prompt's estimate and `max_tokens`, at the job's prices) is reserved
against the run's one `limits.costs.Budget` before it is sent, and settled with what it used once
answered, as a local run does (transports/online/charges.py); here the budget lives in a named
actor (`num_cpus=0`) made by the driver with what every earlier session spent, and every worker's
`ClusterBudget` asks it. A reservation is a round trip a request, worth it only where a budget is
set: the cluster then stops where a local run of the job stops, over by no more than a local run
(what was reserved and not yet settled is the requests in flight). A settlement goes one way:
the actor takes a worker's calls in the order it made them.
"""

from __future__ import annotations

from typing import Any

from batcher.limits.costs import Budget


class BudgetKeeper:
    """The actor: the run's Budget, reserved and settled by the workers."""

    def __init__(self, max_cost: float | None, max_tokens: int | None, spent_cost: float, spent_tokens: int):
        self._budget = Budget(max_cost, max_tokens, spent_cost=spent_cost, spent_tokens=spent_tokens)

    def reserve(self, tokens: int, cost: float | None) -> str | None:
        """None if the request's worst case is held; else why not (the budget's message)."""
        return None if self._budget.reserve(tokens, cost) else self._budget.exhausted_message()

    def settle(self, tokens: int, cost: float | None, used_tokens: int, used_cost: float | None) -> None:
        self._budget.settle(tokens, cost, used_tokens=used_tokens, used_cost=used_cost)


def budget_actor(budget: Budget) -> Any:
    """The actor holding `budget` (the driver's, with every earlier session's spend), for one run."""
    import ray

    actor_class = ray.remote(num_cpus=0, max_concurrency=1)(BudgetKeeper)
    return actor_class.remote(budget.max_cost, budget.max_tokens, budget.spent_cost, budget.spent_tokens)


class ClusterBudget:
    """A worker's stand-in for the run's Budget (what transports/online/charges.py asks of one)."""

    limited = True

    def __init__(self, keeper: Any):
        self._keeper = keeper
        self._refusal = ""

    async def reserve_async(self, tokens: int, cost: float | None) -> bool:
        refusal = await self._keeper.reserve.remote(tokens, cost)
        if refusal is not None:
            self._refusal = refusal
        return refusal is None

    def settle(self, tokens: int, cost: float | None, *, used_tokens: int, used_cost: float | None) -> None:
        self._keeper.settle.remote(tokens, cost, used_tokens, used_cost)

    def exhausted_message(self, what: str = "the next request") -> str:
        return self._refusal

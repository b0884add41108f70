"""What a request is charged against: its endpoint's limits, and the run's budget.

Before a request goes, its worst case (prompt estimate + max_tokens, at the job's prices) is
reserved against a budget (`--max-cost`, `--max-total-tokens`); a request the budget cannot take is
not sent, and resume sends it. Once it has an answer or a failure, the endpoint's limits learn what
it became (answered, with its tokens and headers; throttled; failed) and the budget is settled with
what it used. See docs/costs-and-budgets.md and docs/rate-limits.md.
"""

from __future__ import annotations

from typing import Any

from batcher.errors import RateLimited, RequestFailed
from batcher.job import Job
from batcher.kinds import RequestKind
from batcher.kinds.completion import Completion
from batcher.kinds.tokens import admission_charge
from batcher.limits.costs import Budget
from batcher.limits.ratelimits import Permit, Verdict
from batcher.transports.online.endpoints import Endpoint, Router

#: What `reserve` says of a request the budget cannot take.
OVER_BUDGET = object()


class Charges:
    """A run's requests charged against their endpoints' limits and the run's budget."""

    def __init__(self, job: Job, kind: RequestKind, router: Router, budget: Budget):
        """`budget`: the run's (limits.costs.Budget), or one that stands for it (a Ray run's
        transports/ray/budget.py: the same methods, `reserve_async` asking the cluster's)."""
        self.router, self.budget = router, budget
        self.estimator = kind.estimator
        self._prices = job.price_table
        #: Whether a budget is set (asked twice a request; the job's limits never change in a run).
        self.budgeted = budget.limited
        #: The server charges this kind's requests their input alone: a high estimate is given back.
        self._exact = kind.charges_input_only

    async def reserve(self, body: dict[str, Any], prompt_chars: int, estimate: int) -> float | None | object:
        """The cost set aside for a request under the budget (a budget is set: `budgeted`);
        OVER_BUDGET when it would not fit. Awaited: a cluster's budget is another process's."""
        prompt, most = self.estimator.parts(body, prompt_chars)
        reserved = self._prices.cost(body.get("model"), {"prompt_tokens": prompt, "completion_tokens": most})
        return reserved if await self.budget.reserve_async(estimate, reserved) else OVER_BUDGET

    def settle(
        self,
        endpoint: Endpoint,
        permit: Permit,
        body: dict[str, Any],
        estimate: int,
        reserved: float | None,
        completion: Completion | None,
        failure: RequestFailed | None,
    ) -> None:
        """Tell the limits and the budget what a request became (and price its answer)."""
        usage = (completion.usage if completion is not None else None) or {}
        if completion is not None:
            completion.cost = self._prices.cost(
                completion.model or endpoint.config.model or body.get("model"), completion.usage
            )
            self.router.answered(endpoint, completion.usage, completion.latency_ms)
            endpoint.limits.settle(
                permit,
                Verdict.ANSWERED,
                headers=completion.headers,
                used_tokens=admission_charge(body, usage),
                exact=self._exact,
            )
        elif isinstance(failure, RateLimited):
            endpoint.limits.settle(
                permit, Verdict.THROTTLED, headers=failure.headers, retry_after=failure.retry_after
            )
        else:
            endpoint.limits.settle(permit, Verdict.FAILED, headers=failure.headers if failure else None)
        if self.budgeted:
            used = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
            cost = completion.cost if completion is not None else None
            self.budget.settle(estimate, reserved, used_tokens=used, used_cost=cost)

"""What a run costs (a price table, `cost_usd` on every line) and the budgets that stop it.

A request's worst case is reserved against `max_cost` / `max_total_tokens` before it is sent;
budgets count every session. A `max_cost` is refused where a model it would pay for has no price
(nothing could be reserved for it, so the budget would never stop the run): the job's model and
its endpoints' before anything runs, a model named by rows at the scan (`PricedRows`). See
docs/costs-and-budgets.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batcher.errors import ConfigError

_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")

#: USD per million tokens (input, output): OpenAI list prices, standard tier.
BUILT_IN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1-mini": (1.10, 4.40),
    "o1": (15.00, 60.00),
    "o3-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    # Embeddings: input tokens only.
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
}


#: The Batch API's price as a share of the online one (OpenAI: half, input and output alike).
BATCH_DISCOUNT = 0.5
_KEYS = {"input", "output"}
_BATCH_KEYS = {"batch_input", "batch_output"}


@dataclass(frozen=True)
class Prices:
    """The price table of a job: the built-in one, overridden entry by entry by the job's.

    Each model has an online price (input, output) and a Batch API price: the
    entry's own `batch_input` / `batch_output` where it says them, else the
    online price times `BATCH_DISCOUNT`.
    """

    table: Mapping[str, tuple[float, float]]
    #: Batch API prices an entry states; the others are discounted from the online ones.
    batch_table: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: `of` for each model name asked about (the snapshot pattern costs a regex a row).
    _known: dict[tuple[str, bool], tuple[float, float] | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_settings(cls, prices: Mapping[str, Any] | None) -> Prices:
        table, batch_table = dict(BUILT_IN_PRICES), {}
        for model, entry in (prices or {}).items():
            if not isinstance(entry, Mapping) or not _KEYS <= set(entry) <= _KEYS | _BATCH_KEYS:
                raise ConfigError(
                    f"prices.{model} needs input and output, USD per million tokens, and may say "
                    f"batch_input and batch_output, e.g. {{ input = 0.15, output = 0.60 }}; got {entry!r}"
                )
            values = {key: entry[key] for key in sorted(set(entry))}
            if not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()
            ) or not all(math.isfinite(v) and v >= 0 for v in values.values()):
                raise ConfigError(f"prices.{model}: prices must be numbers of 0 or more, got {entry!r}")
            table[str(model)] = (float(entry["input"]), float(entry["output"]))
            if _BATCH_KEYS & set(entry):
                online = table[str(model)]
                batch_table[str(model)] = (
                    float(entry.get("batch_input", online[0] * BATCH_DISCOUNT)),
                    float(entry.get("batch_output", online[1] * BATCH_DISCOUNT)),
                )
        return cls(table, batch_table)

    def of(self, model: str | None, *, batch: bool = False) -> tuple[float, float] | None:
        """(input, output) USD per million tokens for `model`, online or in a batch; None when unknown."""
        if not model:
            return None
        try:
            return self._known[model, batch]
        except KeyError:
            pass
        name = model if model in self.table else _SNAPSHOT.sub("", model)  # gpt-4o-mini-2024-07-18
        price = self.table.get(name)
        if batch and price is not None:
            price = self.batch_table.get(name) or (price[0] * BATCH_DISCOUNT, price[1] * BATCH_DISCOUNT)
        if len(self._known) < 1024:  # (a few models in a run; never grows with the rows)
            self._known[model, batch] = price
        return price

    def cost(
        self, model: str | None, usage: Mapping[str, Any] | None, *, batch: bool = False
    ) -> float | None:
        """USD for one answer's usage, online or in a batch, or None when the model has no price."""
        price = self.of(model, batch=batch)
        if price is None or not usage:
            return None
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        return round((prompt * price[0] + completion * price[1]) / 1_000_000, 9)


#: How to give a model its price, told wherever one is missing.
HOW_TO_PRICE = (
    "give its price with --price INPUT,OUTPUT (USD per million tokens, for --model) or a [prices] "
    "entry in the job file"
)


def check_priced(job: Any) -> None:
    """Refuse a `max_cost` that could not be kept: the job's model (or an endpoint's name for it)
    has no price, so its requests would reserve nothing against the budget."""
    if job.max_cost is None:
        return
    named = [("--model", job.model)] + [
        (f"endpoint {endpoint.name!r}", endpoint.model) for endpoint in job.endpoint_configs
    ]
    for where, model in named:
        if model and job.price_table.of(model) is None:
            raise ConfigError(
                f"--max-cost cannot be kept: model {model!r} ({where}) has no known price, so "
                f"its requests would reserve nothing against the budget; {HOW_TO_PRICE}"
            )


class PricedRows:
    """A request builder whose rows must name models with a price, under a `max_cost`: rows that
    carry their own model (chat requests, Batch input lines) are refused at the scan otherwise."""

    def __init__(self, builder: Any, prices: Prices):
        self._builder, self._prices = builder, prices

    @classmethod
    def under(cls, job: Any, builder: Any) -> Any:
        """`builder`, checking each row's model, when the job has a `max_cost`."""
        return builder if job.max_cost is None else cls(builder, job.price_table)

    def build(self, row: dict[str, Any]) -> dict[str, Any]:
        body = self._builder.build(row)
        model = body.get("model")
        if self._prices.of(model) is None:
            raise ValueError(
                f"names model {model!r}, which has no known price, so --max-cost could not count what "
                "it spends: price it in [prices] of a job file (or run it with --model and --price)"
            )
        return body

    def __getattr__(self, name: str) -> Any:  # (the builder's other members: kind, placeholders, ...)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._builder, name)


class Budget:
    """Spend so far (all sessions) against `max_cost` and `max_total_tokens`, with reservations."""

    __slots__ = ("max_cost", "max_tokens", "spent_cost", "spent_tokens", "_reserved_cost", "_reserved_tokens")

    def __init__(
        self, max_cost: float | None, max_tokens: int | None, *, spent_cost: float, spent_tokens: int
    ):
        self.max_cost, self.max_tokens = max_cost, max_tokens
        self.spent_cost, self.spent_tokens = spent_cost, spent_tokens
        self._reserved_cost = 0.0
        self._reserved_tokens = 0

    @classmethod
    def of_run(cls, job: Any, stats: Any) -> Budget:
        """A job's budgets (`max_cost`, `max_total_tokens`) against what every session spent (stats)."""
        spent = stats.prompt_tokens + stats.completion_tokens
        return cls(job.max_cost, job.max_total_tokens, spent_cost=stats.cost_usd, spent_tokens=spent)

    @property
    def limited(self) -> bool:
        return self.max_cost is not None or self.max_tokens is not None

    def reserve(self, tokens: int, cost: float | None) -> bool:
        """Hold a request's worst case against the budgets; False (nothing held) if it would not fit."""
        cost = cost or 0.0
        if (
            self.max_tokens is not None
            and self.spent_tokens + self._reserved_tokens + tokens > self.max_tokens
        ):
            return False
        if self.max_cost is not None and self.spent_cost + self._reserved_cost + cost > self.max_cost:
            return False
        self._reserved_tokens += tokens
        self._reserved_cost += cost
        return True

    async def reserve_async(self, tokens: int, cost: float | None) -> bool:
        """`reserve`, as a budget held elsewhere (a Ray run's) is asked."""
        return self.reserve(tokens, cost)

    def hold(self, tokens: int, cost: float | None) -> None:
        """Hold what is already committed (a batch that runs), whether or not it fits."""
        self._reserved_tokens += tokens
        self._reserved_cost += cost or 0.0

    def settle(self, tokens: int, cost: float | None, *, used_tokens: int, used_cost: float | None) -> None:
        """Replace a reservation with what the request really used (0 if it got no answer)."""
        self._reserved_tokens -= tokens
        self._reserved_cost -= cost or 0.0
        self.spent_tokens += used_tokens
        self.spent_cost += used_cost or 0.0

    def exhausted_message(self, what: str = "the next request") -> str:
        parts = []
        if self.max_cost is not None:
            parts.append(f"${self.spent_cost:.4f} of max_cost ${self.max_cost:g}")
        if self.max_tokens is not None:
            parts.append(f"{self.spent_tokens:,} of max_total_tokens {self.max_tokens:,}")
        return (
            f"budget reached: {' and '.join(parts)} spent over all sessions; {what} would go over. "
            "What was already sent was finished and kept. Raise the budget and run the same command "
            "again to continue."
        )

"""The cluster's limit against a modelled server, in virtual time: Ray workers without Ray.

The real `LimitsKeeper` and one real `RayLimiter` a worker run on an event loop whose clock jumps
(limits_model.py), the keeper's calls answered after a modelled round trip, against the server of
limits_model.py (a bucket of `rpm` holding a second, 429 at once, 200 ms +-50% latency). How the
cluster finds a limit nobody announces was tuned here (docs/ray.md), then measured on real Ray
(ray_bench.py found).

    python benchmarks/cluster_model.py            # the table of scenarios
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from limits_model import Outcome, Server, run_virtual, send_rows  # noqa: E402

from batcher.transports.ray.limits import LimitsKeeper, RayLimiter  # noqa: E402


class ModelledActor:
    """A keeper called as a Ray actor is (`keeper.method.remote(...)`), answered after `rtt` seconds."""

    def __init__(self, keeper: LimitsKeeper, rtt: float, rng: random.Random):
        self._keeper, self._rtt, self._rng = keeper, rtt, rng

    def __getattr__(self, name: str):
        method = getattr(self._keeper, name)
        outer = self

        class Remote:
            @staticmethod
            def remote(*args):
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                delay = outer._rtt * outer._rng.uniform(0.5, 1.5)

                def call() -> None:  # the actor runs it half a round trip later
                    result = method(*args)
                    loop.call_later(delay / 2, lambda: future.done() or future.set_result(result))

                loop.call_later(delay / 2, call)
                return future

        return Remote


def simulate_cluster(
    server: Server,
    rows: int,
    *,
    workers: int = 3,
    concurrency: int = 16,
    rpm: float | None = None,
    rtt: float = 0.002,
    seed: int = 0,
) -> Outcome:
    """Send `rows` through `workers` RayLimiters of `concurrency` each, one keeper, to `server`."""

    async def go() -> Outcome:
        loop = asyncio.get_running_loop()
        rng = random.Random(seed)
        keeper = LimitsKeeper(rpm, None, clock=loop.time, max_window=workers * concurrency)
        actor = ModelledActor(keeper, rtt, rng)
        todo = iter(range(rows))

        limiters = [
            RayLimiter(actor, window=asyncio.Semaphore(concurrency), clock=loop.time) for _ in range(workers)
        ]
        senders = [send_rows(todo, limiters[i % workers], server, True) for i in range(workers * concurrency)]
        await asyncio.gather(*senders)
        return Outcome(rows, server.requests, server.rejected, loop.time(), server.rpm)

    return run_virtual(go())


SCENARIOS = {
    "3 workers, 1,800 RPM, no --rpm, 2,000 rows": lambda s: simulate_cluster(
        Server(1800, seed=s), 2000, seed=s
    ),
    "3 workers, --rpm 1800, 2,000 rows": lambda s: simulate_cluster(
        Server(1800, seed=s), 2000, rpm=1800, seed=s
    ),
    "3 workers, 3,000 RPM, no --rpm, 50 ms latency, 400 rows": lambda s: simulate_cluster(
        Server(3000, latency=0.05, seed=s), 400, seed=s
    ),
    "3 workers, 60 RPM, no --rpm, 200 rows": lambda s: simulate_cluster(Server(60, seed=s), 200, seed=s),
    "8 workers, 30,000 RPM, no --rpm, 20,000 rows": lambda s: simulate_cluster(
        Server(30_000, seed=s), 20_000, workers=8, concurrency=32, seed=s
    ),
    "3 workers, 600 RPM, 5 s latency, no --rpm, 1,000 rows": lambda s: simulate_cluster(
        Server(600, latency=5.0, seed=s), 1000, seed=s
    ),
}


def main() -> None:
    print("| scenario | seed | utilisation | 429s / requests | seconds |")
    print("|---|---|---|---|---|")
    seeds = [int(a) for a in sys.argv[1:] if a.isdigit()] or [0]
    chosen = [a for a in sys.argv[1:] if not a.isdigit()]
    for name, scenario in SCENARIOS.items():
        if chosen and not any(c in name for c in chosen):
            continue
        for seed in seeds:
            outcome = scenario(seed)
            print(
                f"| {name} | {seed} | {outcome.utilisation:.1%} "
                f"| {outcome.rejected_share:.2%} ({outcome.rejected} of {outcome.requests}) "
                f"| {outcome.seconds:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

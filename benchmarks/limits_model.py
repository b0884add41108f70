"""The limiter against a modelled server, in virtual time: seconds of computing for minutes of traffic.

The real `RateLimits` (and so the real pacer and adaptive rate) runs on an
event loop whose clock jumps to the next timer instead of sleeping, against a
server modelled as a token bucket of `rpm` a minute holding `burst` seconds,
answering 429 at once (with `retry-after`) when it is empty and 200 after a
latency of 200 ms +/- 50% otherwise. This is how `cut` and `plateau` were chosen
(docs/rate-limits.md); the unit tests run the same model with fixed seeds.

    python benchmarks/limits_model.py            # the table of scenarios
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import selectors
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batcher.limits.ratelimits import RateLimits, Verdict  # noqa: E402


class _JumpingSelector(selectors.DefaultSelector):
    """Never blocks: when nothing is ready, the loop's clock jumps by the timeout instead."""

    def __init__(self, loop: VirtualTimeLoop):
        super().__init__()
        self._loop = loop

    def select(self, timeout=None):
        events = super().select(0)
        if not events and timeout:
            self._loop.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` advances only when every task is waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(coro):
    """Run a coroutine on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@dataclass
class Server:
    """A provider's limit: a bucket of `rpm` a minute holding `burst` seconds; 429 at once when empty."""

    rpm: float
    burst: float = 1.0
    latency: float = 0.2
    jitter: float = 0.5
    retry_after: float | None = 0.2
    announce: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.rate = self.rpm / 60
        self.capacity = max(1.0, self.rate * self.burst)
        self.level = self.capacity
        self.updated = 0.0
        self.rng = random.Random(self.seed)
        self.requests = self.rejected = 0

    async def post(self) -> tuple[int, dict[str, str]]:
        now = asyncio.get_running_loop().time()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        self.requests += 1
        if self.level < 1:
            self.rejected += 1
            await asyncio.sleep(0.001)
            return 429, self._headers()
        self.level -= 1
        headers = self._headers()
        await asyncio.sleep(self.latency * self.rng.uniform(1 - self.jitter, 1 + self.jitter))
        return 200, headers

    def _headers(self) -> dict[str, str]:
        if not self.announce:
            return {}
        return {
            "x-ratelimit-limit-requests": f"{self.rpm:g}",
            "x-ratelimit-remaining-requests": str(int(self.level)),
            "x-ratelimit-reset-requests": f"{int((self.capacity - self.level) / self.rate * 1000)}ms",
        }


@dataclass
class Outcome:
    rows: int
    requests: int
    rejected: int
    seconds: float
    limit_rpm: float

    @property
    def utilisation(self) -> float:
        return self.rows / self.seconds * 60 / self.limit_rpm

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.requests


async def send_rows(todo, limits, server: Server, pause: bool = False) -> None:
    """One worker: each row of `todo` sent through `limits` until answered (pausing `retry_after`)."""
    for _ in todo:
        while True:
            permit = await limits.acquire(1)
            status, headers = await server.post()
            if status == 200:
                limits.settle(permit, Verdict.ANSWERED, headers=headers)
                break
            limits.settle(permit, Verdict.THROTTLED, headers=headers, retry_after=server.retry_after)
            if pause:
                await asyncio.sleep(server.retry_after or 1.0)


def simulate(
    server: Server,
    rows: int,
    *,
    concurrency: int = 64,
    rpm: float | None = None,
    cut: float | None = None,
    plateau: int | None = None,
) -> Outcome:
    """Send `rows` through a `RateLimits` of `concurrency` workers to `server`; what came of it."""

    async def go() -> Outcome:
        loop = asyncio.get_running_loop()
        limits = RateLimits(rpm, None, concurrency=concurrency, clock=loop.time)
        if cut is not None:
            limits.control.cut = cut
        if plateau is not None:
            limits.control.plateau = plateau
        todo = iter(range(rows))
        await asyncio.gather(*(send_rows(todo, limits, server) for _ in range(concurrency)))
        return Outcome(rows, server.requests, server.rejected, loop.time(), server.rpm)

    return run_virtual(go())


SCENARIOS = {
    "no headers, no --rpm (the storm case), 2,000 rows": lambda **kw: simulate(Server(1800), 2000, **kw),
    "headers, no --rpm, 1,000 rows": lambda **kw: simulate(Server(1800, announce=True), 1000, **kw),
    "--rpm 1800, 3,000 rows": lambda **kw: simulate(Server(1800), 3000, rpm=1800, **kw),
    "no headers, 429 without retry-after": lambda **kw: simulate(Server(1800, retry_after=None), 2000, **kw),
    "no headers, 60 RPM, 200 rows": lambda **kw: simulate(Server(60), 200, **kw),
    "no headers, 30,000 RPM, 20,000 rows, concurrency 256": lambda **kw: simulate(
        Server(30_000), 20_000, concurrency=256, **kw
    ),
    "no headers, 120,000 RPM, 50,000 rows, concurrency 1024": lambda **kw: simulate(
        Server(120_000), 50_000, concurrency=1024, **kw
    ),
    "no headers, latency 5 s, 600 RPM, 1,000 rows": lambda **kw: simulate(
        Server(600, latency=5.0), 1000, **kw
    ),
    "--rpm 3600 given, server holds 1,800": lambda **kw: simulate(Server(1800), 2000, rpm=3600, **kw),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cut", type=float, nargs="*", default=[None], help="cut factors to compare")
    parser.add_argument("--plateau", type=int, nargs="*", default=[None], help="plateaus to compare")
    args = parser.parse_args()
    print("| scenario | cut | plateau | utilisation | 429s / requests | seconds |")
    print("|---|---|---|---|---|---|")
    for (name, scenario), cut, plateau in itertools.product(SCENARIOS.items(), args.cut, args.plateau):
        outcome = scenario(cut=cut, plateau=plateau)
        print(
            f"| {name} | {cut or 'default'} | {plateau or 'default'} | {outcome.utilisation:.1%} "
            f"| {outcome.rejected_share:.2%} ({outcome.rejected} of {outcome.requests}) "
            f"| {outcome.seconds:.1f} |"
        )


if __name__ == "__main__":
    main()

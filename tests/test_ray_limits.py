"""One rate limit for many processes: a keeper hands out capacity in leases (raylimits.py).

The keeper's arithmetic runs on a virtual clock; the cluster test runs real Ray worker processes,
each sending real requests to the simulator, and asks the simulator what it saw.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from batcher.limits.ratelimits import Verdict
from batcher.transports.ray.limits import SLOW_START_POLL, LimitsKeeper, RayLimiter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_leases_hand_out_the_rate_and_one_burst_whoever_asks():
    clock = Clock()
    keeper = LimitsKeeper(600, None, clock=clock)  # 10 a second, a burst of 5; leases of 1 request

    starts = [clock.now + keeper.lease().wait for _ in range(40)]  # four workers asking in turn

    assert starts[:5] == [100.0] * 5  # the burst: half a second's worth
    assert starts[39] == pytest.approx(103.5)  # then 10 a second, however many ask
    assert all(b >= a for a, b in itertools.pairwise(starts))


def test_a_429_anywhere_pauses_every_worker_and_voids_what_they_hold():
    clock = Clock()
    keeper = LimitsKeeper(600, None, clock=clock)
    before = keeper.lease()

    keeper.throttled(retry_after=2.0)
    after = keeper.lease()

    assert after.generation == before.generation + 1
    assert after.wait >= 2.0  # nobody goes before the retry-after


def test_where_no_limit_is_known_one_window_holds_the_clusters_requests_in_flight_and_grows():
    clock = Clock()
    keeper = LimitsKeeper(None, None, clock=clock, max_window=48)

    first = keeper.lease()  # a session's first request goes alone, whoever asks
    second = keeper.lease()
    clock.now += 1.0
    answered = keeper.lease(answered=1, returned=1, leased_at=first.issued_at)  # its answer: room again
    windows = []
    for _ in range(4):
        clock.now += 0.25
        windows.append(keeper.control.window_at(clock.now))

    assert (first.requests, first.wait) == (1, 0.0)
    assert (second.requests, second.wait) == (0, SLOW_START_POLL)  # no room: ask again shortly
    assert answered.requests == 2  # the window grew by the answer (1 + 1), and one place came back
    assert windows == [4, 8, 16, 32]  # then doubles every 0.25 s, as one process's does
    assert keeper.request_rate(clock.now) is None  # no rate yet: the window alone paces slow start


def test_the_first_429_sets_the_rate_from_what_was_sent_and_the_event_cuts_once():
    clock = Clock()
    keeper = LimitsKeeper(None, None, clock=clock, max_window=48)
    keeper.lease(answered=1)
    clock.now += 0.5
    before = keeper.lease(sent=40).issued_at  # the workers told of 40 sent over the last second
    clock.now += 0.01

    keeper.throttled(retry_after=0.5, leased_at=before)
    cut = keeper.request_rate(clock.now)
    keeper.throttled(retry_after=0.5, leased_at=before)  # leased before the cut: nothing more
    after = keeper.lease(answered=5, leased_at=before).issued_at  # answers to the old rate: ignored
    keeper.throttled(retry_after=0.5, leased_at=after)  # leased after it, before any answer to it
    unchanged = keeper.request_rate(clock.now)

    assert cut == pytest.approx(0.9 * 40)
    assert unchanged == cut  # one congestion event, one cut


def test_a_later_event_cuts_to_what_the_server_let_through_not_to_the_rate_that_overshot():
    clock = Clock()
    keeper = LimitsKeeper(None, None, clock=clock, max_window=48)
    keeper.lease(answered=1)
    keeper.throttled(retry_after=0.1, leased_at=keeper.lease(sent=40).issued_at)  # rate 36
    clock.now += 0.5
    lease = keeper.lease(answered=1, leased_at=clock.now)  # the new rate answered: the event is over
    for _ in range(10):  # 30 answers a second over the last second
        clock.now += 0.1
        keeper.lease(answered=3, leased_at=lease.issued_at)
    rate = keeper.request_rate(clock.now)

    keeper.throttled(retry_after=0.1, leased_at=clock.now)
    through = keeper.request_rate(clock.now)

    assert rate > 30  # (the climb back to the first peak)
    assert through == pytest.approx(0.9 * max(30, 0.9 * rate))  # what came back, never below cut^2


def test_a_lower_limit_one_worker_read_in_headers_holds_for_all():
    keeper = LimitsKeeper(6000, None, clock=Clock())

    keeper.announced("requests", 600)

    assert keeper.lease().rpm == 600
    keeper.announced("requests", 1200)  # a higher one changes nothing
    assert keeper.lease().rpm == 600


class LocalKeeper:
    """A keeper called as a Ray actor is (`keeper.method.remote(...)`, awaited), in this process."""

    def __init__(self, keeper):
        self.keeper, self.calls = keeper, 0

        outer = self

        class Method:
            def __init__(self, name):
                self.name = name

            def remote(self, *args):
                outer.calls += 1
                future = asyncio.get_running_loop().create_future()
                future.set_result(getattr(outer.keeper, self.name)(*args))
                return future

        self.lease, self.throttled, self.announced, self.charge = (
            Method("lease"),
            Method("throttled"),
            Method("announced"),
            Method("charge"),
        )


def test_a_worker_asks_the_keeper_once_a_lease_not_once_a_request():
    keeper = LocalKeeper(LimitsKeeper(60_000, None))  # leases of 100 requests

    async def go():
        limiter = RayLimiter(keeper)
        for _ in range(250):
            permit = await limiter.acquire(10)
            limiter.settle(permit, Verdict.ANSWERED)
        return limiter.limits()

    assert asyncio.run(go()) == (60_000, None)
    assert keeper.calls == 3


def test_tokens_used_beyond_a_lease_are_owed_with_the_next_lease_not_told_a_request_at_a_time():
    charged = []

    class Keeper(LimitsKeeper):
        def charge(self, tokens):
            charged.append(tokens)
            super().charge(tokens)

    keeper = LocalKeeper(Keeper(60_000, 6_000_000))  # leases of 100 requests and 10,000 tokens

    async def go():
        limiter = RayLimiter(keeper)
        for _ in range(250):
            permit = await limiter.acquire(10)
            limiter.settle(permit, Verdict.ANSWERED, used_tokens=50)  # 40 beyond the estimate

    asyncio.run(go())

    assert keeper.calls == 3  # the leases, and nothing else
    assert sum(charged) == 200 * 40  # the first two leases' requests, told with the next lease each


def test_a_worker_told_of_a_429_drops_what_it_holds_and_tells_the_keeper():
    keeper = LocalKeeper(LimitsKeeper(60_000, None))

    async def go():
        limiter = RayLimiter(keeper)
        permit = await limiter.acquire(1)
        limiter.settle(permit, Verdict.THROTTLED, retry_after=0.2)
        started = time.monotonic()
        await limiter.acquire(1)
        return time.monotonic() - started

    waited = asyncio.run(go())

    assert waited >= 0.15  # the keeper's pause, not the 99 requests it held


def send_through_the_cluster_limit(base_url: str, keeper_name: str, count: int) -> list[int]:
    """A Ray worker's job: `count` chat requests, each let through by the cluster's keeper."""
    import aiohttp
    import ray

    from batcher.transports.ray.limits import RayLimiter

    async def go() -> list[int]:
        limiter = RayLimiter(ray.get_actor(keeper_name, namespace="batcher"))
        statuses = []
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-test"}) as session:
            for i in range(count):
                permit = await limiter.acquire(20)
                body = {"model": "m", "messages": [{"role": "user", "content": f"{keeper_name} {i}"}]}
                async with session.post(base_url + "/chat/completions", json=body) as response:
                    statuses.append(response.status)
                    verdict = Verdict.THROTTLED if response.status == 429 else Verdict.ANSWERED
                    limiter.settle(permit, verdict, headers=response.headers)
        return statuses

    return asyncio.run(go())


@pytest.mark.slow  # about 5 s: 120 requests at 20 a second
def test_three_ray_workers_together_never_send_more_than_the_limit_and_one_burst(
    ray_cluster, simulator_factory
):
    ray = ray_cluster
    simulator = simulator_factory(rpm=1200, rate_limit_headers="none")  # 20 a second, a 1 s bucket
    from batcher.transports.ray.limits import keeper_actor

    keeper = keeper_actor("three-workers", 1200, None)  # (held: an actor lives while a handle does)
    ray.get(keeper.__ray_ready__.remote())
    send = ray.remote(num_cpus=0.1)(send_through_the_cluster_limit)

    statuses = ray.get([send.remote(simulator.base_url, "three-workers", 40) for _ in range(3)])

    assert sorted(s for worker in statuses for s in worker).count(429) <= 1  # (per-worker pacing: dozens)
    arrivals = sorted(simulator.server.ledger.arrivals)
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 20 + 20  # a second's rate and one burst, across the three processes
    assert arrivals[-1] - arrivals[0] >= (120 - 20) / 20 * 0.95  # the whole ran at the rate, no faster

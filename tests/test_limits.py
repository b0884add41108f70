"""The limiter's specification, on a virtual clock: pacing, slow start, 429s, headers, the adaptive rate.

The pacer is given the time outright (`now`); the limiter's tests run the real
`RateLimits` on an event loop whose clock jumps to the next timer
(benchmarks/limits_model.py). Either way the times asserted are exact and no
test waits on, or is flaked by, the machine's clock.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from limits_model import Server, run_virtual, simulate  # noqa: E402

from batcher.limits.pacing import Pacer  # noqa: E402
from batcher.limits.ratelimits import RateLimits, Verdict  # noqa: E402


def approx(value, **kwargs):
    return pytest.approx(value, **{"abs": 1e-6, **kwargs})


def limits(rpm=None, tpm=None, **kwargs) -> RateLimits:
    return RateLimits(rpm, tpm, clock=asyncio.get_running_loop().time, **kwargs)


async def admit(limiter: RateLimits, n: int, tokens: int = 1, headers=None) -> list[float]:
    """Admit `n` requests one after another, each answered at once; when each was admitted."""
    loop, times = asyncio.get_running_loop(), []
    for _ in range(n):
        permit = await limiter.acquire(tokens)
        times.append(loop.time())
        limiter.settle(permit, Verdict.ANSWERED, headers=headers)
    return times


# The pacer alone: pure arithmetic on the `now` it is given.


def test_a_full_pacer_admits_its_bucket_at_once_then_one_at_the_rate():
    pacer = Pacer(per_second=10, burst_seconds=0.5)  # a bucket of 5

    waits = [pacer.reserve(1, now=100.0) for _ in range(7)]

    assert waits[:5] == [0.0] * 5
    assert waits[5:] == [approx(0.1), approx(0.2)]


def test_a_pacer_refills_at_its_rate_up_to_its_bucket():
    pacer = Pacer(per_second=10, burst_seconds=0.5)
    pacer.reserve(5, now=0.0)

    assert pacer.available(0.0) == approx(0)
    assert pacer.available(0.2) == approx(2)
    assert pacer.available(60.0) == approx(5)  # never more than the bucket, however long it waited


def test_a_pacer_charged_after_the_fact_makes_the_next_requests_wait():
    pacer = Pacer(per_second=100, burst_seconds=1.0)  # a bucket of 100
    assert pacer.reserve(50, now=0.0) == 0.0

    pacer.charge(50, now=0.0)  # the request used 50 more than it was charged: the bucket is empty

    assert pacer.reserve(100, now=0.0) == approx(1.0)  # (0.5 s without the charge)


def test_an_overestimate_is_given_back_when_the_servers_charge_is_known_but_never_past_what_it_says_remains():
    async def go(exact, headers=None):
        limiter = limits(tpm=60_000)  # a bucket of 1,000
        permit = await limiter.acquire(1000)
        limiter.settle(permit, Verdict.ANSWERED, used_tokens=200, exact=exact, headers=headers)
        return limiter.has_room(800)

    assert run_virtual(go(exact=True)) is True  # the server took 200: 800 are left
    assert run_virtual(go(exact=False)) is False  # a charge of the server's own: nothing given back
    says_none_left = {"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "0"}
    assert run_virtual(go(exact=True, headers=says_none_left)) is False


def test_a_pacer_told_what_remains_holds_no_more_and_is_never_raised():
    pacer = Pacer(per_second=10, burst_seconds=1.0)
    pacer.at_most(3, now=0.0)
    assert pacer.available(0.0) == approx(3)

    pacer.at_most(8, now=0.0)  # a later, larger figure raises nothing

    assert pacer.available(0.0) == approx(3)
    assert [pacer.reserve(1, now=0.0) for _ in range(4)] == [0.0, 0.0, 0.0, approx(0.1)]


def test_a_pacer_emptied_until_a_moment_admits_nothing_before_it_then_only_at_the_rate():
    pacer = Pacer(per_second=10, burst_seconds=1.0)

    pacer.empty_until(5.0)

    assert pacer.reserve(1, now=1.0) == approx(4.1)
    assert pacer.start(1, now=5.0) == approx(5.2)  # behind the first, not a burst of ten
    assert pacer.available(6.0) == approx(10 - 1)  # refilled from empty at 5.0, less the one taken


def test_a_pacer_needs_a_positive_rate_and_burst():
    for per_second, burst in [(0, 1.0), (-1, 1.0), (10, 0.0), (float("nan"), 1.0)]:
        with pytest.raises(ValueError, match="positive rate and burst"):
            Pacer(per_second, burst)


# The limiter on a virtual-time loop.


def test_request_pacing_spreads_a_minute_instead_of_bursting_it():
    async def go():
        return await admit(limits(rpm=1200), 50)  # 20 a second, a burst of 20

    times = run_virtual(go())

    assert times[19] == approx(0)  # one burst passes at once
    assert times[20] == approx(0.05)
    assert times[49] == approx((50 - 20) / 20)  # the rest at the rate, not the minute at once


def test_slow_rates_still_admit_whole_requests():
    async def go():
        return await admit(limits(rpm=10), 2)

    assert run_virtual(go()) == [0.0, approx(6.0)]


def test_a_request_larger_than_the_token_bucket_waits_for_a_full_bucket_and_the_next_pays_the_rest():
    async def go():
        limiter = limits(tpm=60_000)  # 1,000 tokens a second, a bucket of 1,000
        first = await admit(limiter, 1, tokens=2_500)
        return first + await admit(limiter, 1, tokens=1_000)

    assert run_virtual(go()) == [0.0, approx(2.5)]


def test_token_admission_is_first_come_first_served_so_a_long_request_is_not_starved():
    async def go():
        limiter = limits(tpm=60_000, burst_seconds=0.2)  # a bucket of 200 tokens
        await admit(limiter, 1, tokens=200)  # the first request goes alone, and empties it
        admitted = []

        async def request(name, tokens):
            permit = await limiter.acquire(tokens)
            admitted.append(name)
            limiter.settle(permit, Verdict.ANSWERED)

        long = asyncio.create_task(request("long", 200))
        await asyncio.sleep(0.01)
        # Short requests keep coming after it; each would fit the bucket sooner.
        shorts = [asyncio.create_task(request(f"short{i}", 20)) for i in range(8)]
        await asyncio.gather(long, *shorts)
        return admitted

    assert run_virtual(go())[0] == "long"


def test_the_first_request_of_a_session_goes_alone():
    async def go():
        limiter = limits(rpm=6000, concurrency=8)
        loop = asyncio.get_running_loop()
        first = await limiter.acquire(1)
        second = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(5)
        waited = not second.done()
        limiter.settle(first, Verdict.ANSWERED)
        await second
        return waited, loop.time()

    waited, admitted_at = run_virtual(go())

    assert waited
    assert admitted_at == approx(5.0)


def test_without_any_limit_the_window_ramps_up_after_the_first_answer():
    async def go():
        limiter = limits(concurrency=64)
        loop = asyncio.get_running_loop()
        permit = await limiter.acquire(1)
        await asyncio.sleep(1)  # a slow first answer
        limiter.settle(permit, Verdict.ANSWERED)
        admitted = []

        async def hold():  # requests whose answers take longer than the ramp
            await limiter.acquire(1)
            admitted.append(loop.time() - 1)

        await asyncio.gather(*(hold() for _ in range(64)))
        return admitted

    admitted = run_virtual(go())

    assert sum(t == 0 for t in admitted) == 2  # a window of 2, then doubling every 0.25 s
    assert max(admitted) == approx(1.25, abs=0.01)  # 64 in flight within 1.25 s, answers or not


def test_a_429_holds_every_worker_back_for_its_retry_after_then_resumes_at_the_rate_not_in_a_burst():
    async def go():
        limiter = limits(rpm=600, concurrency=8)  # 10 a second
        await admit(limiter, 1)
        permit = await limiter.acquire(1)
        limiter.settle(permit, Verdict.THROTTLED, retry_after=0.4)
        return await admit(limiter, 3)

    # The rate was cut to 9 a second by the 429; nothing before 0.4 s, then one every 1/9 s.
    times = run_virtual(go())

    assert times[0] == approx(0.4 + 1 / 9)
    assert times[2] - times[0] == approx(2 / 9, rel=0.02)  # (climbing back a little with each answer)


def test_the_first_answers_headers_start_the_buckets_at_what_remains_not_full():
    headers = {
        "x-ratelimit-limit-requests": "1800",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "833ms",
    }

    async def go():
        limiter = limits(concurrency=64)
        permit = await limiter.acquire(1)
        limiter.settle(permit, Verdict.ANSWERED, headers=headers)
        return limiter.rpm, await admit(limiter, 10)

    rpm, times = run_virtual(go())

    assert rpm == 1800
    assert times[4] == approx(0)  # the 5 that remain
    assert times[5] == approx(1 / 30)  # then 30 a second, not a bucket of 30 at once


def test_a_per_day_limit_header_is_not_taken_for_a_per_minute_one():
    groq = {  # 14,400 requests a day
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-remaining-requests": "14370",
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "10s",
    }

    async def go():
        limiter = limits()
        permit = await limiter.acquire(1)
        limiter.settle(permit, Verdict.ANSWERED, headers=groq)
        return limiter.limits()

    assert run_virtual(go()) == (None, 6000)


def test_remaining_without_a_limit_holds_requests_until_the_reset():
    azure = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}

    async def go():
        limiter = limits()
        permit = await limiter.acquire(1)
        limiter.settle(permit, Verdict.ANSWERED, headers=azure)
        return await admit(limiter, 1)

    assert run_virtual(go()) == [approx(2.0)]


def test_the_rate_never_goes_above_a_limit_it_was_given():
    outcome = simulate(Server(1800), 500, rpm=600)

    assert outcome.rejected == 0
    assert outcome.seconds == approx(500 / 10, rel=0.03)


# The target cases, in virtual time (benchmarks/bench.py measures them for real).


def test_a_server_that_announces_no_limit_is_held_at_it_with_few_429s():
    outcome = simulate(Server(1800, retry_after=0.2), 2000, concurrency=64)

    assert outcome.utilisation >= 0.95
    assert outcome.rejected_share <= 0.02


def test_a_server_that_announces_its_limit_is_held_at_it_from_its_first_answer():
    outcome = simulate(Server(1800, announce=True), 1000, concurrency=64)

    assert outcome.utilisation >= 0.97
    assert outcome.rejected_share <= 0.005


def test_a_given_limit_is_used_whole():
    outcome = simulate(Server(1800), 3000, rpm=1800, concurrency=64)

    assert outcome.utilisation >= 0.99
    assert outcome.rejected_share <= 0.001


def test_429s_win_over_a_limit_that_claims_more_than_the_server_allows():
    outcome = simulate(Server(1800), 2000, rpm=3600, concurrency=64)

    assert outcome.utilisation >= 0.95
    assert outcome.rejected_share <= 0.05


@pytest.mark.parametrize("rpm, rows, latency", [(60, 150, 0.2), (30_000, 20_000, 0.2), (600, 1000, 5.0)])
def test_the_adaptive_rate_finds_limits_far_apart(rpm, rows, latency):
    outcome = simulate(Server(rpm, latency=latency), rows, concurrency=256)

    assert outcome.utilisation >= 0.85
    assert outcome.rejected_share <= 0.12


def test_a_lone_first_request_refused_only_waits_and_sets_no_rate():
    async def go():
        limiter = limits(concurrency=64)
        permit = await limiter.acquire(1)
        limiter.settle(permit, Verdict.THROTTLED, retry_after=1.0)  # e.g. a server in a brief storm
        times = await admit(limiter, 1)
        return limiter.rpm, times

    rpm, times = run_virtual(go())

    assert rpm is None  # no guess of a rate from one request
    assert times == [approx(1.0)]

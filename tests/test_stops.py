"""The stop every transport holds (transports/stops.py): one logic for the online pool, the Batch API
and the Ray driver."""

from __future__ import annotations

from batcher.errors import BudgetReached, RateLimited, RunAborted
from batcher.outcome import Status
from batcher.outputs.stats import RunStats
from batcher.transports.stops import Patience, RunState, Stop


def test_the_first_error_is_what_the_run_ends_with():
    stop = Stop()

    stop.fail(BudgetReached("the budget is spent"))
    stop.fail(RunAborted("a consequence of stopping"))

    assert stop.state is RunState.STOPPING and stop.stopped.is_set()
    outcome = stop.outcome(RunStats(total=3))
    assert outcome.status is Status.BUDGET_REACHED and str(outcome.error) == "the budget is spent"


def test_a_second_interrupt_forces_the_stop_and_each_hook_runs_once():
    calls = []
    stop = Stop(on_stop=lambda: calls.append("stop"), on_force=lambda: calls.append("force"))

    stop.interrupt()
    assert stop.state is RunState.STOPPING and not stop.forced.is_set()
    stop.interrupt()
    stop.interrupt()

    assert stop.state is RunState.FORCED and stop.forced.is_set()
    assert calls == ["stop", "force"]
    assert stop.outcome(RunStats(total=1)).status is Status.INTERRUPTED


def test_an_interrupt_while_stopping_for_an_error_forces_and_keeps_the_error():
    stop = Stop()
    stop.fail(RunAborted("the key was refused"))

    stop.interrupt()

    assert stop.state is RunState.FORCED
    assert stop.outcome(RunStats(total=1)).status is Status.ABORTED


def test_a_run_never_stopped_ends_by_its_rows():
    stats = RunStats(total=2)
    stats.failed = 1

    assert Stop().outcome(stats).status is Status.COMPLETED_WITH_ERRORS
    assert Stop().outcome(RunStats(total=2)).status is Status.COMPLETED


def test_patience_runs_out_only_after_its_seconds_without_a_success():
    now = [100.0]
    patience = Patience(30, clock=lambda: now[0])
    throttled = RateLimited("slow down", type="rate_limit_error", status=429)

    now[0] = 129.0
    assert patience.over(throttled) is None and not patience.never_succeeded_for(30)
    now[0] = 131.0
    assert patience.never_succeeded_for(30)
    assert "for 31 s nothing succeeded" in str(patience.over(throttled))

    patience.succeeded()
    now[0] = 150.0
    assert patience.over(throttled) is None and not patience.never_succeeded_for(1)

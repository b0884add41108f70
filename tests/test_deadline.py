"""`--deadline WHEN` in Batch API mode: the deadline as given, as kept, and the moment to go online."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batcher.errors import ConfigError
from batcher.job import Job, SimulatorConfig, build_job
from batcher.job.deadline import parse_deadline
from batcher.transports.batchapi.deadline import MARGIN_SECONDS, MARGIN_SHARE, RunDeadline, estimate


def test_a_duration_counts_from_the_runs_first_start():
    for text, seconds in (("90s", 90), ("45m", 2700), ("8h", 28800), ("1h30m", 5400), ("2d", 172800)):
        deadline = parse_deadline(text)
        assert deadline.seconds == seconds and deadline.moment(1000.0) == 1000.0 + seconds


def test_an_iso_time_with_a_zone_is_that_moment_wherever_the_run_started():
    deadline = parse_deadline("2026-12-07T07:00+01:00")
    assert deadline.moment(0.0) == datetime(2026, 12, 7, 6, 0, tzinfo=UTC).timestamp()
    assert parse_deadline("2026-12-07T06:00:00Z").moment(5.0) == deadline.moment(0.0)


@pytest.mark.parametrize(
    "text, says",
    [
        ("2026-12-07T07:00", "has no time zone"),
        ("7am", "neither a duration"),
        ("0s", "neither a duration"),
        ("-5m", "neither a duration"),
        ("", "neither a duration"),
    ],
)
def test_a_deadline_that_is_not_one_is_refused_saying_what_one_looks_like(text, says):
    with pytest.raises(ConfigError, match=says):
        parse_deadline(text)


def job(**settings) -> Job:
    fields = {"input": "in.jsonl", "output": "out", "model": "m", "prompt": "{text}", "mode": "batch-api"}
    return build_job({**fields, **settings})


def test_a_job_with_a_deadline_is_checked_when_made():
    with pytest.raises(ConfigError, match="is for batch-api mode"):
        job(mode="online", deadline="8h")
    with pytest.raises(ConfigError, match="leave out no_wait"):
        job(deadline="8h", no_wait=True)
    with pytest.raises(ConfigError, match="no time zone"):
        job(deadline="2026-12-07T07:00")
    assert job(deadline="8h").deadline == "8h"


def test_the_run_keeps_its_deadline_and_a_duration_given_again_counts_from_the_first_start(tmp_path):
    first = RunDeadline.open(tmp_path, parse_deadline("1h"), now=1000.0)
    assert (first.at, first.first_start) == (4600.0, 1000.0)

    assert RunDeadline.open(tmp_path, None, now=2000.0) == first  # resumed without it: kept
    again = RunDeadline.open(tmp_path, parse_deadline("2h"), now=3000.0)  # given anew
    assert (again.at, again.first_start) == (1000.0 + 7200, 1000.0)
    assert RunDeadline.read(tmp_path) == again
    assert RunDeadline.open(tmp_path / "other", None) is None


def test_going_online_is_kept_before_anything_is_cancelled(tmp_path):
    deadline = RunDeadline.open(tmp_path, parse_deadline("10m"), now=0.0)
    deadline.went_online(tmp_path, now=400.0)

    assert RunDeadline.read(tmp_path).online_since == 400.0
    assert RunDeadline.open(tmp_path, parse_deadline("10m"), now=500.0).online_since == 400.0


def test_the_moment_to_go_online_leaves_the_online_time_and_a_margin_before_the_deadline(tmp_path):
    deadline = RunDeadline.open(tmp_path, parse_deadline("70s"), now=0.0)

    by_rpm = estimate(job(rpm=1200), deadline, requests=600, tokens=60_000)  # 20 a second: 30 s
    assert by_rpm.online_seconds == 30 and by_rpm.margin == MARGIN_SECONDS + MARGIN_SHARE * 30
    assert by_rpm.go_online_at == 70 - 30 - by_rpm.margin and not by_rpm.rate_assumed

    by_tpm = estimate(job(rpm=1200, tpm=60_000), deadline, requests=600, tokens=60_000)  # 1,000 a second
    assert by_tpm.online_seconds == 60  # the tokens take longer than the requests

    assumed = estimate(job(concurrency=8), deadline, requests=40, tokens=0)  # no limit known
    assert assumed.rate_assumed and assumed.online_seconds == 40 / (8 / 2.0)

    assert estimate(job(rpm=1200), deadline, requests=0, tokens=0).go_online_at == 70  # nothing left


def test_the_simulator_setting_for_cancelling_batches_is_checked():
    with pytest.raises(ConfigError, match="batch_cancelling_seconds must not be negative"):
        SimulatorConfig(batch_cancelling_seconds=-1)

"""`--deadline WHEN` in Batch API mode: the deadline as given, as kept, and the moment to go online."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime

import pytest

from batcher.errors import ConfigError
from batcher.job import Job, SimulatorConfig, build_job
from batcher.job.deadline import parse_deadline
from batcher.transports.batchapi.deadline import MARGIN_SECONDS, MARGIN_SHARE, RunDeadline, estimate
from tests.helpers import (
    prompt_for,
    read_jsonl,
    review_rows,
    run_args,
    signal_when,
    start_subprocess_run,
    write_jsonl,
)

BATCH = ("--mode", "batch-api", "--poll-interval", "0.1")


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


# -- runs with a deadline, on the simulator ----------------------------------------------------


def run_rows(n: int, tmp_path):
    rows = review_rows(n)
    return rows, write_jsonl(tmp_path / "in.jsonl", rows)


def by_way(run_dir) -> tuple[list[dict], list[dict]]:
    results = read_jsonl(run_dir / "results.jsonl")
    return [r for r in results if r.get("batch_id")], [r for r in results if not r.get("batch_id")]


@pytest.mark.slow  # about 20 s: the batch waits, then the rows go online in time
def test_rows_a_slow_batch_has_not_answered_go_online_in_time_each_row_once(
    cli, simulator_factory, tmp_path, run_dir
):
    # The batch would need 30 s (4 lines a second); online, 20 a second; 25 s to do it in.
    simulator = simulator_factory(
        rpm=1200, batch_requests_per_second=4, batch_validating_seconds=1, batch_cancelling_seconds=1
    )
    rows, path = run_rows(120, tmp_path)
    started = time.monotonic()

    flags = (*BATCH, "--rpm", "1200", "--deadline", "25s")
    result = cli(*run_args(path, run_dir, simulator.base_url, *flags, model="gpt-4o-mini"))

    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert took < 25, took
    assert "deadline 25s: met; " in result.output and " paid twice" in result.output, result.output
    batch, online = by_way(run_dir)
    assert sorted(r["id"] for r in batch + online) == sorted(r["id"] for r in rows)  # each once
    assert len(batch) >= 0.15 * 120 and online  # some at the batch price, the rest online
    assert all(simulator.completions_for(prompt_for(row)) == 1 for row in rows)  # none paid twice
    assert simulator.requests == len(online)  # online requests: only the rows the batch did not answer
    kept = RunDeadline.read(run_dir / ".batcher")
    assert kept.online_since is not None and kept.estimate["go_online_at"] <= kept.at
    told = json.loads((run_dir / "summary.json").read_text())["deadline"]
    assert told["met"] is True and told["went_online_at"] is not None
    assert (told["rows_batch"], told["rows_online"], told["rows_paid_twice"]) == (len(batch), len(online), 0)
    batch_cost = sum(r["cost_usd"] for r in batch)
    assert told["cost_batch_usd"] == pytest.approx(batch_cost, abs=1e-6)
    assert told["saving_usd"] == pytest.approx(batch_cost, rel=0.01)  # half price: saved as much again
    status = cli("status", run_dir)
    assert "deadline:  25s" in status.output and "online:    since" in status.output, status.output
    assert f"{len(batch)} rows by batch" in status.output and "0 paid twice" in status.output
    assert cli("report", run_dir).exit_code == 0
    page = (run_dir / "report.html").read_text()
    assert 'data-deadline-met="True"' in page and f"<td>{len(batch):,} (" in page


def test_a_deadline_the_batch_meets_sends_nothing_online(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(rpm=1200)
    rows, path = run_rows(30, tmp_path)

    result = cli(*run_args(path, run_dir, simulator.base_url, *BATCH, "--rpm", "1200", "--deadline", "10m"))

    assert result.exit_code == 0, result.output
    batch, online = by_way(run_dir)
    assert len(batch) == 30 and online == [] and simulator.requests == 0
    kept = RunDeadline.read(run_dir / ".batcher")
    assert kept.online_since is None and kept.text == "10m"
    told = json.loads((run_dir / "summary.json").read_text())["deadline"]
    assert told["met"] is True and (told["rows_batch"], told["rows_online"]) == (30, 0)
    assert told["went_online_at"] is None and told["cost_online_usd"] == 0


def test_a_resumed_run_keeps_its_deadline_and_dry_run_shows_it_with_the_estimate(
    cli, simulator, tmp_path, run_dir
):
    rows, path = run_rows(30, tmp_path)
    args = run_args(path, run_dir, simulator.base_url, *BATCH, "--rpm", "600")

    assert cli(*args, "--deadline", "2h").exit_code == 0
    dry = cli(*args, "--deadline", "3h", "--dry-run")  # shown, not kept
    again = cli(*args)  # resumed without it: kept

    assert "deadline: 3h (" in dry.output and "goes online" in dry.output, dry.output
    assert again.exit_code == 0 and RunDeadline.read(run_dir / ".batcher").text == "2h"
    impossible = cli(
        *run_args(path, tmp_path / "other", simulator.base_url, *BATCH, "--deadline", "1s", "--dry-run")
    )
    assert "cannot be met online alone" in impossible.output, impossible.output


def _states(run_dir) -> set[str]:
    latest = {}
    path = run_dir / ".batcher" / "parts.jsonl"
    for line in path.read_text().splitlines() if path.exists() else ():
        part = json.loads(line)
        latest[part["number"]] = part["state"]
    return set(latest.values())


def _gone_online(run_dir) -> bool:
    kept = RunDeadline.read(run_dir / ".batcher")
    return kept is not None and kept.online_since is not None


def _online_rows(run_dir) -> int:
    results = run_dir / "results.jsonl"
    lines = results.read_text().splitlines() if results.exists() else []
    return sum(1 for line in lines if not json.loads(line).get("batch_id"))


@pytest.mark.slow  # about 25 s: one run stopped in each phase, then finished by the same command
def test_ctrl_c_and_kill_9_in_each_phase_then_the_same_command_keeps_the_deadline_each_row_once(
    simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(
        rpm=1200, batch_requests_per_second=3, batch_validating_seconds=1, batch_cancelling_seconds=3
    )
    rows, path = run_rows(120, tmp_path)
    flags = (*BATCH, "--rpm", "1200", "--deadline", "30s")  # the batch would need 40 s
    phases = [
        ("waiting (Ctrl-C)", lambda: "created" in _states(run_dir), signal.SIGINT),
        ("cancelling", lambda: _gone_online(run_dir), signal.SIGKILL),
        ("online", lambda: _online_rows(run_dir) >= 5, signal.SIGKILL),
    ]
    for _phase, reached, sig in phases:
        signal_when(start_subprocess_run(path, run_dir, simulator.base_url, *flags), reached, sig)
    final = start_subprocess_run(path, run_dir, simulator.base_url, *flags)
    _, stderr = final.communicate(timeout=60)

    assert final.returncode == 0, stderr
    results = read_jsonl(run_dir / "results.jsonl")
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)  # nothing lost or twice
    paid = [simulator.completions_for(prompt_for(row)) for row in rows]
    # Paid twice: at most the online requests on the wire when the kill came (--concurrency 16),
    # as in any online run; none from the batch (it was collected before the rows went online).
    assert min(paid) == 1 and max(paid) <= 2 and paid.count(2) <= 16, paid
    kept = RunDeadline.read(run_dir / ".batcher")
    told = json.loads((run_dir / "summary.json").read_text())["deadline"]
    assert told["met"] is True and told["deadline"] == "30s"  # the first start's 30 s, kept throughout
    assert kept.at - kept.first_start == 30 and told["rows_batch"] > 0 and told["rows_online"] > 0
    assert _states(run_dir) == {"collected"}


def test_rows_of_batches_still_cancelling_go_online_last_from_the_end_of_their_files():
    from batcher.inputs.sources import InputRow
    from batcher.transports.deadline import last_the_rows_of

    rows = [InputRow(f"r{n}", n, {}) for n in range(1, 8)]
    running = ["r2", "r3", "r5", "r6"]  # a batch still cancelling, answering r2 first

    sent = list(last_the_rows_of(iter([*rows[:3], None, *rows[3:]]), running))

    assert [row.row_id if row else None for row in sent] == ["r1", None, "r4", "r7", "r6", "r5", "r3", "r2"]
    assert [row.row_id for row in last_the_rows_of(iter(rows), [])] == [f"r{n}" for n in range(1, 8)]


def test_rows_the_provider_will_not_queue_go_online_early_while_the_other_batch_runs_on(
    cli, simulator_factory, tmp_path, run_dir
):
    # Room at the provider for one part's tokens at a time (each part about 1,200: 30 rows of a
    # prompt and 20 max_tokens); the first part's batch takes about 3 s.
    simulator = simulator_factory(rpm=1200, batch_token_limit=1500, batch_requests_per_second=10)
    rows, path = run_rows(60, tmp_path)
    flags = (*BATCH, "--batch-size", "30", "--max-tokens", "20", "--rpm", "1200", "--deadline", "10m")

    result = cli(*run_args(path, run_dir, simulator.base_url, *flags))

    assert result.exit_code == 0, result.output
    batch, online = by_way(run_dir)
    assert sorted(r["id"] for r in batch + online) == sorted(r["id"] for r in rows)  # each once
    assert {r["id"] for r in batch} == {r["id"] for r in rows[:30]}  # the part that was queued
    assert {r["id"] for r in online} == {r["id"] for r in rows[30:]}  # the one refused: online, early
    # Online, 30 answers, each row's once (a 429 more, when the machine is loaded, is paid for by nobody).
    answered = simulator.server.statuses["200"]
    assert answered == 30 and all(simulator.completions_for(prompt_for(r)) == 1 for r in rows)
    assert RunDeadline.read(run_dir / ".batcher").online_since is None  # no batch was cancelled
    assert json.loads((run_dir / "summary.json").read_text())["deadline"]["met"] is True


@pytest.mark.parametrize("headers, rpm", [("all", 600), ("none", 16 / 2.0 * 60)])
def test_with_no_rpm_given_the_estimate_takes_the_limit_the_server_announces(
    headers, rpm, cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(rpm=600, rate_limit_headers=headers)
    rows, path = run_rows(30, tmp_path)

    result = cli(*run_args(path, run_dir, simulator.base_url, *BATCH, "--deadline", "10m"))

    assert result.exit_code == 0, result.output
    estimate = RunDeadline.read(run_dir / ".batcher").estimate
    # Announced: its RPM; announced nowhere: --concurrency (16) at an assumed 2 s a request.
    assert (estimate["online_rpm"], estimate["rate_assumed"]) == (rpm, headers == "none")
    assert simulator.requests == 1  # one request of one token asked the server its limits
    assert len(by_way(run_dir)[0]) == 30  # and every row went by batch

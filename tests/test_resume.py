"""Stopping and resuming: kill -9, Ctrl-C, SIGTERM, torn lines, changed jobs, failed rows."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess

import pytest

from tests.helpers import (
    PROMPT,
    batcher_command,
    prompt_for,
    read_jsonl,
    review_rows,
    run_args,
    run_subprocess,
    start_subprocess_run,
    subprocess_env,
    wait_for_results,
    write_jsonl,
)


def start_run(path, run_dir, base_url, *extra):
    return start_subprocess_run(path, run_dir, base_url, "--concurrency", "8", *extra)


def assert_complete(run_dir, rows):
    results = read_jsonl(run_dir / "results.jsonl")
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids)), "a row was written twice"
    assert set(ids) == {r["id"] for r in rows}
    return results


def test_resume_after_sigkill_sends_no_finished_row_again(simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(latency_ms=40)
    rows = review_rows(200)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    process = start_run(path, run_dir, simulator.base_url)
    wait_for_results(run_dir, 60, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    done_at_kill = {r["id"] for r in read_jsonl_whole_lines(run_dir / "results.jsonl")}

    resumed = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--concurrency", "8"))

    assert resumed.returncode == 0, resumed.stderr
    assert_complete(run_dir, rows)
    by_id = {r["id"]: r for r in rows}
    assert all(simulator.completions_for(prompt_for(by_id[i])) == 1 for i in done_at_kill)
    paid_twice = sum(simulator.completions_for(prompt_for(r)) - 1 for r in rows)
    assert paid_twice <= 8  # at most the requests in flight at the kill


def read_jsonl_whole_lines(path):
    lines = path.read_bytes().split(b"\n")[:-1]  # a torn last line is not done
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_lets_in_flight_requests_finish_and_exits_130(simulator_factory, tmp_path, run_dir, sig):
    simulator = simulator_factory(latency_ms=150)
    rows = review_rows(100)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    process = start_run(path, run_dir, simulator.base_url)
    wait_for_results(run_dir, 20, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert "resume with: batcher run" in stderr
    results = read_jsonl(run_dir / "results.jsonl")
    assert 20 <= len(results) < 100
    # Every completion the server gave out is on disk: nothing in flight was lost.
    assert sum(simulator.server.completions.values()) == len(results)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["rows_ok"] == len(results)

    fast = simulator_factory()  # (the rest need not wait on the slow server)
    resumed = run_subprocess(
        "run", path, "-o", run_dir, "--base-url", fast.base_url, "--model", "m", "--prompt", PROMPT
    )

    assert resumed.returncode == 0, resumed.stderr
    assert_complete(run_dir, rows)
    assert all(  # each row answered once, by one server or the other: nothing done was sent again
        simulator.completions_for(prompt_for(r)) + fast.completions_for(prompt_for(r)) == 1 for r in rows
    )


def test_torn_last_line_is_dropped_and_its_row_sent_again(cli, simulator, tmp_path, run_dir):
    rows = review_rows(20)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ("run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", "--prompt", PROMPT)
    assert cli(*args).exit_code == 0
    results = run_dir / "results.jsonl"
    data = results.read_bytes()
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn_id = json.loads(data[last_line_start:])["id"]
    results.write_bytes(data[: last_line_start + 17])  # a crash in the middle of the last line

    again = cli(*args)

    assert again.exit_code == 0, again.output
    assert_complete(run_dir, rows)
    assert simulator.completions_for(prompt_for(next(r for r in rows if r["id"] == torn_id))) == 2
    assert simulator.requests == 21


def test_garbled_line_in_the_middle_is_dropped_without_losing_its_neighbours(
    cli, simulator, tmp_path, run_dir
):
    rows = review_rows(10)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ("run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", "--prompt", PROMPT)
    assert cli(*args).exit_code == 0
    results = run_dir / "results.jsonl"
    lines = results.read_bytes().split(b"\n")
    lines[4] = b"\x00\x00\x00\x00"  # what a power cut can leave behind
    results.write_bytes(b"\n".join(lines))

    again = cli(*args)

    assert again.exit_code == 0, again.output
    assert_complete(run_dir, rows)
    assert simulator.requests == 11


def test_a_different_job_is_refused_unless_forced(cli, simulator, reviews, run_dir):
    base = ("run", reviews, "-o", run_dir, "--base-url", simulator.base_url, "--prompt", PROMPT)
    assert cli(*base, "--model", "m").exit_code == 0

    refused = cli(*base, "--model", "other-model")

    assert refused.exit_code == 2
    assert "different job" in refused.output and "model: was 'm', now 'other-model'" in refused.output
    assert "--force" in refused.output

    forced = cli(*base, "--model", "other-model", "--force")

    assert forced.exit_code == 0, forced.output
    assert simulator.requests == 30  # rows already done are kept, not sent again


def test_a_changed_input_file_is_refused(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(5))
    args = ("run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", "--prompt", PROMPT)
    assert cli(*args).exit_code == 0
    write_jsonl(path, review_rows(6))

    refused = cli(*args)

    assert refused.exit_code == 2
    assert "input_fingerprint" in refused.output


def test_failed_rows_are_retried_on_resume_and_leave_errors_when_they_succeed(
    cli, simulator_factory, tmp_path, run_dir
):
    rows = review_rows(8)
    rows[3]["text"] = "FLAKY today"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    first = simulator_factory(reject_marker="FLAKY")
    args = ("run", path, "-o", run_dir, "--model", "m", "--prompt", PROMPT)
    assert cli(*args, "--base-url", first.base_url).exit_code == 1
    assert [e["id"] for e in read_jsonl(run_dir / "errors.jsonl")] == ["r3"]

    healthy = simulator_factory()
    skipped = cli(*args, "--base-url", healthy.base_url, "--no-retry-failed")
    assert skipped.exit_code == 1
    assert healthy.requests == 0

    retried = cli(*args, "--base-url", healthy.base_url, "--retry-failed")

    assert retried.exit_code == 0, retried.output
    assert healthy.requests == 1
    assert read_jsonl(run_dir / "errors.jsonl") == []
    assert_complete(run_dir, rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["rows_ok"], summary["rows_failed"], summary["rows_skipped"]) == (8, 0, 7)


def test_status_reports_progress_of_a_stopped_run(cli, simulator_factory, tmp_path, run_dir):
    rows = review_rows(12)
    rows[0]["text"] = "BAD row"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    simulator = simulator_factory(reject_marker="BAD")
    cli("run", path, "-o", run_dir, "--base-url", simulator.base_url, "--model", "m", "--prompt", PROMPT)
    results = run_dir / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:7]))  # as if stopped after 7 results

    shown = cli("status", run_dir)
    as_json = json.loads(cli("status", run_dir, "--json").output)

    assert shown.exit_code == 0
    assert "12 total, 7 done, 1 failed, 4 remaining" in shown.output
    assert (as_json["rows_ok"], as_json["rows_failed"], as_json["rows_remaining"]) == (7, 1, 4)
    assert as_json["total_tokens"] == sum(json.loads(line)["usage"]["total_tokens"] for line in lines[:7])
    assert as_json["running"] is False


def test_status_of_a_directory_that_is_no_run_says_so(cli, tmp_path):
    result = cli("status", tmp_path)

    assert result.exit_code == 2
    assert "not a batcher run directory" in result.output


def test_a_directory_held_by_a_live_run_is_refused(cli, simulator, reviews, run_dir):
    args = run_args(reviews, run_dir, simulator.base_url)
    assert cli(*args).exit_code == 0
    fd = os.open(run_dir / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a live run holds it
    try:
        result = cli(*args)
        status = json.loads(cli("status", run_dir, "--json").output)
    finally:
        os.close(fd)

    assert result.exit_code == 2
    assert "in use by another batcher run" in result.output
    assert status["running"] is True


def test_a_full_disk_stops_the_run_and_reports_done_only_what_is_on_disk(simulator, tmp_path, run_dir):
    # Regression: a short write at the size limit counted its half-written row as done.
    import resource

    rows = [{"id": i, "text": "x" * 60} for i in range(3000)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    args = batcher_command(*run_args(path, run_dir, simulator.base_url, "--quiet"))

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    full = subprocess.run(
        args, env=subprocess_env(), capture_output=True, text=True, timeout=60, preexec_fn=limit_file_size
    )

    assert full.returncode == 3, full.stderr
    assert "cannot write to" in full.stderr and "File too large" in full.stderr
    assert "Traceback" not in full.stderr
    whole = read_jsonl_whole_lines(run_dir / "results.jsonl")
    assert 0 < len(whole) < 3000
    assert json.loads((run_dir / "summary.json").read_text())["rows_ok"] == len(whole)

    resumed = subprocess.run(args, env=subprocess_env(), capture_output=True, text=True, timeout=60)

    assert resumed.returncode == 0, resumed.stderr
    assert_complete(run_dir, [{"id": str(i)} for i in range(3000)])


def test_a_second_run_into_a_live_runs_directory_is_refused_and_a_killed_ones_lock_is_not_stale(
    simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(latency_ms=100)
    rows = review_rows(400)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    live = start_run(path, run_dir, simulator.base_url)
    wait_for_results(run_dir, 5, live)

    second = run_subprocess(*run_args(path, run_dir, simulator.base_url), timeout=30)
    live.send_signal(signal.SIGKILL)
    live.wait(timeout=10)
    fast = simulator_factory()  # (the rest need not wait on the slow server)
    after_kill = run_subprocess(*run_args(path, run_dir, fast.base_url))

    assert second.returncode == 2
    assert "in use by another batcher run" in second.stderr
    assert after_kill.returncode == 0, after_kill.stderr
    assert_complete(run_dir, rows)


@pytest.fixture
def read_only_mount(tmp_path):
    """A small tmpfs that can be made read-only (needs root, as on the CI machines)."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mount_point], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (not root)")

    def make_read_only():
        subprocess.run(["mount", "-o", "remount,ro", mount_point], check=True, capture_output=True)

    yield mount_point, make_read_only
    subprocess.run(["umount", "-l", mount_point], capture_output=True)


def test_a_read_only_run_directory_is_refused_before_sending_and_keeps_its_results(
    cli, simulator, tmp_path, read_only_mount
):
    mount_point, make_read_only = read_only_mount
    run_dir = mount_point / "run"
    rows = review_rows(10)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    assert cli(*run_args(path, run_dir, simulator.base_url)).exit_code == 0
    results_before = (run_dir / "results.jsonl").read_bytes()
    make_read_only()

    resumed = cli(*run_args(path, run_dir, simulator.base_url, "--retry-failed"))
    fresh = cli(*run_args(path, mount_point / "fresh", simulator.base_url))

    assert resumed.exit_code == 2 and fresh.exit_code == 2
    assert "Read-only file system" in resumed.output and "Read-only file system" in fresh.output
    assert "cannot be used as the output directory" in resumed.output
    assert (run_dir / "results.jsonl").read_bytes() == results_before
    assert simulator.requests == 10


@pytest.mark.parametrize("seed", range(5))
def test_results_cut_at_a_random_byte_keep_every_earlier_row(cli, simulator, tmp_path, seed):
    import random

    rows = review_rows(40)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    run_dir = tmp_path / f"run{seed}"
    args = run_args(path, run_dir, simulator.base_url)
    assert cli(*args).exit_code == 0
    results = run_dir / "results.jsonl"
    data = results.read_bytes()
    cut = random.Random(seed).randrange(1, len(data))
    results.write_bytes(data[:cut])
    whole_before_cut = [json.loads(line) for line in data[:cut].split(b"\n")[:-1]]

    again = cli(*args)

    assert again.exit_code == 0, again.output
    after = read_jsonl(results)
    assert after[: len(whole_before_cut)] == whole_before_cut  # earlier rows untouched, in place
    assert_complete(run_dir, rows)
    assert simulator.requests == 40 + (40 - len(whole_before_cut))


def test_an_unchanged_input_is_not_scanned_again_on_resume(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(30))
    args = run_args(path, run_dir, simulator.base_url, "--keep-columns", "stars", "--verbose")
    first = cli(*args)
    results = run_dir / "results.jsonl"
    results.write_text("".join(results.read_text().splitlines(keepends=True)[:10]))

    again = cli(*args)

    assert "not scanned again" not in first.output
    assert "not scanned again" in again.output
    assert again.exit_code == 0, again.output
    assert_complete(run_dir, review_rows(30))
    assert read_jsonl(results)[-1]["stars"] in range(1, 6)


def test_resume_passes_over_done_rows_by_line_number_blank_lines_and_all(cli, simulator, tmp_path, run_dir):
    lines = [
        '{"id": "a1", "text": "first"}',
        "",
        '{"text": "id comes later", "id": "a2"}',
        "   ",
        '{ "id" : 3 , "text": "spaced, an integer id"}',
        '{"id": "a\\"4", "text": "an escaped quote in the id"}',
        '{"id": "a5", "text": "not done yet"}',
        "",
        '{"id": "a6", "text": "not done yet either"}',
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines))  # and no newline at the end
    args = run_args(path, run_dir, simulator.base_url)
    assert cli(*args).exit_code == 0
    results = run_dir / "results.jsonl"
    first = read_jsonl(results)
    results.write_text("".join(json.dumps(r) + "\n" for r in first if r["id"] not in ("a5", "a6")))

    again = cli(*args)

    assert again.exit_code == 0, again.output
    assert {r["id"]: r["row_number"] for r in read_jsonl(results)} == {
        "a1": 1, "a2": 3, "3": 5, 'a"4': 6, "a5": 7, "a6": 9
    }  # fmt: skip
    assert simulator.requests == 6 + 2


def test_a_forced_resume_onto_changed_input_goes_by_id_from_then_on(cli, simulator, tmp_path, run_dir):
    rows = review_rows(12)
    path = write_jsonl(tmp_path / "in.jsonl", rows[:6])
    args = run_args(path, run_dir, simulator.base_url)
    assert cli(*args).exit_code == 0  # r0..r5 done, on lines 1..6
    # The same rows at other lines, after six new ones: line numbers no longer say what is done.
    write_jsonl(path, rows[6:] + rows[:6])

    forced = cli(*args, "--force")
    results = read_jsonl(run_dir / "results.jsonl")
    lost = {r["id"] for r in results[9:]}  # as if stopped after three of the six new rows
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results[:9]))
    again = cli(*args)

    assert forced.exit_code == 0 and again.exit_code == 0, forced.output + again.output
    assert_complete(run_dir, rows)
    assert simulator.requests == 6 + 6 + 3
    for row in rows:
        assert simulator.completions_for(prompt_for(row)) == (2 if row["id"] in lost else 1)


def test_a_parquet_resume_passes_over_whole_done_batches_and_sends_the_rest(
    cli, simulator, tmp_path, run_dir
):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    rows = review_rows(4_300)  # read in record batches of 4,096 rows: rows 1-4096, 4097-4300
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1_000)
    args = run_args(path, run_dir, simulator.base_url, "--concurrency", "32")
    assert cli(*args).exit_code == 0
    results = read_jsonl(run_dir / "results.jsonl")
    lost_numbers = {4_097, 4_200, 4_300}  # the first batch stays whole
    lost = {r["id"] for r in results if r["row_number"] in lost_numbers}
    kept = [r for r in results if r["row_number"] not in lost_numbers]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))

    again = cli(*args)

    assert again.exit_code == 0, again.output
    assert_complete(run_dir, rows)
    assert simulator.requests == 4_300 + 3
    assert {r["id"] for r in rows if simulator.completions_for(prompt_for(r)) == 2} == lost

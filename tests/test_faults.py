"""Provider faults over real HTTP: each handled, none losing a row or leaking the key."""

from __future__ import annotations

import json

from tests.helpers import read_jsonl, review_rows, run_args, write_jsonl


def run(cli, simulator, path, run_dir, *extra, env=None):
    return cli(*run_args(path, run_dir, simulator.base_url, *extra), env=env)


def assert_all_done(run_dir, n):
    results = read_jsonl(run_dir / "results.jsonl")
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids)) == n
    assert read_jsonl(run_dir / "errors.jsonl") == []


def test_a_connection_that_hangs_for_ever_times_out_and_is_retried(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(hang_rate=0.2, seed=5)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(10))

    result = run(cli, simulator, path, run_dir, "--timeout", "0.25", "--max-retries", "10")

    assert result.exit_code == 0, result.output
    assert_all_done(run_dir, 10)
    assert simulator.server.statuses["dropped"] > 0  # the hung requests, abandoned by the client


def test_a_huge_response_body_is_cut_off_and_the_attempt_retried(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(huge_rate=0.2, huge_bytes=40 * 1024 * 1024, seed=2)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(20))

    result = run(cli, simulator, path, run_dir, "--max-retries", "10", "--verbose")

    assert result.exit_code == 0, result.output
    assert_all_done(run_dir, 20)
    assert "byte cap" in result.output  # logged as a retried attempt


def test_html_error_pages_from_a_proxy_are_retried(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(html_rate=0.3, seed=4)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(15))

    result = run(cli, simulator, path, run_dir, "--max-retries", "10")

    assert result.exit_code == 0, result.output
    assert_all_done(run_dir, 15)
    assert simulator.server.statuses["502"] > 0


def test_503_with_retry_after_is_waited_out_and_retried(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(error_rate=0.2, error_status=503, seed=8)  # each 503 costs 1 s
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(10))

    result = run(cli, simulator, path, run_dir, "--max-retries", "10")

    assert result.exit_code == 0, result.output
    assert_all_done(run_dir, 10)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["session"]["retries"] == simulator.server.statuses["503"] > 0


def test_a_429_storm_is_ridden_out(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(storm_every=1.5, storm_seconds=0.5, latency_ms=20)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(60))

    result = run(cli, simulator, path, run_dir)

    assert result.exit_code == 0, result.output
    assert_all_done(run_dir, 60)
    assert simulator.server.statuses["429"] > 0


def test_a_key_revoked_mid_run_stops_it_resumably(cli, simulator_factory, tmp_path, run_dir):
    revoking = simulator_factory(fail_auth_after=25, latency_ms=10)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(100))

    stopped = run(cli, revoking, path, run_dir, "--concurrency", "4")

    assert stopped.exit_code == 3
    assert "refused the key" in stopped.output
    done = read_jsonl(run_dir / "results.jsonl")
    assert 15 <= len(done) <= 25
    assert read_jsonl(run_dir / "errors.jsonl") == []

    healthy = simulator_factory()
    resumed = run(cli, healthy, path, run_dir)

    assert resumed.exit_code == 0, resumed.output
    assert_all_done(run_dir, 100)
    assert healthy.requests == 100 - len(done)


def test_redirects_are_not_followed_so_the_key_never_reaches_another_host(
    cli, simulator_factory, tmp_path, run_dir
):
    elsewhere = simulator_factory()
    redirecting = simulator_factory(redirect_to=elsewhere.base_url + "/chat/completions")
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))

    result = run(cli, redirecting, path, run_dir)

    assert result.exit_code == 3  # a redirect before anything succeeded: the base URL is wrong
    assert elsewhere.requests == 0 and redirecting.requests == 1
    assert "set the base URL to where it points" in result.output
    assert read_jsonl(run_dir / "errors.jsonl") == []


def test_a_misspelt_model_stops_the_run_early_without_marking_rows_failed(
    cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(models=("gpt-4o-mini",))
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(300))

    stopped = run(cli, simulator, path, run_dir, "--model", "gpt-4o-mnii")

    assert stopped.exit_code == 3
    assert "does not serve this model" in stopped.output and "gpt-4o-mnii" in stopped.output
    assert simulator.requests == 1  # the first request goes alone, and its answer says it all
    assert read_jsonl(run_dir / "errors.jsonl") == []

    fixed = run(cli, simulator, path, run_dir, "--model", "gpt-4o-mini", "--force")

    assert fixed.exit_code == 0, fixed.output
    assert_all_done(run_dir, 300)


def test_a_wrong_base_url_answering_404_stops_the_run_early(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(200))
    wrong = simulator.base_url.removesuffix("/v1") + "/api"

    result = cli(*run_args(path, run_dir, wrong))

    assert result.exit_code == 3
    assert "HTTP 404" in result.output
    assert read_jsonl(run_dir / "errors.jsonl") == []


def test_a_few_genuinely_bad_rows_still_let_the_run_finish(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(reject_marker="BAD")
    rows = review_rows(200)
    for i in (3, 50, 51, 52, 120, 199):
        rows[i]["text"] = f"BAD row {i}"
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = run(cli, simulator, path, run_dir)

    assert result.exit_code == 1, result.output
    assert sorted(e["id"] for e in read_jsonl(run_dir / "errors.jsonl")) == sorted(
        f"r{i}" for i in (3, 50, 51, 52, 120, 199)
    )
    assert len(read_jsonl(run_dir / "results.jsonl")) == 194


def test_identical_failures_below_the_limit_are_recorded_as_row_failures(
    cli, simulator_factory, tmp_path, run_dir
):
    simulator = simulator_factory(reject_marker="BAD")
    rows = [{"id": i, "text": "BAD"} for i in range(5)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = run(cli, simulator, path, run_dir, "--stop-after-identical-failures", "6")

    assert result.exit_code == 1
    assert len(read_jsonl(run_dir / "errors.jsonl")) == 5


def test_the_key_is_not_sent_over_plain_http_to_another_host(cli, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(2))

    result = cli(*run_args(path, run_dir, "http://gateway.internal.example:8000/v1"))

    assert result.exit_code == 2
    assert "plain http to another machine" in result.output and "--allow-insecure-http" in result.output
    assert not run_dir.exists()


def test_rows_that_fail_again_as_before_do_not_look_systematic_on_resume(
    cli, simulator_factory, tmp_path, run_dir
):
    # Regression (found by the crash campaign): a resume sends the rows that failed
    # before first, and a dozen permanent 400s in a row stopped it as "systematic".
    simulator = simulator_factory(reject_marker="BAD")
    rows = review_rows(120)
    for i in range(0, 120, 10):
        rows[i]["text"] = "BAD row"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    assert run(cli, simulator, path, run_dir).exit_code == 1

    again = run(cli, simulator, path, run_dir, "--retry-failed")

    assert again.exit_code == 1, again.output
    assert len(read_jsonl(run_dir / "errors.jsonl")) == 12

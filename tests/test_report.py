"""`batcher report`: one self-contained HTML page of a run, checked as HTML and as a person sees it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

import batcher.outputs.timeline
from tests.helpers import (
    read_jsonl,
    review_rows,
    run_args,
    start_subprocess_run,
    wait_for_results,
    write_jsonl,
)
from tests.pngpixels import pixels

BLUE, AMBER, RED = (0x25, 0x63, 0xEB), (0xD9, 0x77, 0x06), (0xDC, 0x26, 0x26)


class Page(HTMLParser):
    """The figures (data-figure), charts, series and error rows of a report page."""

    def __init__(self, text: str):
        super().__init__()
        self.figures: dict[str, str] = {}
        self.charts: list[str] = []
        self.series: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.external: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-figure" in a:
            self.figures[a["data-figure"]] = a["data-value"]
        if tag == "figure":
            self.charts.append(a["data-chart"])
        if tag == "polyline":
            self.series[a["data-series"]] = len(a["points"].split())
        if tag == "tr" and "data-error-type" in a:
            self.errors[a["data-error-type"]] = 0
        if "data-count" in a and tag == "td":
            self.errors[list(self.errors)[-1]] = int(a["data-count"])
        for key in ("src", "href"):
            if key in a:
                self.external.append(a[key])


@pytest.fixture
def fast_timeline(monkeypatch):
    monkeypatch.setattr(batcher.outputs.timeline, "INTERVAL", 0.25)


@pytest.fixture
def eventful_run(cli, simulator_factory, tmp_path, run_dir, fast_timeline):
    """A run over a limit the server does not announce (429s), with bad rows, over some seconds."""
    simulator = simulator_factory(rpm=1200, latency_ms=30, reject_marker="BAD", rate_limit_headers="none")
    rows = review_rows(40)
    for row in rows[::10]:
        row["text"] = "BAD " + row["text"]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    result = cli(*run_args(path, run_dir, simulator.base_url, "--rpm", "2400", "--concurrency", "8"))
    assert result.exit_code == 1, result.output
    return run_dir


def test_the_report_shows_the_runs_figures_as_summary_json_has_them(cli, eventful_run):
    result = cli("report", eventful_run)

    assert result.exit_code == 0, result.output
    page = Page((eventful_run / "report.html").read_text())
    summary = json.loads((eventful_run / "summary.json").read_text())
    assert page.figures["status"] == "completed_with_errors"
    assert int(page.figures["rows_ok"]) == summary["rows_ok"] == 36
    assert int(page.figures["rows_failed"]) == summary["rows_failed"] == 4
    assert int(page.figures["total_tokens"]) == summary["total_tokens"]
    assert float(page.figures["cost_usd"]) == pytest.approx(summary["cost_usd"], abs=1e-6)
    assert int(page.figures["requests"]) == summary["session"]["requests_sent"]
    assert int(page.figures["rate_limited_429"]) == summary["session"]["rate_limited_429"] > 0
    assert int(page.figures["retries"]) == summary["session"]["retries"]
    assert page.errors == {"invalid_request_error": 4}
    assert page.charts == ["requests", "tokens", "rows", "rate_limited", "latency"]
    assert page.series["requests"] >= 3 and page.series["limit"] >= 3  # several intervals, the limit drawn
    assert page.external == []  # self-contained: nothing to fetch
    html = (eventful_run / "report.html").read_text()
    assert "r0" in html and "rejected" in html  # an example of the errors, with its row


def test_the_report_covers_every_session_of_a_resumed_run(cli, simulator, tmp_path, run_dir, fast_timeline):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(30))
    args = run_args(path, run_dir, simulator.base_url)
    cli(*args)
    results = run_dir / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(results)[:12]))
    cli(*args)

    page = Page(
        cli("report", run_dir, "-o", tmp_path / "r.html").output and (tmp_path / "r.html").read_text()
    )

    assert page.figures["sessions"] == "2"
    assert int(page.figures["requests"]) == 30 + 18 == simulator.requests
    assert int(page.figures["rows_ok"]) == 30


def test_a_failed_and_a_running_directory_get_a_report_too(cli, simulator_factory, tmp_path, fast_timeline):
    refusing = simulator_factory(fail_auth_after=5)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(20))
    assert cli(*run_args(path, tmp_path / "failed", refusing.base_url, "--concurrency", "1")).exit_code == 3

    failed = cli("report", tmp_path / "failed")

    assert failed.exit_code == 0, failed.output
    assert Page((tmp_path / "failed" / "report.html").read_text()).figures["status"] == "aborted"

    slow = simulator_factory(latency_ms=100)
    running = start_subprocess_run(path, tmp_path / "running", slow.base_url, "--concurrency", "2")
    try:
        wait_for_results(tmp_path / "running", 2, running)
        live = cli("report", tmp_path / "running")
        page = Page((tmp_path / "running" / "report.html").read_text())
    finally:
        running.kill()
        running.wait()

    assert live.exit_code == 0, live.output
    assert page.figures["status"] == "running" and 2 <= int(page.figures["rows_ok"]) < 20


def test_a_directory_that_is_no_run_is_refused_clearly(cli, tmp_path):
    result = cli("report", tmp_path)

    assert result.exit_code == 2 and "not a batcher run directory" in result.output


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium, installed here where it is missing and can be."""
    path = shutil.which("chromium")
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=900
        )
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("headless Chromium is missing and cannot be installed here (needs root and apt-get)")
    return path


def render(chromium, page, tmp_path, *mode):
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--hide-scrollbars",
        "--window-size=1100,2400",
    ]
    done = subprocess.run(
        [chromium, *flags, *mode, page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow  # a headless browser, twice (and installed first, where it is missing and can be)
def test_the_page_renders_in_a_browser_with_its_charts_drawn(cli, eventful_run, chromium, tmp_path):
    cli("report", eventful_run)
    page = eventful_run / "report.html"
    shot = tmp_path / "report.png"

    dom = render(chromium, page, tmp_path, "--dump-dom")
    render(chromium, page, tmp_path, f"--screenshot={shot}")

    rendered = Page(dom)
    assert rendered.charts == ["requests", "tokens", "rows", "rate_limited", "latency"]
    assert rendered.figures["rows_ok"] == "36"
    width, height, colours = pixels(shot)
    assert (width, height) == (1100, 2400)
    # What a person sees: blue lines and bars, the amber limit and retry lines, the red 429 line.
    assert colours[BLUE] > 5_000, colours.most_common(8)
    # (The amber retries line lies under the red one where every retry is a 429's: the limit line's amber.)
    assert colours[AMBER] > 300 and colours[RED] > 200, colours.most_common(8)
    assert re.search(r"36 of 40", dom)

"""What a new user meets first: the shipped job files and `batcher simulate`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import batcher_command, read_jsonl, review_rows, run_args, subprocess_env, write_jsonl

JOBS = Path(__file__).resolve().parent.parent / "jobs"


def classified_reviews(run: Path) -> None:
    results = read_jsonl(run / "results.jsonl")
    assert {r["label"] for r in results} == {"positive", "negative", "neutral"}
    assert all(json.loads(r["content"]) == {"label": r["label"]} for r in results)
    assert json.loads((run / "summary.json").read_text())["rows_ok"] == 300


def extracted_facts(run: Path) -> None:
    facts = pq.read_table(run / "results.parquet")
    assert facts.num_rows == 300
    assert str(facts.schema.field("stars_guess").type) == "int64"
    assert set(facts["sentiment"].to_pylist()) == {"positive", "negative", "neutral"}


def spread_over_two_endpoints(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rows_ok"] == 300 and summary["session"]["rows_deduplicated"] > 0
    assert all(e["answered"] > 0 for e in summary["session"]["endpoints"].values())


def summarized_articles(run: Path) -> None:
    table = pq.read_table(run / "results.parquet")
    assert table.num_rows == 120
    assert {"content", "title", "published", "usage"} <= set(table.column_names)


def summarized_overnight(run: Path) -> None:
    table = pq.read_table(run / "results.parquet")
    assert table.num_rows == 120 and table.column("batch_id").null_count == 0
    assert len(set(table.column("batch_id").to_pylist())) == 3  # 50 + 50 + 20
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def summarized_by_deadline(run: Path) -> None:
    table = pq.read_table(run / "results.parquet")
    by_batch = table.num_rows - table.column("batch_id").null_count
    assert table.num_rows == 120 and 0 < by_batch < 120  # some at half price, the rest online in time
    told = json.loads((run / "summary.json").read_text())["deadline"]
    assert told["met"] is True and (told["rows_batch"], told["rows_online"]) == (by_batch, 120 - by_batch)


def summarized_in_a_batch(run: Path) -> None:
    table = pq.read_table(run / "results.parquet")
    assert table.num_rows == 120 and len(set(table.column("batch_id").to_pylist())) == 1


def embedded_articles(run: Path) -> None:
    table = pq.read_table(run / "results.parquet")
    assert (
        table.num_rows == 120
        and str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[256]"
    )
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


# Each job runs as shipped, paced by its own limits: the slow ones take seconds by design.
SHIPPED_JOBS = [
    pytest.param("classify-reviews", classified_reviews, marks=pytest.mark.slow, id="classify-reviews"),
    pytest.param("extract-review-facts", extracted_facts, marks=pytest.mark.slow, id="extract-review-facts"),
    pytest.param("classify-reviews-two-endpoints", spread_over_two_endpoints, id="two-endpoints"),
    pytest.param("summarize-articles", summarized_articles, marks=pytest.mark.slow, id="summarize-articles"),
    pytest.param("summarize-articles-overnight", summarized_overnight, id="summarize-articles-overnight"),
    pytest.param("embed-articles", embedded_articles, id="embed-articles"),
    pytest.param(
        "summarize-articles-by-deadline",
        summarized_by_deadline,
        marks=pytest.mark.slow,
        id="summarize-articles-by-deadline",
    ),
    # any job goes through the Batch API by a flag, and its batch is collected in seconds
    pytest.param(
        "summarize-articles --mode batch-api", summarized_in_a_batch, id="summarize-articles-batch-api"
    ),
]


class ShippedRuns:
    """Every shipped job this session selected: each dry-run first, then all run together (they wait
    on their limits, not the CPU). `runs(job)` waits for one and gives its exit status, stderr and
    run directory; `runs.plan(job)` is what its dry run printed."""

    def __init__(self, jobs: set[str], runs: Path):
        self.runs = runs
        planned = {job: self._start(job, "--dry-run") for job in sorted(jobs)}
        self.plans = {job: process.communicate(timeout=120)[0] for job, process in planned.items()}
        self.started = {job: self._start(job, "--quiet") for job in sorted(jobs)}
        self.finished: dict[str, tuple[int, str]] = {}

    def _start(self, job: str, *flags: str) -> subprocess.Popen:
        name, *extra = job.split()
        return subprocess.Popen(
            batcher_command("run", JOBS / f"{name}.toml", *extra, "-o", self.runs / job, *flags),
            env=subprocess_env(OPENAI_API_KEY=""),  # the embedded simulator needs no key
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(self, job: str) -> tuple[int, str, Path]:
        if job not in self.finished:
            process = self.started[job]
            _, stderr = process.communicate(timeout=120)
            self.finished[job] = process.returncode, stderr
        return *self.finished[job], self.runs / job

    def plan(self, job: str) -> str:
        return self.plans[job]

    def stop(self) -> None:
        for job, process in self.started.items():
            process.kill()
            if job not in self.finished:
                process.communicate()


@pytest.fixture(scope="module")
def shipped_runs(request, tmp_path_factory):
    tests = (
        "test_a_shipped_job_runs_out_of_the_box",
        "test_a_shipped_jobs_dry_run_estimates_the_tokens_it_uses",
    )
    jobs = {
        item.callspec.params["job"]
        for item in request.session.items
        if getattr(item, "originalname", None) in tests
    }
    runs = ShippedRuns(jobs, tmp_path_factory.mktemp("shipped"))
    yield runs
    runs.stop()


@pytest.mark.parametrize("job, expected_output", SHIPPED_JOBS)
def test_a_shipped_job_runs_out_of_the_box(shipped_runs, job, expected_output):
    returncode, stderr, run = shipped_runs(job)

    assert returncode == 0, stderr
    expected_output(run)


@pytest.mark.parametrize("job, expected_output", SHIPPED_JOBS)
def test_a_shipped_jobs_dry_run_estimates_the_tokens_it_uses(shipped_runs, job, expected_output):
    plan = shipped_runs.plan(job)
    returncode, stderr, run = shipped_runs(job)

    assert returncode == 0, stderr
    used = json.loads((run / "summary.json").read_text())["total_tokens"]
    figures = re.search(
        r"tokens:   about ([\d,]+)(?: prompt \+ ([\d,]+) completion expected = ([\d,]+))?", plan
    )
    assert figures, plan
    expected = int((figures[3] or figures[1]).replace(",", ""))  # (embeddings: the inputs alone)
    assert 0.75 * used <= expected <= 1.25 * used, (expected, used)
    assert "estimate: prompts at 4.4 characters a token" in plan
    if at_most := re.search(r"; at most ([\d,]+) \(completions at max_tokens", plan):
        assert int(at_most[1].replace(",", "")) >= used


def test_simulate_serves_a_run_named_by_openai_base_url(tmp_path):
    server = subprocess.Popen(
        batcher_command("simulate", "--port", "0", "--latency-ms", "5"),
        env=subprocess_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stderr.readline()
        base_url = re.search(r"listening on (\S+)", line).group(1)
        path = write_jsonl(tmp_path / "in.jsonl", review_rows(25))
        args = run_args(path, tmp_path / "run", base_url)
        args.remove("--base-url")
        args.remove(base_url)

        result = subprocess.run(
            batcher_command(*args),
            env=subprocess_env(OPENAI_BASE_URL=base_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert base_url.startswith("http://127.0.0.1:")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "run" / "results.jsonl")) == 25

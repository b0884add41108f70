"""Benchmarks of `--executor ray` against one process, each side a process of its own (issue 23).

    python benchmarks/ray_bench.py                  # every case (about 10 minutes)
    python benchmarks/ray_bench.py found proxy      # chosen cases
    python benchmarks/ray_bench.py --quick          # tiny sizes

Cases (3 workers, 2,000 rows, a server of 1,800 RPM with a 1 s burst, 200 ms +-50% latency):
  found       the simulator announcing no limit, no --rpm: requests/min as the server counts them,
              share of 429s, rows failed; Ray and one local process
  proxy       the same rows behind nginx's limit_req (30 r/s, burst 30, 429, no headers) in front of a
              simulator without limits: as found
  known       --rpm 1800 given: as found
  driver-kill 6,000 RPM, --concurrency 16, the driver killed with SIGKILL mid-run, then the same
              command: rows lost, written twice, paid twice (bound: 3 workers x 16 in flight = 48)
  budget      --max-cost: what the cluster pays against what one process pays
  overhead    zero-latency server, 50,000 rows: rows/s of the local executor and of Ray (3 workers)
Each Ray run starts its own local Ray cluster (a few seconds, counted in the whole-run figures).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import SimulatorProcess, batcher, run_cases

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.nginx import Nginx  # noqa: E402

PROMPT = "Classify the sentiment of this review: {text}"
ENV = {**os.environ, "OPENAI_API_KEY": "sk-bench", "RAY_USAGE_STATS_ENABLED": "0"}
RAY = ("--executor", "ray", "--workers", 3)
LIMIT = 1800


def write_rows(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "text": f"review {i}: I love it, works great"}) + "\n")
    return path


def run(path: Path, out: Path, base_url: str, *flags: object) -> list[str]:
    return batcher(
        "run", path, "-o", out, "--base-url", base_url, "--model", "m", "--prompt", PROMPT, "--quiet", *flags
    )


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    code = subprocess.run(command, env=ENV).returncode
    assert code == 0, f"exit {code}: {' '.join(command)}"
    return time.perf_counter() - started


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def rate_figures(case: str, ledger: dict, out: Path, seconds: float) -> list[tuple[str, str, str]]:
    """Requests a minute as the server counts them (first to last arrival), 429s, rows failed."""
    span = ledger["last_arrival"] - ledger["first_arrival"]
    per_minute = (ledger["requests"] - 1) / span * 60
    throttled = ledger["statuses"].get("429", 0)
    return [
        (case, "requests/min as the server counts them", f"{per_minute:,.0f} ({per_minute / LIMIT:.1%})"),
        (case, "429s / requests", f"{throttled / ledger['requests']:.2%} ({throttled})"),
        (case, "rows failed; whole run", f"{summary(out)['rows_failed']}; {seconds:.1f} s"),
    ]


def against_the_limit(tmp: Path, rows: int, label: str, *flags: object) -> list[tuple[str, str, str]]:
    """Ray and one process against the simulator at 1,800 RPM (no headers), `flags` added."""
    path = write_rows(tmp / f"{label}.jsonl", rows)
    figures = []
    for side, executor in (("ray, 3 workers", RAY), ("local", ())):
        sim = SimulatorProcess("--rpm", LIMIT, "--rate-limit-headers", "none", "--latency-ms", 200)
        out = tmp / f"{label}-{len(executor)}"
        try:
            seconds = timed(run(path, out, sim.base_url, *executor, *flags))
            ledger = sim.ledger()
        finally:
            sim.stop()
        figures += rate_figures(f"{label}: {side}", ledger, out, seconds)
    return figures


def case_found(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    return against_the_limit(tmp, 500 if quick else 2_000, "found")


def case_known(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    return against_the_limit(tmp, 500 if quick else 2_000, "known", "--rpm", LIMIT)


def case_proxy(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows = 500 if quick else 2_000
    path = write_rows(tmp / "proxy.jsonl", rows)
    figures = []
    for side, executor in (("ray, 3 workers", RAY), ("local", ())):
        sim = SimulatorProcess("--latency-ms", 200)
        proxy = Nginx(sim.base_url.removeprefix("http://").removesuffix("/v1"))
        out = tmp / f"proxy-{len(executor)}"
        try:
            seconds = timed(run(path, out, proxy.base_url, *executor))
            ledger = sim.ledger()  # what got through: the 429s are the proxy's, counted by the client
        finally:
            proxy.stop()
            sim.stop()
        stats = summary(out)["session"]
        span = ledger["last_arrival"] - ledger["first_arrival"]
        per_minute = (ledger["requests"] - 1) / span * 60
        sent, refused = stats["requests_sent"], stats["rate_limited_429"]
        figures += [
            (f"proxy: {side}", "requests/min through", f"{per_minute:,.0f} ({per_minute / LIMIT:.1%})"),
            (f"proxy: {side}", "429s / requests", f"{refused / sent:.2%} ({refused})"),
            (f"proxy: {side}", "rows failed; whole run", f"{summary(out)['rows_failed']}; {seconds:.1f} s"),
        ]
    return figures


def case_driver_kill(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows, after = (1_500, 10.0) if quick else (3_000, 14.0)
    path = write_rows(tmp / "kill.jsonl", rows)
    out = tmp / "kill"
    sim = SimulatorProcess("--rpm", 6000, "--latency-ms", 200)
    command = run(path, out, sim.base_url, *RAY, "--rpm", 6000, "--concurrency", 16)
    try:
        driver = subprocess.Popen(command, env=ENV)
        time.sleep(after)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        journaled = (out / "results.jsonl").read_bytes().count(b"\n")
        time.sleep(3)  # its workers die with it
        parts = (out / ".batcher" / "parts").glob("*/.batcher/results.jsonl")
        in_parts = sum(part.stat().st_size > 0 for part in parts)
        code = subprocess.run(command, env=ENV).returncode
        ledger = sim.ledger()
    finally:
        sim.stop()
    assert code == 0, f"exit {code}"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in results]
    paid_twice = sum(n - 1 for n in ledger["completions"].values())
    return [
        (
            "driver-kill",
            f"{rows:,} rows, killed after {after:g} s with {journaled:,} journaled ({in_parts} worker parts)",
            "then the same command: exit 0",
        ),
        ("driver-kill", "rows lost / written twice", f"{rows - len(set(ids))} / {len(ids) - len(set(ids))}"),
        ("driver-kill", "rows paid twice (bound: 3 workers x 16 = 48)", f"{paid_twice}"),
    ]


def case_budget(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows = 1_000 if quick else 2_000
    path = write_rows(tmp / "budget.jsonl", rows)
    prices = ("--price", "1000,1000", "--max-cost", 5)
    figures = []
    for side, executor in (("ray, 3 workers", RAY), ("local", ())):
        sim = SimulatorProcess("--latency-ms", 200)
        out = tmp / f"budget-{len(executor)}"
        try:
            code = subprocess.run(run(path, out, sim.base_url, *executor, *prices), env=ENV).returncode
        finally:
            sim.stop()
        stats = summary(out)
        spent = f"{code}; {stats['rows_ok']}; ${stats['cost_usd']:.6f}"
        figures.append((f"budget: {side}", "exit; rows ok; spent of --max-cost $5", spent))
    return figures


def steady_rate(out: Path) -> tuple[float, float]:
    """(rows a second over the run's timeline windows past the first and before the last: the pace
    once every worker is up; seconds from the session's start to the end of the first window)."""
    windows = [json.loads(line) for line in (out / ".batcher" / "timeline.jsonl").read_text().splitlines()]
    middle = windows[1:-1] or windows
    rate = sum(w["rows_done"] for w in middle) / sum(w["seconds"] for w in middle)
    return rate, windows[0]["t"] - windows[0]["session"]


def case_overhead(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows = 10_000 if quick else 50_000
    path = write_rows(tmp / "overhead.jsonl", rows)
    sim = SimulatorProcess()
    whole: dict[str, list[float]] = {"local": [], "ray, 3 workers": []}
    steady: dict[str, list[float]] = {"local": [], "ray, 3 workers": []}
    try:
        for n in range(1 if quick else 3):  # paired rounds: the machine's pace drifts between them
            for side, executor in (("local", ()), ("ray, 3 workers", RAY)):
                out = tmp / f"overhead-{len(executor)}-{n}"
                whole[side].append(rows / timed(run(path, out, sim.base_url, *executor)))
                steady[side].append(steady_rate(out)[0])
    finally:
        sim.stop()

    def spread(values: list[float]) -> str:
        return " / ".join(f"{v:,.0f}" for v in values) + " rows/s"

    def ratios(figures: dict[str, list[float]]) -> str:
        pairs = zip(figures["ray, 3 workers"], figures["local"], strict=True)
        return ", ".join(f"{ray / local:.0%}" for ray, local in pairs)

    return [
        *(("overhead", f"{side}: {rows:,} rows, whole run", spread(v)) for side, v in whole.items()),
        *(("overhead", f"{side}: once every worker is up", spread(v)) for side, v in steady.items()),
        ("overhead", "Ray / local, whole run (each round)", ratios(whole)),
        ("overhead", "Ray / local, once every worker is up (each round)", ratios(steady)),
    ]


CASES = {
    "found": case_found,
    "proxy": case_proxy,
    "known": case_known,
    "driver-kill": case_driver_kill,
    "budget": case_budget,
    "overhead": case_overhead,
}


if __name__ == "__main__":
    run_cases(CASES, __doc__)

"""Benchmarks of `--executor ray` against the simulator, each side a process of its own.

    python benchmarks/ray_bench.py                  # every case (about 13 minutes)
    python benchmarks/ray_bench.py limit            # chosen cases
    python benchmarks/ray_bench.py --quick          # tiny sizes

Cases:
  limit       4 workers, server 3,000 RPM with a 1 s burst (no headers), 6,000 rows, --rpm 3000:
              requests/min as the server counts them, share of 429s
  found       the same server and rows, no --rpm: the limit found from 429s, 4 workers together and
              one local process: requests/min as the server counts them, share of 429s
  overhead    zero-latency server, 100,000 rows: rows/s of the local executor and of Ray (2 workers)
  driver-kill 3,000 RPM, 6,000 rows, the driver killed with SIGKILL after 20 s, then the same
              command: rows lost, written twice, and paid twice against the bound (workers x 2 x 64)
Each run starts its own local Ray cluster (a few seconds, counted in the whole-run figures).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from common import SimulatorProcess, batcher, run_cases

PROMPT = "Classify the sentiment of this review: {text}"
ENV = {**os.environ, "OPENAI_API_KEY": "sk-bench", "RAY_USAGE_STATS_ENABLED": "0"}


def write_rows(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "text": f"review {i}: I love it, works great"}) + "\n")
    return path


def run(path: Path, out: Path, base_url: str, *flags: object) -> list[str]:
    return batcher(
        "run", path, "-o", out, "--base-url", base_url, "--model", "m", "--prompt", PROMPT, "--quiet", *flags
    )


def against_3000_rpm(tmp: Path, rows: int, name: str, *flags: object) -> tuple[float, dict]:
    """A run against a server of 3,000 RPM with a 1 s burst and no headers: its seconds, the ledger."""
    path = write_rows(tmp / "limit.jsonl", rows)
    sim = SimulatorProcess("--rpm", 3000, "--rate-limit-headers", "none", "--latency-ms", 200)
    try:
        started = time.perf_counter()
        code = subprocess.run(run(path, tmp / name, sim.base_url, *flags), env=ENV).returncode
        seconds = time.perf_counter() - started
        ledger = sim.ledger()
    finally:
        sim.stop()
    assert code == 0, f"{name}: exit {code}"
    return seconds, ledger


def rate_figures(case: str, ledger: dict) -> list[tuple[str, str, str]]:
    span = ledger["last_arrival"] - ledger["first_arrival"]
    per_minute = (ledger["requests"] - 1) / span * 60
    throttled = ledger["statuses"].get("429", 0)
    return [
        (case, "requests/min as the server counts them", f"{per_minute:,.0f} ({per_minute / 30:.1f}%)"),
        (case, "429s / requests", f"{throttled / ledger['requests']:.2%} ({throttled})"),
    ]


def case_limit(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows = 1_000 if quick else 6_000
    seconds, ledger = against_3000_rpm(tmp, rows, "limit", "--executor", "ray", "--workers", 4, "--rpm", 3000)
    whole = ("limit", f"{rows:,} rows, 4 workers, whole run (Ray start-up included)", f"{seconds:.1f} s")
    return [whole, *rate_figures("limit", ledger)]


def case_found(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows = 1_000 if quick else 6_000
    figures = []
    for name, flags in (("ray, 4 workers", ("--executor", "ray", "--workers", 4)), ("local", ())):
        seconds, ledger = against_3000_rpm(tmp, rows, f"found-{len(flags)}", *flags)
        figures.append((f"found: {name}", f"{rows:,} rows, no --rpm, whole run", f"{seconds:.1f} s"))
        figures += rate_figures(f"found: {name}", ledger)
    return figures


def case_overhead(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows = 10_000 if quick else 100_000
    path = write_rows(tmp / "overhead.jsonl", rows)
    sim = SimulatorProcess()
    figures = []
    try:
        for name, flags in (("local", ()), ("ray, 2 workers", ("--executor", "ray", "--workers", 2))):
            started = time.perf_counter()
            code = subprocess.run(
                run(path, tmp / f"overhead-{len(flags)}", sim.base_url, *flags), env=ENV
            ).returncode
            assert code == 0, f"{name}: exit {code}"
            figures.append((name, rows / (time.perf_counter() - started)))
    finally:
        sim.stop()
    return [
        ("overhead", f"{name}: {rows:,} rows, zero latency, whole run", f"{rate:,.0f} rows/s")
        for name, rate in figures
    ]


def case_driver_kill(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows, after = (1_000, 12.0) if quick else (6_000, 20.0)
    path = write_rows(tmp / "kill.jsonl", rows)
    out = tmp / "kill"
    sim = SimulatorProcess("--rpm", 3000, "--latency-ms", 200)
    command = run(path, out, sim.base_url, "--executor", "ray", "--workers", 4, "--rpm", 3000)
    try:
        driver = subprocess.Popen(command, env=ENV)
        time.sleep(after)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        lines = (out / "results.jsonl").read_bytes().split(b"\n")[:-1]
        done_at_kill = len(lines)
        time.sleep(2)  # its workers die with it
        code = subprocess.run(command, env=ENV).returncode
        ledger = sim.ledger()
    finally:
        sim.stop()
    assert code == 0, f"exit {code}"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in results]
    paid_twice = sum(n - 1 for n in ledger["completions"].values())
    return [
        ("driver-kill", f"{rows:,} rows; killed with {done_at_kill:,} done", "then the same command: exit 0"),
        ("driver-kill", "rows lost / written twice", f"{rows - len(set(ids))} / {len(ids) - len(set(ids))}"),
        ("driver-kill", "rows paid twice (bound: 4 workers x 2 x 64 = 512)", f"{paid_twice}"),
    ]


CASES = {"limit": case_limit, "found": case_found, "overhead": case_overhead, "driver-kill": case_driver_kill}


if __name__ == "__main__":
    run_cases(CASES, __doc__)

"""Benchmarks of batcher against the embedded simulator, run as separate processes.

    python benchmarks/bench.py                 # every case, default sizes
    python benchmarks/bench.py overhead rpm    # chosen cases
    python benchmarks/bench.py --quick         # tiny sizes: checks that the cases run

Cases:
  overhead  simulator with no latency and no limits; batcher end to end vs a bare
            aiohttp loop posting the same bodies with the same concurrency
  rpm       simulator limit 3,000 RPM, latency 200 ms +/- 50%; client --rpm 3000:
            achieved requests/min over the whole run, share of 429s
Prints one table; figures go in benchmarks/README.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

PROMPT = "Classify the sentiment of this review: {text}"


def batcher(*args: object) -> list[str]:
    return [sys.executable, "-m", "batcher", *[str(a) for a in args]]


class SimulatorProcess:
    """`batcher simulate` on a free port, in its own process."""

    def __init__(self, *flags: object):
        self.process = subprocess.Popen(
            batcher("simulate", "--port", "0", *flags), stderr=subprocess.PIPE, text=True
        )
        line = self.process.stderr.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            raise RuntimeError(f"simulator did not start: {line}")
        self.base_url = match.group(1)

    def ledger(self) -> dict:
        async def get() -> dict:
            url = self.base_url.removesuffix("/v1") + "/_simulator/ledger"
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                return await resp.json()

        return asyncio.run(get())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def write_rows(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "text": f"review {i}: I love it, works great"}) + "\n")
    return path


def run_batcher(path: Path, out: Path, base_url: str, *flags: object) -> dict:
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
    started = time.perf_counter()
    result = subprocess.run(
        batcher(
            "run",
            path,
            "-o",
            out,
            "--base-url",
            base_url,
            "--model",
            "m",
            "--prompt",
            PROMPT,
            "--quiet",
            *flags,
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"batcher failed ({result.returncode}): {result.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    summary["process_wall_s"] = wall
    return summary


async def bare_loop(base_url: str, n: int, concurrency: int) -> float:
    """The physical limit of the client side: aiohttp posting prebuilt bodies, nothing else."""
    bodies = [
        json.dumps(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": PROMPT.format(text=f"review {i}: I love it, works great")}
                ],
            }
        )
        for i in range(n)
    ]
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(base_url + "/chat/completions", data=body) as resp:
                await resp.read()

    started = time.perf_counter()
    async with aiohttp.ClientSession(
        headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def case_overhead(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    n = 2_000 if quick else 50_000
    concurrency = 64
    sim = SimulatorProcess()
    try:
        path = write_rows(tmp / "overhead.jsonl", n)
        bare = asyncio.run(bare_loop(sim.base_url, n, concurrency))
        summary = run_batcher(path, tmp / "overhead-run", sim.base_url, "--concurrency", concurrency)
    finally:
        sim.stop()
    session = summary["session"]
    ours = session["rows_per_s"]
    return [
        ("overhead", f"bare aiohttp loop, {n} rows, {concurrency} workers", f"{bare:,.0f} rows/s"),
        ("overhead", "batcher end to end (send phase)", f"{ours:,.0f} rows/s"),
        ("overhead", "batcher / bare", f"{ours / bare:.0%}"),
        (
            "overhead",
            "batcher whole process (scan + send + exit)",
            f"{n / summary['process_wall_s']:,.0f} rows/s",
        ),
    ]


def case_rpm(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    limit = 3000
    n = 300 if quick else 3000
    sim = SimulatorProcess("--rpm", limit, "--latency-ms", 200)
    try:
        path = write_rows(tmp / "rpm.jsonl", n)
        summary = run_batcher(path, tmp / "rpm-run", sim.base_url, "--rpm", limit, "--concurrency", 64)
        ledger = sim.ledger()
    finally:
        sim.stop()
    session = summary["session"]
    requests = session["requests_sent"]
    per_minute = requests / session["wall_time_s"] * 60
    return [
        ("rpm", f"limit {limit} RPM, 200 ms +/- 50%, {n} rows", f"{per_minute:,.0f} requests/min"),
        ("rpm", "utilisation of the limit", f"{per_minute / limit:.1%}"),
        (
            "rpm",
            "429s / requests",
            f"{session['rate_limited_429'] / requests:.2%} "
            f"({ledger['statuses'].get('429', 0)} seen by the server)",
        ),
    ]


CASES = {"overhead": case_overhead, "rpm": case_rpm}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all of {', '.join(CASES)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the cases run")
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases or CASES:
            rows += CASES[name](Path(tmp), args.quick)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    width = max(len(r[1]) for r in rows)
    print(f"| case | measure{' ' * (width - 7)} | figure |")
    print(f"|---|{'-' * (width + 2)}|---|")
    for case, measure, figure in rows:
        print(f"| {case} | {measure.ljust(width)} | {figure} |")


if __name__ == "__main__":
    main()

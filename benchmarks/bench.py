"""Benchmarks of batcher against the embedded simulator, run as separate processes.

    python benchmarks/bench.py                 # every case, default sizes
    python benchmarks/bench.py overhead rpm    # chosen cases
    python benchmarks/bench.py --quick         # tiny sizes: checks that the cases run

Cases:
  overhead  simulator with no latency and no limits; batcher end to end vs a bare
            aiohttp loop posting the same bodies with the same concurrency, in
            interleaved rounds (--rows 20000 --concurrency 32 --rounds 5 by default)
  instructions  the same comparison in instructions a row (valgrind's callgrind): exact,
            where rows/s drift with whatever else the machine runs (--concurrency too)

Run it with the interpreter of the install to measure: `/path/to/venv/bin/python benchmarks/bench.py`
(the simulator, the bare loop and batcher all run in it).
  rpm       simulator limit 3,000 RPM, latency 200 ms +/- 50%; client --rpm 3000:
            achieved requests/min over the whole run, share of 429s
  tpm       long prompts so that tokens/min binds; client --tpm = the server's:
            tokens/min as the server counts them (prompt + max_tokens), 429s
  storm     server 1,800 RPM that announces no limit, 429 with retry-after-ms 200,
            200 ms +/- 50%, no --rpm, concurrency 64, 2,000 rows: the adaptive rate
  headers   the same server with x-ratelimit-* headers, no --rpm, 1,000 rows
  two-processes  two runs at once on one key, each --rpm 1800, server 1,800 RPM:
            together against the limit (and with two keys, where nothing is shared)
  fast-stop connection refused, 404 on the path, an unknown model, a wrong key:
            how soon batcher stops, and what it says
  startup   `batcher --help`, `batcher run --dry-run` on 100 rows
  resume    1,000,000 rows done, 1,000 left: time to the first new request
  memory    1,000,000 and 100,000-row JSONL and Parquet inputs: peak RSS
Prints one table; figures go in benchmarks/README.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from common import SimulatorProcess, batcher

PROMPT = "Classify the sentiment of this review: {text}"


def write_rows(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "text": f"review {i}: I love it, works great"}) + "\n")
    return path


def run_command(path: Path, out: Path, base_url: str, *flags: object, model: str = "m") -> list[str]:
    """`batcher run` of the benchmarks' prompt over `path` into `out`, quiet, with `flags` last."""
    return batcher(
        "run",
        path,
        "-o",
        out,
        "--base-url",
        base_url,
        "--model",
        model,
        "--prompt",
        PROMPT,
        "--quiet",
        *flags,
    )


def run_batcher(path: Path, out: Path, base_url: str, *flags: object, check: bool = True) -> dict:
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
    started = time.perf_counter()
    result = subprocess.run(
        run_command(path, out, base_url, *flags),
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0 and (check or result.returncode > 1):
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


#: The overhead case's settings (issue 21): rows, concurrency, interleaved rounds; --rows etc. change them.
OVERHEAD = {"rows": 20_000, "concurrency": 32, "rounds": 5}


def case_overhead(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    """Interleaved pairs (bare loop, then batcher) on one simulator; the median ratio of the pairs.

    The machine's speed drifts between runs by more than the differences measured here, so
    one pair proves little; each ratio compares two runs made seconds apart.
    """
    n = 2_000 if quick else OVERHEAD["rows"]
    pairs = 1 if quick else OVERHEAD["rounds"]
    concurrency = OVERHEAD["concurrency"]
    sim = SimulatorProcess()
    bares, ours, ratios, whole = [], [], [], []
    try:
        path = write_rows(tmp / "overhead.jsonl", n)
        for pair in range(pairs):
            bares.append(asyncio.run(bare_loop(sim.base_url, n, concurrency)))
            out = tmp / f"overhead-run-{pair}"
            summary = run_batcher(path, out, sim.base_url, "--concurrency", concurrency)
            ours.append(summary["session"]["rows_per_s"])
            whole.append(n / summary["process_wall_s"])
            ratios.append(ours[-1] / bares[-1])
    finally:
        sim.stop()
    median = sorted(ratios)[len(ratios) // 2]
    return [
        ("overhead", f"bare aiohttp loop, {n} rows, {concurrency} workers", _figures(bares, "rows/s")),
        ("overhead", "batcher end to end (send phase)", _figures(ours, "rows/s")),
        ("overhead", f"batcher / bare, {pairs} interleaved pair(s)", ", ".join(f"{r:.0%}" for r in ratios)),
        ("overhead", "batcher / bare, median of the pairs", f"{median:.0%}"),
        ("overhead", "batcher whole process (scan + send + exit)", _figures(whole, "rows/s")),
    ]


def _figures(values: list[float], unit: str) -> str:
    return ", ".join(f"{v:,.0f}" for v in values) + f" {unit}"


def _instructions(command: list[str], env: dict | None = None) -> int:
    """Instructions the command's process executed, counted by valgrind's callgrind."""
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}", *command],
            env=env,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} under callgrind exited {done.returncode}: {done.stderr[-1000:]}")
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def case_instructions(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    """Client overhead as instructions a row, which do not drift with the machine as rows/s do.

    Each client runs over n and 3n rows under callgrind; the difference over 2n rows is the
    cost of a row with start-up taken out. The simulator runs natively in its own process.
    """
    n = 100 if quick else 1000
    concurrency = OVERHEAD["concurrency"]
    sim = SimulatorProcess()
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}

    def command(client: str, rows: int) -> list[str]:
        if client == "bare":
            code = (
                f"import asyncio, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                "from bench import bare_loop; "
                f"asyncio.run(bare_loop({sim.base_url!r}, {rows}, {concurrency}))"
            )
            return [sys.executable, "-c", code]
        path = write_rows(tmp / f"instructions-{rows}.jsonl", rows)
        return run_command(path, tmp / f"instructions-run-{rows}", sim.base_url, "--concurrency", concurrency)

    try:
        # The four counts at once: an instruction count does not depend on what else runs.
        runs = [(client, rows) for client in ("bare", "batcher") for rows in (n, 3 * n)]
        with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
            counts = dict(
                zip(runs, pool.map(lambda run: _instructions(command(*run), env), runs), strict=True)
            )
    finally:
        sim.stop()
    per_row = {
        client: (counts[client, 3 * n] - counts[client, n]) / (2 * n) for client in ("bare", "batcher")
    }
    return [
        ("instructions", f"bare aiohttp loop, a row (over {2 * n} rows)", f"{per_row['bare']:,.0f}"),
        ("instructions", "batcher, a row", f"{per_row['batcher']:,.0f}"),
        ("instructions", "bare / batcher", f"{per_row['bare'] / per_row['batcher']:.1%}"),
    ]


def case_rpm(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    limit = 3000
    n = 120 if quick else 3000
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


def write_long_rows(path: Path, n: int, words: int) -> Path:
    filler = "the harbour committee met again to discuss the new plan for the river bank and its paths"
    text = " ".join((filler.split() * (words // 16 + 1))[:words])
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "text": f"{i} {text}"}) + "\n")
    return path


def case_tpm(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    limit = 600_000
    n = 60 if quick else 1500
    sim = SimulatorProcess("--tpm", limit, "--latency-ms", 200)
    try:
        path = write_long_rows(tmp / "tpm.jsonl", n, words=400)
        summary = run_batcher(
            path, tmp / "tpm-run", sim.base_url, "--tpm", limit, "--max-tokens", 100, "--concurrency", 64
        )
        ledger = sim.ledger()
    finally:
        sim.stop()
    session = summary["session"]
    window = (ledger["last_arrival"] - ledger["first_arrival"]) or 1e-9
    # Tokens as the server's limit counts them (prompt + max_tokens at admission), per minute of sending.
    per_minute = ledger["admitted_tokens"] / window * 60
    requests = session["requests_sent"]
    return [
        (
            "tpm",
            f"limit {limit:,} TPM, ~500-token prompts + max_tokens 100, {n} rows",
            f"{per_minute:,.0f} tokens/min",
        ),
        ("tpm", "utilisation of the limit", f"{per_minute / limit:.1%}"),
        ("tpm", "429s / requests", f"{session['rate_limited_429'] / requests:.2%}"),
    ]


def _utilisation_rows(case: str, summary: dict, limit: float, label: str) -> list[tuple[str, str, str]]:
    session = summary["session"]
    requests = session["requests_sent"]
    per_minute = summary["rows_ok"] / session["wall_time_s"] * 60
    return [
        (case, label, f"{per_minute:,.0f} rows/min"),
        (case, "utilisation of the server's limit", f"{per_minute / limit:.1%}"),
        (
            case,
            "429s / requests",
            f"{session['rate_limited_429'] / requests:.2%} ({session['rate_limited_429']})",
        ),
        (case, "rows failed", f"{summary['rows_failed']}"),
    ]


def case_storm(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    """A server that enforces a limit and announces none, answering 429 with retry-after-ms 200."""
    limit = 1800
    n = 100 if quick else 2000
    sim = SimulatorProcess(
        "--rpm", limit, "--latency-ms", 200, "--rate-limit-headers", "none", "--retry-after-ms", 200
    )
    try:
        path = write_rows(tmp / "storm.jsonl", n)
        summary = run_batcher(path, tmp / "storm-run", sim.base_url, "--concurrency", 64, check=False)
    finally:
        sim.stop()
    label = f"server {limit} RPM announcing none, no --rpm, {n} rows"
    return _utilisation_rows("storm", summary, limit, label)


def case_headers(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    limit = 1800
    n = 100 if quick else 1000
    sim = SimulatorProcess("--rpm", limit, "--latency-ms", 200)
    try:
        path = write_rows(tmp / "headers.jsonl", n)
        summary = run_batcher(path, tmp / "headers-run", sim.base_url, "--concurrency", 64)
    finally:
        sim.stop()
    label = f"server {limit} RPM with x-ratelimit-* headers, no --rpm, {n} rows"
    return _utilisation_rows("headers", summary, limit, label)


def case_two_processes(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    """Two `batcher run` at once on one base URL, each told the key's limit: together under it."""
    limit = 1800
    n = 60 if quick else 1000
    rows = []
    for keys in (("sk-bench", "sk-bench"), ("sk-bench-a", "sk-bench-b")):
        sim = SimulatorProcess("--rpm", limit, "--latency-ms", 200)
        try:
            started = time.perf_counter()
            runs = []
            for i, key in enumerate(keys):
                path = write_rows(tmp / f"two-{i}.jsonl", n)
                out = tmp / f"two-{keys[1]}-{i}"
                command = run_command(path, out, sim.base_url, "--rpm", limit, "--concurrency", 64)
                runs.append(subprocess.Popen(command, env={**os.environ, "OPENAI_API_KEY": key}))
            codes = [run.wait() for run in runs]
            wall = time.perf_counter() - started
            ledger = sim.ledger()
        finally:
            sim.stop()
        if codes != [0, 0]:
            raise RuntimeError(f"two processes exited {codes}")
        shared = "one key (shared)" if keys[0] == keys[1] else "two keys (nothing shared)"
        per_minute = 2 * n / wall * 60
        rejected = ledger["statuses"].get("429", 0) / ledger["requests"]
        rows.append(
            (
                "two-processes",
                f"2 x {n} rows, each --rpm {limit}, server {limit} RPM, {shared}",
                f"{per_minute / limit:.1%} of the limit, {rejected:.2%} 429s",
            )
        )
    return rows


def case_fast_stop(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    """Job-level failures at the start: how long until batcher stops, and what it says."""
    path = write_rows(tmp / "fast-stop.jsonl", 200)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    sim = SimulatorProcess(
        "--models",
        "m",
        "--require-key-env",
        "BENCH_SERVER_KEY",
        env={**os.environ, "BENCH_SERVER_KEY": "sk-bench"},
    )
    rows = []
    try:
        causes = {
            "connection refused": (closed, "m"),
            "404 on the path (no /v1)": (sim.base_url.removesuffix("/v1") + "/api", "m"),
            "unknown model": (sim.base_url, "gpt-4o"),
            "401 (wrong key)": (sim.base_url, "m"),
        }
        for cause, (base_url, model) in causes.items():
            started = time.perf_counter()
            key = "sk-bench" if cause != "401 (wrong key)" else "sk-wrong"
            env = {**os.environ, "OPENAI_API_KEY": key, "BENCH_SERVER_KEY": "sk-bench"}
            out = tmp / f"fast-stop-{len(rows)}"
            command = run_command(path, out, base_url, model=model)
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            errors = out / "errors.jsonl"
            failed = len(errors.read_text().splitlines()) if errors.exists() else 0
            said = next((line[9:80] for line in done.stderr.splitlines() if line.startswith("batcher: ")), "")
            rows.append(
                (
                    "fast-stop",
                    cause,
                    f"exit {done.returncode} in {seconds:.1f} s, {failed} rows failed: {said}",
                )
            )
    finally:
        sim.stop()
    return rows


def case_startup(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    path = write_rows(tmp / "small.jsonl", 100)
    # (the embedded simulator as the server: a dry run for OpenAI itself wants the key's variable set)
    dry_run = ("run", path, "-o", tmp / "dry", "--base-url", "simulator", "--model", "m", "--prompt", PROMPT)
    dry_run += ("--dry-run",)
    figures = []
    for name, args in (("`batcher --help`", ("--help",)), ("`batcher run --dry-run`, 100 rows", dry_run)):
        times = []
        for _ in range(3 if quick else 10):
            started = time.perf_counter()
            subprocess.run(batcher(*args), capture_output=True, check=True)
            times.append(time.perf_counter() - started)
        figures.append(("startup", f"{name}: best / median of {len(times)}", _best_median(times)))
    return figures


def _best_median(times: list[float]) -> str:
    ordered = sorted(times)
    return f"{ordered[0]:.3f} s / {ordered[len(ordered) // 2]:.3f} s"


def case_resume(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    done, left = (20_000, 100) if quick else (1_000_000, 1_000)
    path = write_rows(tmp / "resume.jsonl", done + left)
    out = tmp / "resume-run"
    args = ("run", path, "-o", out, "--model", "m", "--prompt", PROMPT, "--quiet")
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
    # A first session that stops at once (every request refused) leaves the job record of its scan...
    refusing = SimulatorProcess("--fail-auth-after", 0)
    try:
        first = subprocess.run(batcher(*args, "--base-url", refusing.base_url), env=env, capture_output=True)
        assert first.returncode == 3, first.stderr
    finally:
        refusing.stop()
    # ...then the rows it would have done are put on disk, as a long run would have left them.
    line = {
        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
        "cost_usd": 3.6e-06,
        "content": "positive",
        "tool_calls": None,
        "finish_reason": "stop",
        "model": "m",
        "latency_ms": 1.0,
        "attempts": 1,
    }
    with (out / "results.jsonl").open("w") as f:
        for i in range(done):  # written as batcher writes them: compact, in its key order
            f.write(json.dumps({"id": f"r{i}", "row_number": i + 1, **line}, separators=(",", ":")) + "\n")
    sim = SimulatorProcess()
    try:
        started = time.perf_counter()
        run = subprocess.Popen(batcher(*args, "--base-url", sim.base_url), env=env)
        first_request = None
        while run.poll() is None and first_request is None:
            if sim.ledger()["requests"]:
                first_request = time.perf_counter() - started
            time.sleep(0.05)
        run.wait()
        total = time.perf_counter() - started
    finally:
        sim.stop()
    if run.returncode != 0:
        raise RuntimeError(f"resumed run exited {run.returncode}")
    return [
        ("resume", f"{done:,} rows done, {left:,} left: first new request after", f"{first_request:.2f} s"),
        ("resume", "whole resumed run", f"{total:.2f} s"),
    ]


def peak_rss_of(command: list[str], env: dict) -> tuple[float, int]:
    """Run a command, sampling its VmRSS; return the peak in MB and its exit code."""
    process = subprocess.Popen(command, env=env)
    peak = 0.0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak = max(peak, int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024)
        except (OSError, AttributeError):
            pass
        time.sleep(0.1)
    return peak, process.returncode


def case_memory(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sizes = (10_000, 100_000) if quick else (100_000, 1_000_000)
    sim = SimulatorProcess()
    rows = []
    try:
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        for kind in ("jsonl", "parquet"):
            peaks = []
            for n in sizes:
                path = write_rows(tmp / f"mem-{n}.jsonl", n)
                if kind == "parquet":
                    table = pa.Table.from_pylist([json.loads(line) for line in path.open()])
                    path = tmp / f"mem-{n}.parquet"
                    pq.write_table(table, path, row_group_size=50_000)
                    del table
                peak, code = peak_rss_of(
                    run_command(path, tmp / f"mem-{kind}-{n}", sim.base_url, "--concurrency", 64),
                    env,
                )
                if code != 0:
                    raise RuntimeError(f"memory run exited {code}")
                peaks.append(peak)
                rows.append(("memory", f"{kind}, {n:,} rows: peak RSS", f"{peak:.0f} MB"))
            rows.append(
                ("memory", f"{kind}: RSS at {sizes[1]:,} / at {sizes[0]:,}", f"{peaks[1] / peaks[0]:.2f}")
            )
    finally:
        sim.stop()
    return rows


CASES = {
    "overhead": case_overhead,
    "instructions": case_instructions,
    "rpm": case_rpm,
    "tpm": case_tpm,
    "storm": case_storm,
    "headers": case_headers,
    "fast-stop": case_fast_stop,
    "two-processes": case_two_processes,
    "startup": case_startup,
    "resume": case_resume,
    "memory": case_memory,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all of {', '.join(CASES)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the cases run")
    for name, value in OVERHEAD.items():
        parser.add_argument(f"--{name}", type=int, default=value, help=f"overhead: {name} (default {value})")
    args = parser.parse_args()
    OVERHEAD.update(rows=args.rows, concurrency=args.concurrency, rounds=args.rounds)
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

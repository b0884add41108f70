"""Soak: a long run under a fault mix, its memory sampled as it goes.

    python benchmarks/soak.py                 # 100,000 rows
    python benchmarks/soak.py --rows 20000

The simulator (its own process) answers 5% 500s, 2% dropped connections and 1%
broken bodies with 5 ms latency; `batcher run` (its own process, concurrency
64) is sampled every 0.2 s for its resident memory (VmRSS) against the rows
already on disk. Prints RSS at 10% and at 100% of the rows, the peak, and the
ratio that says whether memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from common import SimulatorProcess, batcher

PROMPT = "Classify the sentiment of this review: {text}"


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else None


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def soak(workdir: Path, rows: int) -> dict:
    source = workdir / "input.jsonl"
    with source.open("w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": i, "text": f"review {i}: it works great, I love it"}) + "\n")
    server = SimulatorProcess(
        "--latency-ms", 5, "--error-rate", 0.05, "--drop-rate", 0.02, "--garbage-rate", 0.01
    )
    try:
        out = workdir / "run"
        started = time.monotonic()
        run = subprocess.Popen(
            batcher(
                "run",
                source,
                "-o",
                out,
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "--prompt",
                PROMPT,
                "--concurrency",
                64,
                "--max-retries",
                20,
                "--quiet",
            ),
            env={**os.environ, "OPENAI_API_KEY": "sk-soak"},
        )
        samples: list[tuple[int, float]] = []
        while run.poll() is None:
            rss = rss_mb(run.pid)
            if rss is not None:
                samples.append((count_lines(out / "results.jsonl"), rss))
            time.sleep(0.2)
        seconds = time.monotonic() - started
    finally:
        server.stop()
    if run.returncode != 0:
        raise RuntimeError(f"batcher exited {run.returncode}")
    summary = json.loads((out / "summary.json").read_text())

    def rss_at(done: int) -> float:
        return max((rss for rows_done, rss in samples if rows_done <= done), default=float("nan"))

    at_10 = rss_at(rows // 10)
    peak = max(rss for _, rss in samples)
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_ok": summary["rows_ok"],
        "retries": summary["session"]["retries"],
        "rss_10pct": at_10,
        "rss_peak": peak,
        "ratio": peak / at_10,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = soak(Path(tmp), args.rows)
    print("| rows | ok | retries | seconds | RSS at 10% of rows | peak RSS (at the end) | peak / at 10% |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {r['rows']:,} | {r['rows_ok']:,} | {r['retries']:,} | {r['seconds']:.0f} | "
        f"{r['rss_10pct']:.0f} MB | {r['rss_peak']:.0f} MB | {r['ratio']:.2f} |"
    )


if __name__ == "__main__":
    main()

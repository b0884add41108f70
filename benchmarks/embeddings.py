"""Benchmarks of `--endpoint embeddings` against the simulator, each side a process of its own.

    python benchmarks/embeddings.py                  # every case, full sizes (about 5 minutes)
    python benchmarks/embeddings.py tpm cookbook     # chosen cases
    python benchmarks/embeddings.py --quick          # tiny sizes: checks that the cases run

Cases:
  tpm         server 1,000,000 TPM (1 s burst), rows of about 30 tokens, 50,000 rows, client
              --tpm 1000000: input tokens/min as the server counts them, and the share of 429s
  cookbook    server 3,000 RPM and 1,000,000 TPM: batcher packing rows against the cookbook's
              way (one input a request, --inputs-per-request 1), rows/s of each
  throughput  no limits, zero latency, 256 dimensions, Parquet out: rows/s and peak RSS at
              1,000,000 rows, and peak RSS at 100,000 (flat?)
  resume      1,000,000 vectors done, 1,000 rows left: seconds to the first new request
Prints one table; the figures go in benchmarks/README.md with the machine they came from.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from common import SimulatorProcess, batcher, run_cases

MODEL = "text-embedding-3-small"
WORDS = "the quick brown fox jumps over a lazy dog near river bank while birds sing".split()  # noqa: SIM905


def write_texts(path: Path, n: int, words: int = 24) -> Path:
    """`n` rows of about `words` + a few tokens each (the simulator counts words and punctuation)."""
    with path.open("w") as f:
        for i in range(n):
            text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words))
            f.write(json.dumps({"id": f"r{i}", "text": f"{text} {i}."}) + "\n")
    return path


def embed(path: Path, out: Path, base_url: str, *flags: object) -> list[str]:
    return batcher(
        "run", path, "-o", out, "--base-url", base_url, "--endpoint", "embeddings", "--model", MODEL,
        "--prompt", "{text}", "--quiet", *flags,
    )  # fmt: skip


ENV = {**os.environ, "OPENAI_API_KEY": "sk-bench"}


def timed_run(command: list[str]) -> tuple[float, float, int]:
    """Run a command; (seconds, its peak RSS in MB from the kernel's own count, exit code)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=ENV)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, process.returncode


def case_tpm(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows = 5_000 if quick else 50_000
    path = write_texts(tmp / "tpm.jsonl", rows)
    sim = SimulatorProcess("--tpm", 1_000_000)
    try:
        seconds, _, code = timed_run(embed(path, tmp / "tpm", sim.base_url, "--tpm", 1_000_000))
        ledger = sim.ledger()
    finally:
        sim.stop()
    assert code == 0, f"exit {code}"
    span = ledger["last_arrival"] - ledger["first_arrival"]
    # From the first arrival to the last, all but the last request's tokens were admitted (packs
    # are alike, so that share is the mean).
    requests = ledger["embedding_requests"]
    per_minute = ledger["admitted_tokens"] * (requests - 1) / requests / span * 60 if span else 0.0
    throttled = ledger["statuses"].get("429", 0)
    return [
        (
            "tpm",
            f"{rows:,} rows, {ledger['admitted_tokens']:,} tokens in {requests:,} requests",
            f"{seconds:.1f} s",
        ),
        ("tpm", "input tokens/min as the server counts them", f"{per_minute:,.0f} ({per_minute / 1e4:.1f}%)"),
        ("tpm", "429s / requests", f"{throttled / max(1, requests):.2%} ({throttled})"),
    ]


def case_cookbook(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    packed_rows, single_rows = (5_000, 500) if quick else (50_000, 3_000)
    results = []
    for name, rows, flags in (
        ("batcher, packed", packed_rows, ()),
        # (as many on the wire as the cookbook's script keeps: its pace is the RPM limit alone)
        (
            "one input a request (the cookbook's way)",
            single_rows,
            ("--inputs-per-request", 1, "--concurrency", 16),
        ),
    ):
        path = write_texts(tmp / f"cook-{rows}.jsonl", rows)
        sim = SimulatorProcess("--rpm", 3_000, "--tpm", 1_000_000, "--latency-ms", 100)
        try:
            seconds, _, code = timed_run(
                embed(
                    path,
                    tmp / f"cook-{rows}-{len(flags)}",
                    sim.base_url,
                    "--rpm",
                    3000,
                    "--tpm",
                    1_000_000,
                    *flags,
                )
            )
        finally:
            sim.stop()
        assert code == 0, f"exit {code}"
        results.append((name, rows, seconds))
    (_, packed, packed_s), (_, single, single_s) = results
    ratio = (packed / packed_s) / (single / single_s)
    return [
        ("cookbook", f"{name}: {rows:,} rows", f"{rows / seconds:,.0f} rows/s ({seconds:.1f} s)")
        for name, rows, seconds in results
    ] + [("cookbook", "packed / one a request", f"{ratio:,.0f}x")]


def case_throughput(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    sizes = (10_000, 100_000) if quick else (100_000, 1_000_000)
    sim = SimulatorProcess()
    figures = []
    try:
        for rows in sizes:
            path = write_texts(tmp / f"through-{rows}.jsonl", rows, words=8)
            seconds, rss, code = timed_run(
                embed(
                    path,
                    tmp / f"through-{rows}",
                    sim.base_url,
                    "--dimensions",
                    256,
                    "--output-format",
                    "parquet",
                )
            )
            assert code == 0, f"exit {code}"
            figures.append((rows, seconds, rss))
    finally:
        sim.stop()
    (small, _, small_rss), (large, large_s, large_rss) = figures
    return [
        (
            "throughput",
            f"{large:,} rows, 256 dimensions, Parquet, whole process",
            f"{large / large_s:,.0f} rows/s",
        ),
        ("throughput", f"peak RSS at {small:,} / {large:,} rows", f"{small_rss:.0f} / {large_rss:.0f} MB"),
    ]


def case_resume(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    done, left = (50_000, 100) if quick else (1_000_000, 1_000)
    dims = 256
    path = write_texts(tmp / "resume.jsonl", done + left, words=8)
    out = tmp / "resume-run"
    # A first session refused at once leaves the job record of its scan...
    refusing = SimulatorProcess("--fail-auth-after", 0)
    try:
        command = embed(path, out, refusing.base_url, "--dimensions", dims, "--output-format", "parquet")
        first = subprocess.run(command, env=ENV, capture_output=True)
        assert first.returncode == 3, first.stderr
    finally:
        refusing.stop()
    # ...then the rows a long run would have done go on disk as batcher writes them: lines in the
    # journal, vectors beside it.
    usage = '"usage":{"prompt_tokens":10,"completion_tokens":0,"total_tokens":10},"cost_usd":2e-07'
    with (out / ".batcher" / "results.jsonl").open("w") as f:
        for i in range(done):
            f.write(
                f'{{"id":"r{i}","row_number":{i + 1},{usage},"model":"{MODEL}","latency_ms":1.0,'
                f'"attempts":1,"vector_at":{i * dims * 4},"dims":{dims}}}\n'
            )
    with (out / ".batcher" / "vectors.f32").open("wb") as f:
        f.truncate(done * dims * 4)
    sim = SimulatorProcess()
    try:
        started = time.perf_counter()
        run = subprocess.Popen(
            embed(path, out, sim.base_url, "--dimensions", dims, "--output-format", "parquet"), env=ENV
        )
        first_request = None
        while run.poll() is None and first_request is None:
            if sim.ledger()["embedding_requests"]:
                first_request = time.perf_counter() - started
            time.sleep(0.05)
        run.wait()
        total = time.perf_counter() - started
    finally:
        sim.stop()
    assert run.returncode == 0, f"exit {run.returncode}"
    return [
        (
            "resume",
            f"{done:,} vectors done, {left:,} rows left: first new request after",
            f"{first_request:.2f} s",
        ),
        (
            "resume",
            "whole resumed run (results.parquet rebuilt with every vector as it ends)",
            f"{total:.1f} s",
        ),
    ]


CASES = {"tpm": case_tpm, "cookbook": case_cookbook, "throughput": case_throughput, "resume": case_resume}


if __name__ == "__main__":
    run_cases(CASES, __doc__)

"""The benchmarks still run (tiny sizes); their figures are checked by running them, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def table_cases(output: str) -> list[str]:
    """The cases of bench.py's table, one per row, having checked that each row has a figure."""
    lines = output.splitlines()
    assert lines[1].startswith("| case | measure")
    assert all(line.split("|")[3].strip() for line in lines[3:])
    return [line.split("|")[1].strip() for line in lines[3:]]


@pytest.mark.slow
def test_benchmarks_run_and_print_a_table():
    # memory: too slow even when quick. The rest in three processes at once (their figures are not
    # judged here): `instructions` (callgrind, CPU-bound) and two groups of timed cases, which mostly
    # wait on their servers' limits.
    groups = [
        ["instructions"],
        ["two-processes", "overhead", "rpm", "startup", "resume"],
        ["fast-stop", "tpm", "storm", "headers"],
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, BENCH, "--quick", *cases],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cases in groups
    ]
    try:
        outputs = [process.communicate(timeout=300) for process in processes]
    finally:
        for process in processes:
            process.kill()

    for cases, process, (out, err) in zip(groups, processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert set(table_cases(out)) == set(cases)


@pytest.mark.slow
def test_soak_runs_and_prints_its_memory_figures():
    soak = BENCH.parent / "soak.py"

    result = subprocess.run(
        [sys.executable, soak, "--rows", "3000"], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    header, _, figures = result.stdout.splitlines()
    assert "peak / at 10%" in header
    assert figures.startswith("| 3,000 | 3,000 |")

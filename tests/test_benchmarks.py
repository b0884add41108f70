"""The benchmarks still run (tiny sizes); their figures are checked by running them, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.mark.slow
def test_benchmarks_run_and_print_a_table():
    # memory: too slow even when quick
    cases = ["overhead", "instructions", "rpm", "tpm", "storm", "headers", "two-processes", "fast-stop"]
    cases += ["startup", "resume"]
    result = subprocess.run(
        [sys.executable, BENCH, "--quick", *cases], capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("| case | measure")
    assert {line.split("|")[1].strip() for line in lines[3:]} == set(cases)
    assert all(line.split("|")[3].strip() for line in lines[3:])


def test_soak_runs_and_prints_its_memory_figures():
    soak = BENCH.parent / "soak.py"

    result = subprocess.run(
        [sys.executable, soak, "--rows", "3000"], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    header, _, figures = result.stdout.splitlines()
    assert "peak / at 10%" in header
    assert figures.startswith("| 3,000 | 3,000 |")

"""The short crash campaign: nothing lost, nothing twice, re-paid only what was in flight."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from crash_campaign import run_campaign  # noqa: E402


@pytest.mark.slow  # sessions of 1-2 s until at least ten were killed: 20 s or more by design
def test_repeated_sigkill_under_a_fault_storm_loses_and_duplicates_nothing(tmp_path):
    # Sessions of 1-2 s: start-up and slow start (the first request alone) take about half a second,
    # and killed sooner a session sends next to nothing (0.5-1 s needed 246 kills for 1,500 rows).
    campaign = run_campaign(tmp_path, rows=1500, seed=11, kill_after=(1.0, 2.0), latency_ms=50)

    assert campaign.kills >= 10
    assert campaign.lost == 0
    assert campaign.duplicated == 0
    assert campaign.truncated == 0
    assert campaign.wrong_errors == 0  # errors hold exactly the permanent-400 rows
    assert campaign.repaid <= campaign.repaid_bound

"""Benchmarks of `--mode batch-api --deadline` on the simulator (issue 24), each run a process of its own.

    python benchmarks/deadline_bench.py              # every case (about 3 minutes)
    python benchmarks/deadline_bench.py late met     # chosen cases
    python benchmarks/deadline_bench.py --quick      # smaller sizes

Cases (600 rows; the simulator at 1,200 RPM online; batches validating 2 s, answering on for 5 s
once asked to cancel):
  late   a batch answering 4 lines a second (it would need 150 s), `--rpm 1200 --deadline 70s`:
         seconds to the end, rows by way, rows paid twice, the bill
  met    the same rows, a batch answering 100 lines a second (about 6 s), `--deadline 10m`:
         rows by way, online requests
  kill   the `late` case killed (SIGKILL) while its batch is cancelling, then the same command:
         rows lost, written twice, paid twice; the deadline met or not
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from common import SimulatorProcess, batcher, run_cases

PROMPT = "Summarize this article in one line: {text}"
ENV_KEY = {"OPENAI_API_KEY": "sk-bench"}
SIMULATOR = ("--rpm", 1200, "--batch-validating-seconds", 2, "--batch-cancelling-seconds", 5)


def write_rows(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"a{i}", "text": f"article {i}: the council met on Tuesday"}) + "\n")
    return path


def command(path: Path, out: Path, base_url: str, deadline: str) -> list[str]:
    return batcher(
        "run", path, "-o", out, "--base-url", base_url, "--model", "gpt-4o-mini", "--prompt", PROMPT,
        "--mode", "batch-api", "--poll-interval", 1, "--rpm", 1200, "--deadline", deadline, "--quiet",
    )  # fmt: skip


def env() -> dict[str, str]:
    import os

    return {**os.environ, **ENV_KEY}


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def figures(case: str, out: Path, rows: int, ledger: dict, seconds: float) -> list[tuple[str, str, str]]:
    found = results(out)
    ids = [r["id"] for r in found]
    batch = sum(1 for r in found if r.get("batch_id"))
    paid = ledger["completions"]
    told = json.loads((out / "summary.json").read_text())["deadline"]
    return [
        (case, "seconds to the end; deadline met", f"{seconds:.1f} s; {told['met']}"),
        (case, "rows lost / written twice", f"{rows - len(set(ids))} / {len(ids) - len(set(ids))}"),
        (case, "rows by batch / online", f"{batch} ({batch / rows:.0%}) / {len(found) - batch}"),
        (
            case,
            "online requests; rows paid twice",
            f"{ledger['requests']}; {sum(n > 1 for n in paid.values())}",
        ),
        (
            case,
            "bill: batch / online / all online; saved",
            f"${told['cost_batch_usd']:.5f} / ${told['cost_online_usd']:.5f} / "
            f"${told['cost_all_online_usd']:.5f}; ${told['saving_usd']:.5f}",
        ),
    ]


def one_run(tmp: Path, quick: bool, label: str, lines_a_second: int, deadline: str) -> list:
    """One run of the rows against batches answering `lines_a_second`, with `deadline`."""
    rows = 300 if quick else 600
    path = write_rows(tmp / f"{lines_a_second}.jsonl", rows)
    sim = SimulatorProcess(*SIMULATOR, "--batch-requests-per-second", lines_a_second)
    out = tmp / f"run-{lines_a_second}"
    try:
        started = time.monotonic()
        subprocess.run(command(path, out, sim.base_url, deadline), env=env(), check=True)
        seconds = time.monotonic() - started
        ledger = sim.ledger()
    finally:
        sim.stop()
    return figures(label, out, rows, ledger, seconds)


def case_late(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    return one_run(tmp, quick, "late (70 s)", 4, "70s")


def case_met(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    return one_run(tmp, quick, "met (10 min)", 100, "10m")


def case_kill(tmp: Path, quick: bool) -> list[tuple[str, str, str]]:
    rows = 300 if quick else 600
    path = write_rows(tmp / "kill.jsonl", rows)
    sim = SimulatorProcess(*SIMULATOR, "--batch-requests-per-second", 4)
    out = tmp / "kill"
    deadline_file = out / ".batcher" / "deadline.json"
    try:
        started = time.monotonic()
        killed = subprocess.Popen(command(path, out, sim.base_url, "70s"), env=env())
        while killed.poll() is None:  # until the batch is asked to cancel
            if deadline_file.exists() and json.loads(deadline_file.read_text()).get("online_since"):
                killed.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        killed.wait()
        subprocess.run(command(path, out, sim.base_url, "70s"), env=env(), check=True)
        seconds = time.monotonic() - started
        ledger = sim.ledger()
    finally:
        sim.stop()
    return figures("kill -9 cancelling", out, rows, ledger, seconds)


CASES = {"late": case_late, "met": case_met, "kill": case_kill}


if __name__ == "__main__":
    run_cases(CASES, __doc__)

"""Crash campaign: kill -9 a real run at random moments under a fault storm, resume, repeat.

    python benchmarks/crash_campaign.py                      # 5 campaigns of 3,000 rows
    python benchmarks/crash_campaign.py --campaigns 10 --rows 5000 --seed 7

Each campaign starts `batcher simulate` (its own process, so its ledger outlives
every kill) injecting 10% 500s, 5% dropped connections, 2% unparseable 200
bodies, 1% answers slower than the client's --timeout, and a 429 storm of one
second every seven; about 1% of rows carry a permanent 400. `batcher run` is
started, SIGKILLed after a random (seeded) delay, started again, and so on until
a run ends by itself. Then it checks that every input id stands exactly once in
results or errors (errors only for the permanent 400 rows), that results hold no
duplicate id and no truncated line, and counts from the simulator's ledger the
rows paid for twice, which must stay within the requests in flight at the kills
(concurrency x kills).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import SimulatorProcess, batcher

PROMPT = "Summarize this note: {text}"
PERMANENT = "PERMANENT-400"


@dataclass
class Campaign:
    rows: int
    kills: int
    lost: int
    duplicated: int
    truncated: int
    wrong_errors: int
    repaid: int
    repaid_bound: int
    sessions_seconds: float

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.truncated or self.wrong_errors) and (
            self.repaid <= self.repaid_bound
        )


def run_campaign(
    workdir: Path,
    *,
    rows: int,
    seed: int,
    kill_after: tuple[float, float] = (0.4, 2.5),
    concurrency: int = 16,
    latency_ms: float = 20,
    max_sessions: int = 400,
) -> Campaign:
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "input.jsonl"
    permanent = set()
    with source.open("w") as f:
        for i in range(rows):
            bad = rng.random() < 0.01
            text = f"note {i} about the harbour. {PERMANENT if bad else ''}"
            if bad:
                permanent.add(str(i))
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    prompts = {str(i): PROMPT.format(text=json.loads(line)["text"]) for i, line in enumerate(source.open())}

    server = SimulatorProcess(
        "--seed",
        seed,
        "--latency-ms",
        latency_ms,
        "--error-rate",
        0.10,
        "--drop-rate",
        0.05,
        "--garbage-rate",
        0.02,
        "--slow-rate",
        0.01,
        "--slow-ms",
        3000,
        "--storm-every",
        7,
        "--storm-seconds",
        1,
        "--reject-marker",
        PERMANENT,
    )
    try:
        out = workdir / "run"
        command = batcher(
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
            concurrency,
            "--timeout",
            1,
            "--max-retries",
            30,
            "--quiet",
        )
        env = {**os.environ, "OPENAI_API_KEY": "sk-campaign"}
        kills = 0
        started = time.monotonic()
        for session in range(max_sessions):
            # Each session a cache directory of its own, so that none takes the rate another learned
            # (limits/shared.py): a session that met a storm in its first second learned a rate of a
            # few requests a second, which storms every 7 s (refusing whatever the rate) then hold
            # there, and every later session would take it: 400 sessions did not finish 1,500 rows.
            # The campaign is of kills and faults; a rate learned across runs is tested elsewhere.
            env["XDG_CACHE_HOME"] = str(workdir / "cache" / str(session))
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                process.wait(timeout=rng.uniform(*kill_after))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
                continue
            if process.returncode not in (0, 1):
                raise RuntimeError(f"run ended with {process.returncode}: {process.stderr.read()[-2000:]}")
            break
        else:
            raise RuntimeError(f"no run finished in {max_sessions} sessions")
        seconds = time.monotonic() - started
        ledger = server.ledger()
    finally:
        server.stop()

    raw = (out / "results.jsonl").read_bytes()
    truncated = 0 if raw.endswith(b"\n") or not raw else 1
    results, errors = [], []
    for name, into in (("results.jsonl", results), ("errors.jsonl", errors)):
        for line in (out / name).read_bytes().splitlines():
            try:
                into.append(json.loads(line)["id"])
            except ValueError:
                truncated += 1
    done = set(results) | set(errors)
    completions = ledger["completions"]
    repaid = sum(max(0, completions.get(prompts[row_id], 0) - 1) for row_id in prompts)
    return Campaign(
        rows=rows,
        kills=kills,
        lost=len(set(prompts) - done),
        duplicated=(len(results) - len(set(results)))
        + (len(errors) - len(set(errors)))
        + len(set(results) & set(errors)),
        truncated=truncated,
        wrong_errors=len(set(errors) ^ permanent),
        repaid=repaid,
        repaid_bound=kills * concurrency,
        sessions_seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--campaigns", type=int, default=5)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    columns = (
        "campaign",
        "rows",
        "kills",
        "lost",
        "duplicated",
        "truncated",
        "wrong errors",
        "re-paid",
        "bound",
        "seconds",
    )
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    total = Campaign(0, 0, 0, 0, 0, 0, 0, 0, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.campaigns):
            c = run_campaign(Path(tmp) / f"c{n}", rows=args.rows, seed=args.seed + n)
            print(
                f"| {n + 1} | {c.rows} | {c.kills} | {c.lost} | {c.duplicated} | {c.truncated} | "
                f"{c.wrong_errors} | {c.repaid} | {c.repaid_bound} | {c.sessions_seconds:.0f} |",
                flush=True,
            )
            for field in (
                "rows",
                "kills",
                "lost",
                "duplicated",
                "truncated",
                "wrong_errors",
                "repaid",
                "repaid_bound",
                "sessions_seconds",
            ):
                setattr(total, field, getattr(total, field) + getattr(c, field))
    print(
        f"| all | {total.rows} | {total.kills} | {total.lost} | {total.duplicated} | {total.truncated} | "
        f"{total.wrong_errors} | {total.repaid} | {total.repaid_bound} | {total.sessions_seconds:.0f} |"
    )
    sys.exit(0 if total.ok else 1)


if __name__ == "__main__":
    main()

"""Where a Ray run's CPU goes at zero latency: CPU a request, by process, over a steady window (issue 23).

    python benchmarks/ray_cpu.py                       # bare loops, then the default sides
    python benchmarks/ray_cpu.py bare                  # a bare aiohttp loop: in a process / in a Ray actor
    python benchmarks/ray_cpu.py run "" "--executor ray --workers 1 --rpm 1000000"

`run` starts `batcher run` on 80,000 rows for each side given (its extra flags; "" is one local
process), waits until it is steady (4 s local, 14 s Ray), reads every process's CPU ticks from
/proc over 6 s and divides them by the requests the simulator counted meanwhile. `bare` sends
20,000 requests from a loop with nothing of batcher in it, in this process and in a Ray async
actor, and gives each one's CPU a request. Set RAY_worker_niceness=0 to run Ray's workers at nice 0.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

from common import SimulatorProcess
from ray_bench import ENV, run, write_rows

HZ = os.sysconf("SC_CLK_TCK")
#: Processes grouped by what their command line holds (the first match).
GROUPS = ("MapWorker", "simulate", "batcher run", "LimitsKeeper", "Keeper", "raylet", "gcs_server", "ray::")
WINDOW = 6.0


def ticks() -> dict[str, tuple[str, int, int, int]]:
    """Each process's (group, user ticks, system ticks, context switches)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
            status = (proc / "status").read_text()
        except OSError:
            continue
        group = next((g for g in GROUPS if g in command), None)
        if group is None:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
        found[proc.name] = (group, int(fields[11]), int(fields[12]), switches)
    return found


def side(sim: SimulatorProcess, rows: Path, out: Path, flags: str) -> None:
    process = subprocess.Popen(run(rows, out, sim.base_url, *shlex.split(flags)), env=ENV)
    time.sleep(14 if "ray" in flags else 4)
    before, sent_before, started = ticks(), sim.ledger()["requests"], time.perf_counter()
    time.sleep(WINDOW)
    after, sent, seconds = ticks(), sim.ledger()["requests"] - sent_before, time.perf_counter() - started
    process.wait()
    totals: dict[str, Counter] = {}
    for pid, (group, user, system, switches) in after.items():
        _, user0, system0, switches0 = before.get(pid, (group, 0, 0, 0))
        totals.setdefault(group, Counter()).update(
            user=user - user0, system=system - system0, switches=switches - switches0, n=1
        )
    print(f"\n{flags or 'one process'}: {sent / seconds:,.0f} requests/s over {seconds:.1f} s")
    print("| processes | n | user us/request | system us/request | cores | switches/request |")
    print("|---|---|---|---|---|---|")
    for group, t in sorted(totals.items(), key=lambda item: -(item[1]["user"] + item[1]["system"])):
        us = 1e6 / HZ / max(sent, 1)
        cores = (t["user"] + t["system"]) / HZ / seconds
        print(
            f"| {group} | {t['n']} | {t['user'] * us:,.0f} | {t['system'] * us:,.0f} | {cores:.2f} "
            f"| {t['switches'] / max(sent, 1):.2f} |"
        )


async def bare_loop(base_url: str, n: int = 20_000, in_flight: int = 16) -> tuple[float, float]:
    """(requests/s, us of this process's CPU a request) of a bare aiohttp loop."""
    import aiohttp

    body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}]}
    todo = iter(range(n))
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-bench"}) as session:

        async def send() -> None:
            for _ in todo:
                async with session.post(base_url + "/chat/completions", json=body) as resp:
                    await resp.read()

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(send() for _ in range(in_flight)))
        return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n * 1e6


def bare(sim: SimulatorProcess) -> None:
    import ray

    here = str(Path(__file__).resolve().parent)
    env = {"env_vars": {"PYTHONPATH": here}}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)

    @ray.remote
    class Loop:
        async def go(self, base_url: str) -> tuple[float, float]:
            return await bare_loop(base_url)

    actor = Loop.remote()
    print("\n| bare aiohttp loop, 20,000 requests | requests/s | CPU us/request |\n|---|---|---|")
    for name, measure in [
        ("a process of its own", lambda: asyncio.run(bare_loop(sim.base_url))),
        ("a Ray async actor (its loop in a thread)", lambda: ray.get(actor.go.remote(sim.base_url))),
    ] * 2:
        rate, us = measure()
        print(f"| {name} | {rate:,.0f} | {us:,.0f} |")
    ray.shutdown()


def main(args: list[str]) -> None:
    what, sides = (args[0], args[1:]) if args else ("all", ["", "--executor ray --workers 3"])
    sim = SimulatorProcess()
    try:
        if what in ("bare", "all"):
            bare(sim)
        if what in ("run", "all"):
            with TemporaryDirectory() as tmp:
                rows = write_rows(Path(tmp) / "rows.jsonl", 80_000)
                for n, flags in enumerate(sides):
                    side(sim, rows, Path(tmp) / f"out-{n}", flags)
    finally:
        sim.stop()


if __name__ == "__main__":
    main(sys.argv[1:])

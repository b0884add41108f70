"""What the benchmark scripts share: the batcher command, and the simulator as a process of its own."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import aiohttp


def batcher(*args: object) -> list[str]:
    """The command line of `batcher ARGS` in this interpreter."""
    return [sys.executable, "-m", "batcher", *[str(a) for a in args]]


class SimulatorProcess:
    """`batcher simulate` on a free port, in its own process (so its ledger outlives any client)."""

    def __init__(self, *flags: object, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(
            batcher("simulate", "--port", "0", *flags), stderr=subprocess.PIPE, text=True, env=env
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


Case = Callable[[Path, bool], list[tuple[str, str, str]]]


def run_cases(cases: dict[str, Case], doc: str | None) -> None:
    """A benchmark script's command line: the cases asked for (all by default), `--quick` for tiny
    sizes; one markdown table of (case, measure, figure) printed at the end."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", help=f"any of {', '.join(cases)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the cases run")
    args = parser.parse_args()
    unknown = set(args.cases) - set(cases)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", file=sys.stderr
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases or cases:
            found = cases[name](Path(tmp), args.quick)
            for row in found:  # as each case ends too: a later case that fails loses nothing
                print("  " + " | ".join(row), file=sys.stderr, flush=True)
            rows += found
    print("| case | measure | figure |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")

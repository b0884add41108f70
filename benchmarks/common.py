"""What the benchmark scripts share: the batcher command, and the simulator as a process of its own."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

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

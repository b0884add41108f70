"""The house rules of docs/architecture.md that a linter does not check: small rooms, few entry
modules, and a configuration that loads no HTTP client, server or simulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "batcher"


def test_every_module_is_400_lines_or_less():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def test_the_top_of_the_package_holds_at_most_12_modules_and_every_package_says_its_job():
    assert len(list(PACKAGE.glob("*.py"))) <= 12
    for init in PACKAGE.rglob("__init__.py"):
        text = init.read_text(encoding="utf-8")
        assert text.startswith('"""') and len(text.split('"""')[1].splitlines()) >= 3, init


def test_reading_a_job_loads_neither_the_http_client_nor_the_simulator():
    code = (
        "import sys, batcher, batcher.job\n"
        "loaded = [m for m in sys.modules if m.startswith(('aiohttp', 'batcher.simulator.server', 'ray'))]\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

"""A Ray run's standard error less Ray's known false alarms (transports/ray/quiet.py), at the level of
file descriptor 2, where Ray's core writes: in a real process."""

from __future__ import annotations

import subprocess
import sys

from batcher.transports.ray.quiet import FALSE_ALARMS

WRITER = """
import os, sys
from batcher.transports.ray.quiet import without_false_alarms
alarm, = sys.argv[1:]
print("before", file=sys.stderr, flush=True)
with without_false_alarms():
    os.write(2, b"[2026-12-06 02:08:20,987 E 7571 7781] core_worker.cc:2465: " + alarm.encode() + b".\\n")
    os.write(2, b"[2026-12-06 02:08:21,000 E 7571 7781] core_worker.cc:1: a real error\\n")
    sys.stderr.write("\\rrows: 10%")  # a progress bar's redraw, no newline: not held back
    sys.stderr.flush()
    print(" and batcher's own line", file=sys.stderr, flush=True)
print("after", file=sys.stderr, flush=True)
"""


def test_ray_s_false_alarm_is_dropped_and_every_other_line_kept_in_order():
    alarm = FALSE_ALARMS[0].decode()
    done = subprocess.run([sys.executable, "-c", WRITER, alarm], capture_output=True, timeout=30)

    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        b"before\n"
        b"[2026-12-06 02:08:21,000 E 7571 7781] core_worker.cc:1: a real error\n"
        b"\rrows: 10% and batcher's own line\n"
        b"after\n"
    )

"""``flowctl serve`` under cProfile, switched on and off by signals.

``python -m bench.cprofile_serve FILE`` serves as ``flowctl serve`` does; SIGUSR1 starts
profiling its main thread (the event loop), in that thread's CPU time, SIGUSR2 stops it
and writes the stats to FILE (``python -m pstats FILE``).
``python -m bench.procedures --profile FILE`` runs the server this way and profiles the
peak log-in window only, not the start or the registrations. The hashing threads are
not profiled: their time is the hash's.
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from types import FrameType

from web.cli import main as flowctl


def main() -> int:
    out = sys.argv[1]
    # CPU time of the loop's thread: on a machine shared with other work, wall time
    # would charge a function with whatever ran while it waited for a core.
    profiler = cProfile.Profile(time.thread_time)

    def on(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def off(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, off)
    return flowctl(["serve"])


if __name__ == "__main__":
    raise SystemExit(main())

"""The replica of tests/integration/test_shutdown.py: one sync job whose runs outlast its interval.

Each run appends ``start|end PID TOKEN MONOTONIC`` to the file named by
``SHUTDOWN_TEST_LEDGER``, one ``O_APPEND`` write per line so that lines from
several processes never interleave (``CLOCK_MONOTONIC`` is one clock for the
whole host). ``SHUTDOWN_TEST_RUN`` is how long a run takes in seconds, or
``hang`` for a run that never returns.
"""

from __future__ import annotations

import os
import threading
import time

from leaderlib import JobContext, Service


def _note(ledger: str, event: str, context: JobContext) -> None:
    line = f"{event} {os.getpid()} {context.fencing_token} {time.monotonic():.6f}\n"
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def service() -> Service:
    ledger = os.environ["SHUTDOWN_TEST_LEDGER"]
    run = os.environ.get("SHUTDOWN_TEST_RUN", "2.5")
    replica = Service("shutdown-test")

    @replica.job(every=1, name="slow")
    def slow(context: JobContext) -> None:
        _note(ledger, "start", context)
        if run == "hang":
            threading.Event().wait()  # never returns, and ignores ctx.lost
        time.sleep(float(run))
        _note(ledger, "end", context)

    return replica

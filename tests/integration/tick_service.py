"""The replica of the tick tests: ``leaderlib run tests.integration.tick_service:service``.

One job every second with ``misfire_grace=5``; each run appends one JSON line
(tick, replica, fencing token) to ``TICKS_LEDGER`` before anything else, with
O_APPEND, so lines from several processes never interleave.
"""

from __future__ import annotations

import json
import os

from leaderlib import JobContext, Service

GRACE = 5.0


def service() -> Service:
    replica = Service("ticks")
    ledger, name = os.environ["TICKS_LEDGER"], os.environ["CHAOS_REPLICA"]

    @replica.job(every=1, name="tick", misfire_grace=GRACE)
    def tick(ctx: JobContext) -> None:
        line = json.dumps({"tick": ctx.scheduled_at.isoformat(), "replica": name, "token": ctx.fencing_token})
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    return replica

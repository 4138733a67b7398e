"""The origin's message-polling service, ported to leaderlib.

In the NestJS platform this came from, every replica ran these crons and a
"cluster-safe" decorator kept all but one from acting. Here the service
runs as many replicas as you like and only the leader runs the jobs:

    leaderlib run examples/cron_service.py:service                 # SQLite, this host
    leaderlib run examples/cron_service.py:service --backend redis://127.0.0.1:6379/0
    LEADERLIB_BACKEND=kubernetes://prod leaderlib run examples/cron_service.py:service

Start it twice in two terminals, stop the leader with Ctrl-C, and watch the
other take over at once.
"""

from __future__ import annotations

import logging

from leaderlib import JobContext, Service

logger = logging.getLogger("cron_service")

service = Service("message-poller")


@service.job(cron="*/10 * * * * *", name="poll-messages")  # NestJS CronExpression.EVERY_10_SECONDS
async def poll_messages(ctx: JobContext) -> None:
    """Fetch pending messages and hand them on. The fencing token goes with every write,
    so a downstream store can reject a paused ex-leader's late batch."""
    ctx.check()
    logger.info(
        "polling messages", extra={"fencing_token": ctx.fencing_token, "tick": ctx.scheduled_at.isoformat()}
    )


@service.job(cron="0 * * * * *", name="health-check")  # CronExpression.EVERY_MINUTE
def health_check(ctx: JobContext) -> None:
    """Check the message broker; a sync job runs in a worker thread."""
    logger.info("broker healthy", extra={"fencing_token": ctx.fencing_token})


# Weekdays at 08:00 UTC. A leader that dies at 08:00 (or every replica restarting) leaves
# about a lease (10 s) without a leader, and without a grace that day's report would
# simply be skipped. misfire_grace records each run in the election's store (two writes
# per run, once a day), so whoever leads next sends a missed report late, once; and a
# report recorded as started is never sent again by another replica, whatever its clock
# says. More than an hour late it is no longer worth sending: that tick is logged and
# counted as a misfire instead.
@service.job(cron="0 0 8 * * 1-5", name="daily-report", misfire_grace=3600)
async def daily_report(ctx: JobContext) -> None:
    """Send yesterday's delivery report, once, from whichever replica leads at 08:00
    (or, after a failover, a little later: ``ctx.scheduled_at`` is still the 08:00 tick)."""
    logger.info("sending daily report", extra={"fencing_token": ctx.fencing_token})

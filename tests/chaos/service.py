"""The replica of the chaos campaign: ``leaderlib run tests.chaos.service:service``.

One async interval job (``CHAOS_INTERVAL`` s). Each run is a leader acting:

1. ``ctx.check()``, then an ``act`` write to the ledger with ``ctx.fencing_token``;
2. ``CHAOS_WORK`` seconds of "work" (an await);
3. a ``late`` write WITHOUT checking again, as a request already in flight
   would land: the write fencing tokens exist for. A pause during the work
   (SIGSTOP, a suspend) makes it arrive after a newer leader has written;
   the ledger must reject it.

Every write carries ``ctx.is_leader()`` as judged just before it was sent,
and the replica's boot-time stamp taken before that judgement.

The elector's transitions ("became leader", "stopped leading", and each
"renewed lease") are caught by a logging handler and sent to the ledger as
events with this process's stamps; "became leader" also writes the new
term's token to the ledger at once (as a real leader would register its
token with the resources it guards before using them), so anything an older
term sends later is fenced off even before the new leader's first tick.
Only public entry points: the Service API, JobContext and log messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from leaderlib import JobContext, Leadership, Service

from .ledger import LedgerClient, boottime

_TRANSITIONS = {"became leader": "became", "stopped leading": "stopped", "renewed lease": "renewed"}


class _Transitions(logging.Handler):
    """Sends the elector's transitions to the ledger, stamped as they are logged."""

    def __init__(self, ledger: LedgerClient) -> None:
        super().__init__(logging.DEBUG)
        self.ledger = ledger
        self.leadership: Leadership | None = None
        """The latest term a run saw: its exact deadline, once a run has started."""

    def emit(self, record: logging.LogRecord) -> None:
        # leaderlib appends the details to the message text: match its constant start.
        message = str(record.msg)
        kind = next((k for m, k in _TRANSITIONS.items() if message.startswith(m)), None)
        if kind is None:
            return
        token = getattr(record, "fencing_token", None)
        known = self.leadership if self.leadership and self.leadership.fencing_token == token else None
        if kind == "became" and token is not None:
            self.ledger.write("term", token, boottime(), time.monotonic(), believed=True)
        self.ledger.event(
            kind,
            token=token,
            reason=getattr(record, "reason", None),
            valid_until=known.valid_until if known is not None else None,
        )


def service() -> Service:
    replica = Service("chaos")
    ledger = LedgerClient(os.environ["CHAOS_LEDGER"], replica.election, os.environ["CHAOS_REPLICA"])
    transitions = _Transitions(ledger)
    elector_log = logging.getLogger("leaderlib")
    elector_log.addHandler(transitions)
    # Renewals are logged at DEBUG: the handler needs them for each term's deadline.
    elector_log.setLevel(logging.DEBUG)
    work = float(os.environ.get("CHAOS_WORK", "0.1"))

    def write(kind: str, ctx: JobContext) -> None:
        boot, mono = boottime(), time.monotonic()
        believed = ctx.is_leader()
        ledger.write(
            kind,
            ctx.fencing_token,
            boot,
            mono,
            tick=ctx.scheduled_at.isoformat(),
            believed=believed,
            valid_until=ctx.leadership.valid_until,
        )

    @replica.job(every=float(os.environ.get("CHAOS_INTERVAL", "0.3")), name="tick")
    async def tick(ctx: JobContext) -> None:
        transitions.leadership = ctx.leadership
        ctx.check()
        write("act", ctx)
        await asyncio.sleep(work)
        write("late", ctx)

    return replica

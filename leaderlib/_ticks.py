"""Which tick a job runs next, and the run records that let ticks survive a failover.

A job added with ``misfire_grace`` has its runs recorded in the election's
store (:meth:`Lease.record_run`): the leader writes the run's start before
the job is called and its end after. The record is fenced by the term, so
only the current leader's writes land, and it is what the next leader plans
from:

- a tick after the recorded one that is already due, by no more than the
  grace, is run late, once (each in turn, or only the latest with
  ``coalesce``); older ones are misfires, counted and logged;
- a tick at or before the recorded one is never started again, whatever this
  replica's wall clock says: a leader whose clock ran ahead ran it already.

Ticks are at most once: a run whose start was recorded and whose leader then
died is not run again (its record shows no outcome).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from ._clock import Clock
from ._elector import Leadership
from ._errors import BackendError, BackendUnavailable, CorruptLeaseRecord, LeaseLost
from ._logging import get_logger
from ._triggers import Trigger
from .backends import JobRun, Lease

__all__ = ["Plan", "count_ticks", "plan_tick", "read_runs", "record_end", "record_start"]

logger = get_logger("leaderlib.runtime")

#: At most this many ticks are counted when reporting misfires or ticks already
#: run: a 1-second job down for a day would otherwise cost 86,400 trigger steps.
MAX_COUNTED = 10_000


@dataclasses.dataclass(frozen=True)
class Plan:
    """The next tick to run, and what was passed over to get there."""

    tick: dt.datetime
    late: bool
    """True if ``tick`` was already due when planned: a missed tick, run late."""
    misfired: int = 0
    """Missed ticks passed over: later than the grace, or coalesced into ``tick``."""
    latest_misfire: dt.datetime | None = None


def count_ticks(trigger: Trigger, after: dt.datetime, until: dt.datetime) -> int:
    """Ticks in ``(after, until]``, counted up to :data:`MAX_COUNTED`."""
    count, tick = 0, trigger.next_after(after)
    while tick <= until and count < MAX_COUNTED:
        count, tick = count + 1, trigger.next_after(tick)
    return count


def plan_tick(
    trigger: Trigger, last: dt.datetime | None, now: dt.datetime, grace: float, *, coalesce: bool
) -> Plan:
    """The tick to run after ``last`` (the last one started), seen at wall time ``now``.

    No ``last`` (the job never ran): the next tick from now, nothing is
    missed. Otherwise the first tick after ``last`` that is due within
    ``grace`` seconds of ``now`` (with ``coalesce``, the latest such one),
    else the next tick still to come; a ``last`` ahead of ``now`` plans from
    ``last``, so no tick is named twice.
    """
    if last is None or last >= now:
        return Plan(trigger.next_after(now if last is None else last), late=False)
    oldest_in_grace = now - dt.timedelta(seconds=grace)
    misfired, latest_misfire = 0, None
    tick = trigger.next_after(last)
    chosen: dt.datetime | None = None
    while tick <= now:
        if tick < oldest_in_grace:
            misfired, latest_misfire = misfired + 1, tick
            if misfired >= MAX_COUNTED:  # skip ahead: the rest are misfires too
                tick = trigger.next_after(oldest_in_grace - dt.timedelta(microseconds=1))
                continue
        else:
            if chosen is not None:  # coalesce: passed over for a later one
                misfired, latest_misfire = misfired + 1, chosen
            chosen = tick
            if not coalesce:
                break
        tick = trigger.next_after(tick)
    if chosen is not None:
        return Plan(chosen, late=True, misfired=misfired, latest_misfire=latest_misfire)
    return Plan(tick, late=False, misfired=misfired, latest_misfire=latest_misfire)


async def read_runs(
    lease: Lease, leadership: Leadership, clock: Clock, retry: float
) -> dict[str, JobRun] | None:
    """The election's run records at the start of a term, or None if they cannot be known.

    Retries a store that is down while the term lasts. An unreadable record is
    logged at ERROR and read as none (the jobs run on, and their next run
    replaces it): refusing to run would lose every tick for a bad record.
    """
    while leadership.is_valid():
        try:
            return await lease.last_runs()
        except CorruptLeaseRecord as exc:
            logger.error(
                "job run records unreadable; planning as if the jobs never ran",
                extra={"election": leadership.election, "error": str(exc)},
            )
            return {}
        except BackendUnavailable as exc:
            logger.warning(
                "job run records not read yet; retrying",
                extra={"election": leadership.election, "error": str(exc), "retry_in": retry},
            )
            await clock.sleep(retry)
    return None


async def record_start(lease: Lease, run: JobRun, leadership: Leadership, clock: Clock, retry: float) -> bool:
    """Record a run's start before the job is called; False if it must not run.

    A store that is down is retried while the term lasts, so a blip delays the
    run rather than losing the tick; a refused write (another term is current)
    means this replica no longer leads.
    """
    delay = min(0.05, retry)
    while leadership.is_valid():
        try:
            await lease.record_run(run)
            return True
        except LeaseLost as exc:
            logger.warning(
                "tick not run: the store refused its start record (another term is current)",
                extra={
                    "job": run.job,
                    "tick": run.tick.isoformat(),
                    "election": leadership.election,
                    "error": str(exc),
                },
            )
            return False
        except BackendUnavailable as exc:
            logger.warning(
                "recording a run's start failed; retrying while the term lasts",
                extra={
                    "job": run.job,
                    "tick": run.tick.isoformat(),
                    "election": leadership.election,
                    "error": str(exc),
                },
            )
            await clock.sleep(delay)
            delay = min(delay * 2, retry)
    logger.warning(
        "tick not run: the term ended before its start could be recorded",
        extra={"job": run.job, "tick": run.tick.isoformat(), "election": leadership.election},
    )
    return False


async def record_end(lease: Lease, run: JobRun) -> None:
    """Record a run's outcome; one attempt, since the term may be over (the record then keeps its start)."""
    try:
        await lease.record_run(run)
    except BackendError as exc:  # refused (LeaseLost), unreachable, or anything else the store said
        logger.warning(
            "a run's end was not recorded; its record shows the start only",
            extra={"job": run.job, "tick": run.tick.isoformat(), "outcome": run.outcome, "error": str(exc)},
        )

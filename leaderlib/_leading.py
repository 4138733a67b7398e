"""The leader's work for one term: schedule the term's jobs and invoke their runs.

A run belongs to the term it started in: the leader's work returns, and so
lets the elector release the lease, only once no run of the term can still
act (async runs ended, sync runs' threads returned) or once the term's own
deadline has passed, after which the elector never releases. A sync run's
thread cannot be stopped; one that outlives a stop is reported, and the lease
under it left to expire.

Ticks are named by the wall clock, but no sleep toward one lasts longer than
``_WALL_RECHECK``: a wall clock stepped either way is followed within that.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import inspect
from collections.abc import Callable
from typing import Any

from ._clock import Clock, wait_for
from ._config import ElectionConfig
from ._errors import NotLeader
from ._jobs import Job, JobContext, RunThread, outcome_of, pending_runs
from ._leadership import Leadership
from ._logging import get_logger
from ._telemetry import instruments, span
from ._ticks import Plan, count_ticks, plan_tick, read_runs, record_end, record_start
from .backends import Backend, JobRun, Lease

__all__ = ["LeaderWork"]

logger = get_logger("leaderlib.runtime")

#: The longest sleep toward a tick (seconds). The wall clock that names ticks
#: is read again after each such sleep, so a clock stepped back and corrected,
#: or stepped forward, is followed within this long rather than a whole tick
#: interval (or the size of the step) later.
_WALL_RECHECK = 1.0


class LeaderWork:
    """Runs a service's jobs for one term: launches each job at its ticks while the
    term lasts and launching goes on (``stopping()`` false), and ends the term's runs.

    ``backend`` is the one the service runs on: its lease for the term's election
    holds the jobs' run records. ``service`` names the sync runs' threads.
    """

    def __init__(
        self,
        jobs: list[Job],
        leadership: Leadership,
        *,
        service: str,
        backend: Backend,
        config: ElectionConfig,
        clock: Clock,
        stopping: Callable[[], bool],
    ) -> None:
        self.jobs = jobs
        self.leadership = leadership
        self.service = service
        self.backend = backend
        self.config = config
        self.clock = clock
        self.stopping = stopping

    async def run(self) -> None:
        """Run the term's jobs; return once the term's runs are over (see :meth:`_end_runs`)."""
        # The elector cancels this when the term ends, and releases the lease only
        # after it returns: so it returns only once the term's runs are over.
        try:
            if any(job.recorded for job in self.jobs) and not await self._plan_from_records():
                return  # the term ended before the records could be read
            async with asyncio.TaskGroup() as group:
                for job in self.jobs:
                    group.create_task(self._schedule(job), name=f"leaderlib-job-{job.name}")
            await self.leadership.lost.wait()  # stopped launching; the runs still belong to the term
        finally:
            await self._end_runs()

    async def _end_runs(self) -> None:
        """Return once no run of this term can act: async runs cancelled and ended, sync
        runs' threads returned; or, failing that, once the term's deadline has passed,
        after which the elector never releases the lease (it expires under the run)."""
        leadership = self.leadership
        for job in self.jobs:
            job.queued = None
            if job.running is not None and not job.running.done():
                job.running.cancel()
        pending = pending_runs(self.jobs)
        while pending and (remaining := leadership.valid_until - self.clock.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, asyncio.wait(pending), remaining)
            pending = pending_runs(self.jobs)
        if pending:
            logger.warning(
                "job runs outlived the term; the lease is left to expire",
                extra={
                    "election": leadership.election,
                    "fencing_token": leadership.fencing_token,
                    "jobs": [job.name for job in self.jobs if job.busy()],
                },
            )

    def _lease(self) -> Lease:
        return self.backend.lease(self.leadership.election)

    async def _plan_from_records(self) -> bool:
        """Start each recorded job's plan from the store's run record; False if the term ended first."""
        leadership = self.leadership
        runs = await read_runs(self._lease(), leadership, self.clock, self.config.retry_period)
        if runs is None:
            return False
        now = self.clock.wall()
        for job in self.jobs:
            if not job.recorded:
                continue
            last = runs.get(job.name)
            job.last_tick = None if last is None else last.tick
            if last is not None and last.tick > now:
                ahead = count_ticks(job.trigger, now, last.tick)
                attributes = {"job": job.name, "election": leadership.election}
                instruments.ticks_already_run.add(ahead, attributes)
                logger.warning(
                    "the job's last run was recorded for a tick ahead of this replica's clock; "
                    "the ticks up to it count as run",
                    extra={
                        **attributes,
                        "recorded_tick": last.tick.isoformat(),
                        "recorded_by": last.identity,
                        "ahead_seconds": round((last.tick - now).total_seconds(), 3),
                        "ticks": ahead,
                    },
                )
        return True

    def _plan(self, job: Job) -> Plan:
        now = self.clock.wall()
        if job.misfire_grace is None:
            # After the last tick reached: a wall clock set back must not name it again.
            return Plan(
                job.trigger.next_after(now if job.last_tick is None else max(now, job.last_tick)), late=False
            )
        return plan_tick(job.trigger, job.last_tick, now, job.misfire_grace, coalesce=job.coalesce)

    async def _schedule(self, job: Job) -> None:
        """Launch the job at each tick while launching and the leadership lasts."""
        leadership = self.leadership
        while not self.stopping():
            plan = self._plan(job)
            if plan.misfired:
                self._misfired(job, plan)
            await self._sleep_until(plan.tick)
            if self.stopping():
                return  # stopping: the runs get the grace; _end_runs ends them with the term
            if not leadership.is_valid():
                return  # a paused process: the term ended while it slept
            if (plan.late or job.catching_up) and job.busy():
                # A missed tick runs after the run before it, and so does a tick that
                # came due while a missed one ran late (its lateness is the catch-up's,
                # not an overlap for ``overlap`` to skip); then plan again, with the grace.
                await asyncio.wait(job.pending())
                continue
            job.last_tick = plan.tick
            job.catching_up = plan.late
            if plan.late:
                instruments.ticks_recovered.add(1, {"job": job.name, "election": leadership.election})
                logger.info(
                    "missed tick run late",
                    extra={
                        "job": job.name,
                        "tick": plan.tick.isoformat(),
                        "election": leadership.election,
                        "late_seconds": round((self.clock.wall() - plan.tick).total_seconds(), 3),
                    },
                )
            self._launch(job, plan.tick)

    def _misfired(self, job: Job, plan: Plan) -> None:
        """Report missed ticks passed over, and move past them (they are not recorded)."""
        assert plan.latest_misfire is not None
        attributes = {"job": job.name, "election": self.leadership.election}
        instruments.misfires.add(plan.misfired, attributes)
        logger.warning(
            "missed ticks not run: later than the job's misfire_grace, or coalesced into a later tick",
            extra={
                **attributes,
                "ticks": plan.misfired,
                "latest": plan.latest_misfire.isoformat(),
                "misfire_grace": job.misfire_grace,
            },
        )
        job.last_tick = plan.latest_misfire

    async def _sleep_until(self, tick: dt.datetime) -> None:
        """Return when the wall clock reads ``tick`` or later, or launching stops."""
        # Always yield once, so a tick that is already due cannot starve the loop.
        await asyncio.sleep(0)
        while not self.stopping() and (delay := (tick - self.clock.wall()).total_seconds()) > 0:
            # Sleep in short steps, since the wall clock may be stepped meanwhile;
            # each step is measured on the monotonic clock.
            await self.clock.sleep(min(delay, _WALL_RECHECK))

    def _launch(self, job: Job, tick: dt.datetime) -> None:
        election = self.leadership.election
        if job.busy():
            if job.overlap == "queue" and job.queued is None:
                job.queued = tick
                return
            instruments.job_skipped.add(1, {"job": job.name, "election": election})
            logger.warning(
                "tick skipped: previous run still going",
                extra={"job": job.name, "tick": tick.isoformat(), "election": election},
            )
            return
        job.running = asyncio.create_task(self._run_once(job, tick), name=f"leaderlib-run-{job.name}")

    async def _run_once(self, job: Job, tick: dt.datetime) -> None:
        while True:
            await self._invoke(job, tick)
            if job.queued is None or self.stopping() or not self.leadership.is_valid():
                return
            tick, job.queued = job.queued, None

    async def _invoke(self, job: Job, tick: dt.datetime) -> None:
        leadership = self.leadership
        context = JobContext(
            job=job.name,
            election=leadership.election,
            identity=leadership.identity,
            fencing_token=leadership.fencing_token,
            scheduled_at=tick,
            leadership=leadership,
        )
        details: dict[str, str | int] = {
            "job": job.name,
            "tick": tick.isoformat(),
            "election": leadership.election,
            "identity": leadership.identity,
            "fencing_token": leadership.fencing_token,
        }
        args = (context,) if job.takes_context else ()
        run: JobRun | None = None
        if job.recorded:
            run = await self._record_start(job, tick)
            if run is None:
                return
        started = self.clock.monotonic()
        logger.info("job run started", extra=details)
        if not inspect.iscoroutinefunction(job.func):
            with span("leaderlib.job", details):
                await self._in_thread(job, args, details, started, run)  # it reports the run's end
            return
        outcome = "error"
        try:
            with span("leaderlib.job", details):
                await job.func(*args)
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except NotLeader:
            outcome = "cancelled"
        except Exception:
            logger.exception("job run failed", extra=details)
        finally:
            self._finished(job, details, outcome, started, run)

    async def _record_start(self, job: Job, tick: dt.datetime) -> JobRun | None:
        """Record the run's start in the store before the job is called; None: do not run it."""
        leadership = self.leadership
        if job.recording is not None:
            # The previous run's end is written first: landing after this start, it
            # would make the record show the older tick, and the next leader rerun this one.
            await asyncio.shield(job.recording)
        run = JobRun(
            job=job.name,
            tick=tick,
            fencing_token=leadership.fencing_token,
            identity=leadership.identity,
            started_at=self.clock.wall(),
            next_tick=job.trigger.next_after(tick),
        )
        if await record_start(self._lease(), run, leadership, self.clock, self.config.retry_period):
            return run
        return None

    async def _in_thread(
        self,
        job: Job,
        args: tuple[Any, ...],
        details: dict[str, str | int],
        started: float,
        run: JobRun | None,
    ) -> None:
        """Run a sync job in a thread of its own; return when it returns.

        Cancelled (the term ended), this returns at once but the thread goes on:
        it stays ``job.thread`` until it returns, so no other run of the job
        starts and the term's end waits for it. Its end is reported when it
        comes, whichever way.
        """
        context = contextvars.copy_context()  # the run's span, for spans the job makes
        thread = RunThread(lambda: context.run(job.func, *args), name=f"leaderlib-{self.service}-{job.name}")

        def returned(done: asyncio.Future[BaseException | None]) -> None:
            if job.thread is thread:
                job.thread = None
            self._finished(job, details, outcome_of(done.result(), details), started, run)

        job.thread = thread
        thread.done.add_done_callback(returned)
        thread.start()
        await asyncio.shield(thread.done)

    def _finished(
        self, job: Job, details: dict[str, str | int], outcome: str, started: float, run: JobRun | None
    ) -> None:
        duration = self.clock.monotonic() - started
        attributes = {"job": details["job"], "election": details["election"]}
        instruments.job_runs.add(1, {**attributes, "outcome": outcome})
        instruments.job_duration.record(duration, attributes)
        logger.info("job run finished", extra={**details, "outcome": outcome, "duration": round(duration, 6)})
        if run is not None:
            # A task of its own: this may run in a cancelled run's finally, or a callback.
            ended = dataclasses.replace(run, outcome=outcome, duration=round(duration, 6))
            job.recording = asyncio.ensure_future(record_end(self._lease(), ended))

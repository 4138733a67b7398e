"""The service runtime: jobs that run only while this replica leads.

``Service`` holds jobs and one elector (leader mode: the leader runs every
job) or one elector per job (per-job mode: election ``SERVICE.JOB``, so jobs
spread across replicas). Losing leadership stops new runs and cancels
running ones; the replica keeps campaigning. A graceful stop lets running
runs finish within ``shutdown_grace``, then releases the lease.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import enum
import inspect
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import schedule

from ._clock import Clock, SystemClock, wait_for
from ._config import ElectionConfig, load_settings
from ._elector import LeaderElector, Leadership
from ._errors import ConfigError, NotLeader
from ._health import serve_health
from ._telemetry import instruments, tracer
from ._triggers import Trigger, make_trigger
from .backends import Backend, backend_from_url

__all__ = ["JobContext", "Mode", "Service"]

logger = logging.getLogger("leaderlib.runtime")

F = TypeVar("F", bound=Callable[..., Any])
Overlap = Literal["skip", "queue"]


class Mode(enum.Enum):
    """How a service's jobs map to elections."""

    LEADER = "leader"  # one election per service; its leader runs every job
    PER_JOB = "per-job"  # one election per job, so jobs spread across replicas


@dataclasses.dataclass(frozen=True)
class JobContext:
    """What a job run knows about itself. Pass it on to anything that writes.

    ``fencing_token`` strictly increases with each leadership: a downstream
    store that remembers the largest token it has seen and rejects smaller
    ones makes a paused ex-leader's late writes harmless.
    """

    job: str
    election: str
    identity: str
    fencing_token: int
    scheduled_at: dt.datetime
    """The tick this run is for (the same instant on every replica)."""
    leadership: Leadership

    @property
    def lost(self) -> asyncio.Event:
        """Set when leadership ends; async runs are also cancelled then."""
        return self.leadership.lost

    def is_leader(self) -> bool:
        """True while the leadership this run started under is still valid."""
        return self.leadership.is_valid()

    def check(self) -> None:
        """Raise :class:`NotLeader` if leadership has ended; call before each side effect."""
        self.leadership.check()


@dataclasses.dataclass
class _Job:
    name: str
    func: Callable[..., Any]
    trigger: Trigger
    overlap: Overlap
    takes_context: bool
    running: asyncio.Task[None] | None = None
    queued: dt.datetime | None = None
    """The tick waiting for the running run to end (``overlap="queue"``)."""


class Service:
    """A service's jobs, run once per tick by whichever replica leads.

    ``backend`` is a URL (``sqlite:///path``, ``redis://...``, ``kubernetes://ns``)
    or a :class:`Backend`; left out, it comes from ``LEADERLIB_BACKEND`` or the
    embedded default. ``config`` likewise from the environment if left out.
    """

    def __init__(
        self,
        name: str,
        *,
        backend: str | Backend | None = None,
        config: ElectionConfig | None = None,
        mode: Mode | str = Mode.LEADER,
        clock: Clock | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError(f"service name must be a non-empty string, got {name!r}", field="name")
        try:
            self.mode = Mode(mode)
        except ValueError:
            raise ConfigError(f"must be 'leader' or 'per-job', got {mode!r}", field="mode") from None
        self.name = name
        settings = load_settings(backend=backend if isinstance(backend, str) else None)
        self.election = settings.election or name
        """The election this service campaigns in: ``LEADERLIB_ELECTION`` if set, else its name
        (so two deployments sharing a store can be kept apart without a code change)."""
        self.backend_url = settings.backend if not isinstance(backend, Backend) else backend.scheme + "://"
        self.config = config or settings.config
        self.clock = clock or SystemClock()
        self._backend = backend if isinstance(backend, Backend) else None
        self._jobs: dict[str, _Job] = {}
        self._electors: list[LeaderElector] = []
        self._launching = True
        self._stop_requested: asyncio.Event | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # -- registering jobs ---------------------------------------------------------

    def job(
        self,
        *,
        cron: str | None = None,
        every: float | dt.timedelta | None = None,
        name: str | None = None,
        overlap: Overlap = "skip",
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`add_job`."""

        def register(func: F) -> F:
            self.add_job(func, cron=cron, every=every, name=name, overlap=overlap)
            return func

        return register

    def add_job(
        self,
        func: Callable[..., Any],
        *,
        cron: str | None = None,
        every: float | dt.timedelta | None = None,
        name: str | None = None,
        overlap: Overlap = "skip",
    ) -> None:
        """Run ``func`` on the leader at each tick of ``cron`` (six fields, seconds first,
        or five) or ``every`` seconds. ``func`` may be sync (run in a thread) or async;
        if it takes an argument it gets a :class:`JobContext`. A run still going at the
        next tick makes that tick be skipped (``overlap="skip"``, counted) or run once
        the current run ends (``"queue"``)."""
        job_name = name or getattr(func, "__name__", None)
        if not job_name or not isinstance(job_name, str):
            raise ConfigError("the job needs a name=...", field="name")
        if job_name in self._jobs:
            raise ConfigError(f"a job named {job_name!r} is already registered", field="name")
        if overlap not in ("skip", "queue"):
            raise ConfigError(f"overlap must be 'skip' or 'queue', got {overlap!r}", field="overlap")
        try:
            trigger = make_trigger(cron=cron, every=every)
        except ConfigError as exc:
            raise ConfigError(f"job {job_name!r}: {exc}", field=exc.field) from None
        self._jobs[job_name] = _Job(job_name, func, trigger, overlap, _takes_context(func))

    def add_schedule(
        self, scheduler: schedule.Scheduler, *, poll: float = 1.0, name: str = "schedule"
    ) -> None:
        """Run a ``schedule.Scheduler``'s pending jobs, on the leader only, every ``poll`` seconds."""
        if not isinstance(scheduler, schedule.Scheduler):
            raise ConfigError(f"expected a schedule.Scheduler, got {type(scheduler).__name__}", field=name)

        def run_pending() -> None:
            scheduler.run_pending()

        self.add_job(run_pending, every=poll, name=name)

    @property
    def jobs(self) -> list[str]:
        """The registered jobs' names."""
        return list(self._jobs)

    def describe(self) -> list[tuple[str, str]]:
        """(job, trigger) pairs, for logs and the CLI."""
        return [(job.name, job.trigger.describe()) for job in self._jobs.values()]

    # -- state ---------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this replica leads (any of its elections, in per-job mode)."""
        return any(elector.is_leader for elector in self._electors)

    def healthy(self) -> bool:
        """False when a leader has outlived its renew deadline: for liveness probes."""
        return all(elector.healthy() for elector in self._electors)

    def election_for(self, job: str) -> str:
        """The election a job runs under."""
        return self.election if self.mode is Mode.LEADER else f"{self.election}.{job}"

    # -- running -------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign and run jobs while leading, until :meth:`stop` (or cancellation)."""
        if not self._jobs:
            raise ConfigError(
                f"service {self.name!r} has no jobs; add some with @service.job(...)", field="jobs"
            )
        self._stop_requested = asyncio.Event()
        owns_backend = self._backend is None
        backend = self._backend or backend_from_url(self.backend_url)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(4, len(self._jobs)), thread_name_prefix=f"leaderlib-{self.name}"
        )
        groups = (
            {self.election: list(self._jobs.values())}
            if self.mode is Mode.LEADER
            else {self.election_for(job.name): [job] for job in self._jobs.values()}
        )
        self._electors = [
            LeaderElector(
                election,
                backend,
                self.config,
                clock=self.clock,
                on_started_leading=self._leader_work(jobs),
            )
            for election, jobs in groups.items()
        ]
        logger.info(
            "service starting",
            extra={
                "service": self.name,
                "mode": self.mode.value,
                "jobs": self.jobs,
                "backend": backend.scheme,
            },
        )
        try:
            async with asyncio.TaskGroup() as group:
                for elector in self._electors:
                    group.create_task(elector.run())
                group.create_task(self._shutdown_when_asked())
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            if owns_backend:
                await backend.aclose()
            logger.info("service stopped", extra={"service": self.name})

    def stop(self) -> None:
        """Ask for a graceful stop: no new runs, running ones get ``shutdown_grace``,
        then the lease is released and :meth:`run` returns. Call from the loop's thread."""
        self._launching = False
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def _shutdown_when_asked(self) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        running = [job.running for job in self._jobs.values() if job.running is not None]
        if running:
            logger.info(
                "waiting for running jobs to finish",
                extra={"service": self.name, "count": len(running), "grace": self.config.shutdown_grace},
            )
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, asyncio.wait(running), self.config.shutdown_grace)
        for elector in self._electors:
            elector.stop()

    def run_forever(self, *, health_address: tuple[str, int] | None = None) -> int:
        """Run until SIGTERM or SIGINT, then stop gracefully; return the exit status (0).

        With ``health_address`` (host, port), serve ``/healthz`` and ``/leader`` there.
        """

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)
            server = None
            if health_address is not None:
                server = await serve_health(self.healthy, lambda: self.is_leader, *health_address)
            try:
                await self.run()
            finally:
                if server is not None:
                    server.close()

        asyncio.run(main())
        return 0

    def _on_signal(self, signum: int) -> None:
        logger.info("signal received; stopping gracefully", extra={"service": self.name, "signal": signum})
        self.stop()

    # -- leading -------------------------------------------------------------------

    def _leader_work(self, jobs: list[_Job]) -> Callable[[Leadership], Coroutine[Any, Any, None]]:
        async def lead(leadership: Leadership) -> None:
            async with asyncio.TaskGroup() as group:
                for job in jobs:
                    group.create_task(self._schedule(job, leadership), name=f"leaderlib-job-{job.name}")

        return lead

    async def _schedule(self, job: _Job, leadership: Leadership) -> None:
        """Launch the job at each tick while the leadership lasts (cancelled when it ends)."""
        try:
            tick = job.trigger.next_after(self.clock.wall())
            while self._launching:
                await self._sleep_until(tick)
                if not self._launching:
                    return
                if not leadership.is_valid():
                    return  # a paused process: the term ended while it slept
                self._launch(job, tick, leadership)
                tick = job.trigger.next_after(max(tick, self.clock.wall()))
        finally:
            if job.running is not None and not job.running.done():
                job.running.cancel()
            job.queued = None

    async def _sleep_until(self, tick: dt.datetime) -> None:
        # Re-check after waking: the wall clock may have been set back meanwhile.
        # Always yield once, so a tick that is already due cannot starve the loop.
        await asyncio.sleep(0)
        while (delay := (tick - self.clock.wall()).total_seconds()) > 0:
            await self.clock.sleep(delay)

    def _launch(self, job: _Job, tick: dt.datetime, leadership: Leadership) -> None:
        if job.running is not None and not job.running.done():
            if job.overlap == "queue" and job.queued is None:
                job.queued = tick
                return
            instruments.job_skipped.add(1, {"job": job.name, "election": leadership.election})
            logger.warning(
                "tick skipped: previous run still going",
                extra={"job": job.name, "tick": tick.isoformat(), "election": leadership.election},
            )
            return
        job.running = asyncio.create_task(
            self._run_once(job, tick, leadership), name=f"leaderlib-run-{job.name}"
        )

    async def _run_once(self, job: _Job, tick: dt.datetime, leadership: Leadership) -> None:
        while True:
            await self._invoke(job, tick, leadership)
            if job.queued is None or not self._launching or not leadership.is_valid():
                return
            tick, job.queued = job.queued, None

    async def _invoke(self, job: _Job, tick: dt.datetime, leadership: Leadership) -> None:
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
        started = time.monotonic()
        outcome = "error"
        logger.info("job run started", extra=details)
        try:
            with tracer.start_as_current_span("leaderlib.job", attributes=details):
                if inspect.iscoroutinefunction(job.func):
                    await job.func(*args)
                else:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(self._executor, lambda: job.func(*args))
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except NotLeader:
            outcome = "cancelled"
        except Exception:
            logger.exception("job run failed", extra=details)
        finally:
            duration = time.monotonic() - started
            instruments.job_runs.add(
                1, {"job": job.name, "election": leadership.election, "outcome": outcome}
            )
            instruments.job_duration.record(duration, {"job": job.name, "election": leadership.election})
            logger.info(
                "job run finished", extra={**details, "outcome": outcome, "duration": round(duration, 6)}
            )


def _takes_context(func: Callable[..., Any]) -> bool:
    """True if ``func`` accepts one positional argument (the JobContext)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) >= 1 or any(p.kind is p.VAR_POSITIONAL for p in parameters)

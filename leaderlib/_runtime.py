"""The service runtime: jobs that run only while this replica leads.

``Service`` holds jobs and one elector (leader mode: the leader runs every
job) or one elector per job (per-job mode: election ``SERVICE.JOB``, so jobs
spread across replicas). Losing leadership stops new runs and cancels
running ones; the replica keeps campaigning. A graceful stop lets running
runs finish within ``shutdown_grace``, then releases the lease.

How a term's jobs are scheduled and run, and why a run keeps the term until
it ends, is in :mod:`leaderlib._leading`; the job model is in
:mod:`leaderlib._jobs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import os
import signal
from collections.abc import Callable, Collection, Coroutine
from typing import Any, TypeVar

import schedule

from ._clock import Clock, SystemClock, wait_for
from ._config import ElectionConfig, load_settings
from ._elections import check_backend_url, check_per_job_elections, per_job_election, sole_cause
from ._elector import LeaderElector, Leadership
from ._errors import ConfigError
from ._health import serve_health
from ._jobs import Job, JobContext, Overlap, misfire_grace_seconds, pending_runs, takes_context
from ._leading import LeaderWork
from ._logging import get_logger
from ._telemetry import start_job
from ._triggers import make_trigger
from .backends import Backend, backend_from_url, split_url

__all__ = ["JobContext", "Mode", "Service"]

logger = get_logger("leaderlib.runtime")

F = TypeVar("F", bound=Callable[..., Any])


class Mode(enum.Enum):
    """How a service's jobs map to elections."""

    LEADER = "leader"  # one election per service; its leader runs every job
    PER_JOB = "per-job"  # one election per job, so jobs spread across replicas


class Service:
    """A service's jobs, run once per tick by whichever replica leads.

    ``backend`` is a URL (``sqlite:///path``, ``redis://...``, ``kubernetes://ns``)
    or a :class:`Backend`; left out, it comes from ``LEADERLIB_BACKEND``, a TOML
    file or the embedded default. ``config``, given, is used whole; left out, each
    field comes from the environment, a TOML file or its default (see
    :func:`load_settings`). A URL whose scheme no backend serves is refused here.
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
        self.clock = clock or SystemClock()
        # What the code chose, kept so that configure() can settle the settings
        # again, by the same rules, with the command line's choices.
        self._code_backend = backend
        self._code_config = config
        self.election = name
        """The election this service campaigns in: ``LEADERLIB_ELECTION`` (or the TOML
        file's ``election``) if set, else its name (so two deployments sharing a store
        can be kept apart without a code change)."""
        self.backend_url = ""
        self.config = config or ElectionConfig()
        self._backend: Backend | None = None
        self._jobs: dict[str, Job] = {}
        self._electors: list[LeaderElector] = []
        self._stopping = False
        """True once stop() was called, before or during run(): the one fact the
        schedulers, the shutdown and run() itself read."""
        self._stop_requested: asyncio.Event | None = None
        """Wakes the running shutdown task when ``_stopping`` turns true."""
        self._running = False
        self.abandoned_runs: list[str] = []
        """Jobs whose sync run was still going when the last :meth:`run` ended (its
        thread was left behind, and the lease under it left to expire)."""
        self.configure()

    def configure(self, *, file: str | os.PathLike[str] | None = None, backend: str | None = None) -> None:
        """Settle this service's settings, with a command line's choices if given.

        The one place settings are resolved (``leaderlib run`` calls it with its
        flags): ``file`` is a TOML file read in place of ``LEADERLIB_CONFIG``;
        ``backend`` is a URL that wins over the code's backend (even a
        :class:`Backend` object) and the environment. The code's ``config=``
        still wins over the file and the environment. Raises
        :class:`ConfigError` for a bad setting or a URL no backend serves, and
        ``RuntimeError`` while the service runs.
        """
        if self._running:
            raise RuntimeError("configure() a service before run(), not while it runs")
        code_backend = self._code_backend if backend is None else backend
        settings = load_settings(
            file=file,
            # A Backend object's scheme stands for it, so that a LEADERLIB_BACKEND it
            # shadows is reported like any other setting code overrides.
            backend=code_backend.scheme + "://" if isinstance(code_backend, Backend) else code_backend,
            config=self._code_config,
        )
        if isinstance(code_backend, Backend):
            chosen: Backend | None = code_backend
        else:
            chosen = None
            check_backend_url(settings.backend)
            if isinstance(self._code_backend, Backend):
                logger.info(
                    "the command line's backend replaces the Backend object given in code",
                    extra={"service": self.name, "backend": settings.backend},
                )
        previous = (self.election, self.backend_url, self._backend)
        self.election = settings.election or self.name
        self.backend_url = settings.backend
        self._backend = chosen
        try:
            self._check_election_names(self._jobs)
        except ConfigError:
            self.election, self.backend_url, self._backend = previous
            raise
        self.config = settings.config

    # -- registering jobs ---------------------------------------------------------

    def job(
        self,
        *,
        cron: str | None = None,
        every: float | dt.timedelta | None = None,
        name: str | None = None,
        overlap: Overlap = "skip",
        misfire_grace: float | dt.timedelta | None = None,
        coalesce: bool = False,
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`add_job`."""

        def register(func: F) -> F:
            self.add_job(
                func,
                cron=cron,
                every=every,
                name=name,
                overlap=overlap,
                misfire_grace=misfire_grace,
                coalesce=coalesce,
            )
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
        misfire_grace: float | dt.timedelta | None = None,
        coalesce: bool = False,
    ) -> None:
        """Run ``func`` on the leader at each tick of ``cron`` (six fields, seconds first,
        or five) or ``every`` seconds. ``func`` may be sync (run in a thread) or async;
        if it takes an argument it gets a :class:`JobContext`. A run still going at the
        next tick makes that tick be skipped (``overlap="skip"``, counted) or run once
        the current run ends (``"queue"``).

        ``misfire_grace`` (seconds) makes ticks survive a failover: each run's start
        and end are recorded in the election's store (two writes per run), a tick
        missed by at most this much (no leader at the time, a paused leader) is run
        late, once, by whoever leads next, and a tick recorded as started is never
        started again, whatever the wall clocks say. ``coalesce=True`` runs several
        missed ticks once, for the latest. Left out, nothing is written per tick and
        a tick without a leader is lost."""
        job_name = name or getattr(func, "__name__", None)
        if not job_name or not isinstance(job_name, str):
            raise ConfigError("the job needs a name=...", field="name")
        if job_name in self._jobs:
            raise ConfigError(f"a job named {job_name!r} is already registered", field="name")
        if overlap not in ("skip", "queue"):
            raise ConfigError(f"overlap must be 'skip' or 'queue', got {overlap!r}", field="overlap")
        try:
            trigger = make_trigger(cron=cron, every=every)
            grace = misfire_grace_seconds(misfire_grace, coalesce)
        except ConfigError as exc:
            raise ConfigError(f"job {job_name!r}: {exc.reason}", field=exc.field) from None
        self._check_election_names([*self._jobs, job_name])
        self._jobs[job_name] = Job(
            job_name, func, trigger, overlap, takes_context(func), misfire_grace=grace, coalesce=coalesce
        )

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
        """The election a job runs under: the service's, or in per-job mode ``ELECTION.JOB``.

        On Kubernetes the job's part is made a valid Lease name: lowercased, with
        ``_`` as ``-`` (``poll_invoices`` campaigns in ``billing.poll-invoices``).
        Other stores take the job's name as it is.
        """
        if self.mode is Mode.LEADER:
            return self.election
        return per_job_election(self.election, job, self._scheme())

    def _scheme(self) -> str:
        return self._backend.scheme if self._backend is not None else split_url(self.backend_url).scheme

    def _check_election_names(self, jobs: Collection[str]) -> None:
        """Refuse, at registration, job names whose elections the store cannot hold.

        Only per-job mode makes an election of each job; in leader mode every
        job runs under the service's one election.
        """
        if self.mode is Mode.PER_JOB:
            check_per_job_elections(self.election, jobs, self._scheme())

    # -- running -------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign and run jobs while leading, until :meth:`stop` (or cancellation).

        One run at a time: a second call while one runs raises ``RuntimeError``
        (it would campaign again with the same identity and replace the first
        run's electors)."""
        if self._running:
            raise RuntimeError(
                f"service {self.name!r} is already running; run() it once (stop() ends that run)"
            )
        if not self._jobs:
            raise ConfigError(
                f"service {self.name!r} has no jobs; add some with @service.job(...)", field="jobs"
            )
        if self._stopping:
            # stop() came first (or an earlier run was stopped): campaigning now would
            # hold the lease with no job launching.
            logger.info("stop was requested before run; not campaigning", extra={"service": self.name})
            return
        self._stop_requested = asyncio.Event()
        owns_backend = self._backend is None
        backend = self._backend or backend_from_url(self.backend_url)
        self.abandoned_runs = []
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
                on_started_leading=self._leader_work(jobs, backend),
            )
            for election, jobs in groups.items()
        ]
        for election, jobs in groups.items():
            for job in jobs:
                start_job({"job": job.name, "election": election})
        logger.info(
            "service starting",
            extra={
                "service": self.name,
                "mode": self.mode.value,
                "jobs": self.jobs,
                "backend": backend.scheme,
            },
        )
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                for elector in self._electors:
                    group.create_task(elector.run())
                group.create_task(self._shutdown_when_asked())
        except ExceptionGroup as group_error:
            # The task group is an implementation detail: a caller (and the CLI's
            # exit status) needs the leaderlib error that ended the service.
            raise sole_cause(group_error) from None
        finally:
            self._running = False
            if owns_backend:
                await backend.aclose()
            logger.info(
                "service stopped", extra={"service": self.name, "abandoned_runs": self.abandoned_runs}
            )

    def stop(self) -> None:
        """Ask for a graceful stop: no new runs, running ones get ``shutdown_grace``,
        then the lease is released and :meth:`run` returns. Call from the loop's thread.

        A sync run still going after the grace cannot be stopped: it is logged at
        ERROR, the lease is not released under it (it expires at the end of the
        term) and its daemon thread is left behind (see :attr:`abandoned_runs`).

        Called before :meth:`run`, it is remembered: ``run()`` then returns at once.
        A stopped service stays stopped; make a new one to campaign again."""
        self._stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def _shutdown_when_asked(self) -> None:
        """Once stop() is called: give the runs the grace while still leading, then end the terms."""
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        jobs = list(self._jobs.values())
        if pending := pending_runs(jobs):
            # Count runs, not futures: a sync run is both a task and its thread.
            logger.info(
                "waiting for running jobs to finish",
                extra={
                    "service": self.name,
                    "count": sum(job.busy() for job in jobs),
                    "grace": self.config.shutdown_grace,
                },
            )
            # The electors keep renewing meanwhile: the runs still lead.
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, asyncio.wait(pending), self.config.shutdown_grace)
        for job in jobs:
            if job.thread is not None:
                self.abandoned_runs.append(job.name)
                logger.error(
                    "sync job run still going after the shutdown grace",
                    extra={
                        "service": self.name,
                        "job": job.name,
                        "election": self.election_for(job.name),
                        "grace": self.config.shutdown_grace,
                        "thread_name": job.thread.thread.name,
                        "stack": job.thread.stack(),
                        "consequence": "the lease is left to expire; the thread is abandoned at exit",
                    },
                )
        # Ending a term cancels its async runs, and its work returns only when
        # no run can act or the term has run out (see LeaderWork._end_runs).
        for elector in self._electors:
            elector.stop()

    def run_forever(self, *, health_address: tuple[str, int] | None = None) -> int:
        """Run until SIGTERM or SIGINT, then stop gracefully; return the exit status.

        0 after a clean stop; 1 if a sync run was still going after the grace: its
        lease was left to expire and its (daemon) thread is abandoned when the
        interpreter exits, so the process still exits. With ``health_address``
        (host, port), serve ``/healthz`` and ``/leader`` there.
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
        return 1 if self.abandoned_runs else 0

    def _on_signal(self, signum: int) -> None:
        logger.info("signal received; stopping gracefully", extra={"service": self.name, "signal": signum})
        self.stop()

    # -- leading -------------------------------------------------------------------

    def _leader_work(
        self, jobs: list[Job], backend: Backend
    ) -> Callable[[Leadership], Coroutine[Any, Any, None]]:
        """The elector's ``on_started_leading`` for ``jobs``: each term runs them in a
        :class:`LeaderWork` on ``backend`` (whose lease holds their run records)."""

        async def lead(leadership: Leadership) -> None:
            work = LeaderWork(
                jobs,
                leadership,
                service=self.name,
                backend=backend,
                config=self.config,
                clock=self.clock,
                stopping=lambda: self._stopping,
            )
            await work.run()

        return lead

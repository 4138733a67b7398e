"""The service runtime: jobs that run only while this replica leads.

``Service`` holds jobs and one elector (leader mode: the leader runs every
job) or one elector per job (per-job mode: election ``SERVICE.JOB``, so jobs
spread across replicas). Losing leadership stops new runs and cancels
running ones; the replica keeps campaigning. A graceful stop lets running
runs finish within ``shutdown_grace``, then releases the lease.

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
import enum
import inspect
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Collection, Coroutine
from typing import Any, Literal, TypeVar

import schedule

from ._clock import Clock, SystemClock, wait_for
from ._config import ElectionConfig, load_settings
from ._elector import LeaderElector, Leadership
from ._errors import ConfigError, LeaderlibError, NotLeader
from ._health import serve_health
from ._logging import get_logger
from ._telemetry import instruments, start_job, tracer
from ._ticks import Plan, count_ticks, plan_tick, read_runs, record_end, record_start
from ._triggers import Trigger, make_trigger
from .backends import Backend, JobRun, Lease, backend_from_url, known_schemes, split_url

__all__ = ["JobContext", "Mode", "Service"]

logger = get_logger("leaderlib.runtime")

F = TypeVar("F", bound=Callable[..., Any])
Overlap = Literal["skip", "queue"]

#: The longest sleep toward a tick (seconds). The wall clock that names ticks
#: is read again after each such sleep, so a clock stepped back and corrected,
#: or stepped forward, is followed within this long rather than a whole tick
#: interval (or the size of the step) later.
_WALL_RECHECK = 1.0


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
    misfire_grace: float | None = None
    """Seconds a missed tick may be run late; None: runs are not recorded (no store write)."""
    coalesce: bool = False
    """With ``misfire_grace``: several missed ticks run once, for the latest."""
    running: asyncio.Task[None] | None = None
    thread: _Thread | None = None
    """The sync run's thread while it has not returned, even once ``running`` is cancelled."""
    queued: dt.datetime | None = None
    """The tick waiting for the running run to end (``overlap="queue"``)."""
    last_tick: dt.datetime | None = None
    """The latest tick this process reached for the job, in any term: later ticks are
    named only after it, so a wall clock stepped back never makes it run a tick twice.
    For a recorded job, each term starts it from the store's run record."""
    recording: asyncio.Task[None] | None = None
    """The write of the last run's end (recorded jobs): the next start waits for it."""

    @property
    def recorded(self) -> bool:
        """True if the job's runs are recorded in the store (it has a ``misfire_grace``)."""
        return self.misfire_grace is not None

    def busy(self) -> bool:
        """True while a run of this job may still act (its task or its thread goes on)."""
        return (self.running is not None and not self.running.done()) or self.thread is not None

    def pending(self) -> set[asyncio.Future[Any]]:
        """What to wait for until no run of this job is going."""
        waits: set[asyncio.Future[Any]] = set()
        if self.running is not None and not self.running.done():
            waits.add(self.running)
        if self.thread is not None:
            waits.add(self.thread.done)
        if self.recording is not None and not self.recording.done():
            waits.add(self.recording)
        return waits


class _Thread:
    """A sync run in a thread of its own.

    A daemon thread: nothing can stop a thread, so one that never returns must
    not keep the process alive once the service has stopped (a worker pool's
    threads are joined at interpreter exit). ``done`` resolves on the loop
    with what the function raised, or None, when it returns.
    """

    def __init__(self, call: Callable[[], Any], name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._call = call
        self.done: asyncio.Future[BaseException | None] = self._loop.create_future()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        error: BaseException | None = None
        try:
            self._call()
        except BaseException as exc:  # handed to the loop, which logs it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._resolve, error)

    def _resolve(self, error: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(error)

    def stack(self) -> str:
        """Where the thread is now, for the report on a run that will not return."""
        frame = sys._current_frames().get(self.thread.ident or -1)
        return "".join(traceback.format_stack(frame)) if frame is not None else ""


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
        self._backend_in_use: Backend | None = None
        """The backend of the running :meth:`run` (whose leases hold the run records)."""
        self._jobs: dict[str, _Job] = {}
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
            _check_backend_url(settings.backend)
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
            grace = _misfire_grace(misfire_grace, coalesce)
        except ConfigError as exc:
            raise ConfigError(f"job {job_name!r}: {exc.reason}", field=exc.field) from None
        self._check_election_names([*self._jobs, job_name])
        self._jobs[job_name] = _Job(
            job_name, func, trigger, overlap, _takes_context(func), misfire_grace=grace, coalesce=coalesce
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
        return f"{self.election}.{_lease_name_part(job) if self._on_kubernetes() else job}"

    def _on_kubernetes(self) -> bool:
        scheme = self._backend.scheme if self._backend is not None else split_url(self.backend_url).scheme
        return scheme == "kubernetes"

    def _check_election_names(self, jobs: Collection[str]) -> None:
        """Refuse, at registration, job names whose elections the store cannot hold.

        Only per-job mode makes an election of each job; in leader mode every
        job runs under the service's one election.
        """
        if self.mode is Mode.LEADER or not self._on_kubernetes():
            return
        try:
            from .backends.kubernetes import validate_lease_name
        except ImportError:  # no kubernetes extra: run() says what to install
            return
        seen: dict[str, str] = {}
        for job in jobs:
            election = self.election_for(job)
            try:
                validate_lease_name(election)
            except ConfigError as exc:
                raise ConfigError(
                    f"job {job!r} would campaign in the Kubernetes Lease {election!r}, which is not "
                    f"a valid name: {exc.reason}. Rename the job (name=...) to lowercase letters, "
                    "digits and '-'",
                    field="name",
                ) from None
            if election in seen:
                raise ConfigError(
                    f"jobs {seen[election]!r} and {job!r} map to the same election {election!r} on "
                    "Kubernetes ('_' becomes '-', letters lowercase); rename one (name=...)",
                    field="name",
                )
            seen[election] = job

    # -- running -------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign and run jobs while leading, until :meth:`stop` (or cancellation)."""
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
        self._backend_in_use = backend
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
                on_started_leading=self._leader_work(jobs),
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
            raise _sole_cause(group_error) from None
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
        if pending := _pending(jobs):
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
        # no run can act or the term has run out (see _end_runs).
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

    def _leader_work(self, jobs: list[_Job]) -> Callable[[Leadership], Coroutine[Any, Any, None]]:
        async def lead(leadership: Leadership) -> None:
            # The elector cancels this when the term ends, and releases the lease only
            # after it returns: so it returns only once the term's runs are over.
            try:
                if any(job.recorded for job in jobs) and not await self._plan_from_records(jobs, leadership):
                    return  # the term ended before the records could be read
                async with asyncio.TaskGroup() as group:
                    for job in jobs:
                        group.create_task(self._schedule(job, leadership), name=f"leaderlib-job-{job.name}")
                await leadership.lost.wait()  # stopped launching; the runs still belong to the term
            finally:
                await self._end_runs(jobs, leadership)

        return lead

    async def _end_runs(self, jobs: list[_Job], leadership: Leadership) -> None:
        """Return once no run of this term can act: async runs cancelled and ended, sync
        runs' threads returned; or, failing that, once the term's deadline has passed,
        after which the elector never releases the lease (it expires under the run)."""
        for job in jobs:
            job.queued = None
            if job.running is not None and not job.running.done():
                job.running.cancel()
        pending = _pending(jobs)
        while pending and (remaining := leadership.valid_until - self.clock.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, asyncio.wait(pending), remaining)
            pending = _pending(jobs)
        if pending:
            logger.warning(
                "job runs outlived the term; the lease is left to expire",
                extra={
                    "election": leadership.election,
                    "fencing_token": leadership.fencing_token,
                    "jobs": [job.name for job in jobs if job.busy()],
                },
            )

    def _lease(self, leadership: Leadership) -> Lease:
        assert self._backend_in_use is not None
        return self._backend_in_use.lease(leadership.election)

    async def _plan_from_records(self, jobs: list[_Job], leadership: Leadership) -> bool:
        """Start each recorded job's plan from the store's run record; False if the term ended first."""
        runs = await read_runs(self._lease(leadership), leadership, self.clock, self.config.retry_period)
        if runs is None:
            return False
        now = self.clock.wall()
        for job in jobs:
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

    def _plan(self, job: _Job) -> Plan:
        now = self.clock.wall()
        if job.misfire_grace is None:
            # After the last tick reached: a wall clock set back must not name it again.
            return Plan(
                job.trigger.next_after(now if job.last_tick is None else max(now, job.last_tick)), late=False
            )
        return plan_tick(job.trigger, job.last_tick, now, job.misfire_grace, coalesce=job.coalesce)

    async def _schedule(self, job: _Job, leadership: Leadership) -> None:
        """Launch the job at each tick while launching and the leadership lasts."""
        while not self._stopping:
            plan = self._plan(job)
            if plan.misfired:
                self._misfired(job, plan, leadership)
            await self._sleep_until(plan.tick)
            if self._stopping:
                return  # stopping: the runs get the grace; _end_runs ends them with the term
            if not leadership.is_valid():
                return  # a paused process: the term ended while it slept
            if plan.late and job.busy():
                # A missed tick runs after the run before it, whatever ``overlap`` says
                # for ticks that come due while a run goes on; then plan again.
                await asyncio.wait(job.pending())
                continue
            job.last_tick = plan.tick
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
            self._launch(job, plan.tick, leadership)

    def _misfired(self, job: _Job, plan: Plan, leadership: Leadership) -> None:
        """Report missed ticks passed over, and move past them (they are not recorded)."""
        assert plan.latest_misfire is not None
        attributes = {"job": job.name, "election": leadership.election}
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
        while not self._stopping and (delay := (tick - self.clock.wall()).total_seconds()) > 0:
            # Sleep in short steps, since the wall clock may be stepped meanwhile;
            # each step is measured on the monotonic clock.
            await self.clock.sleep(min(delay, _WALL_RECHECK))

    def _launch(self, job: _Job, tick: dt.datetime, leadership: Leadership) -> None:
        if job.busy():
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
            if job.queued is None or self._stopping or not leadership.is_valid():
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
        run: JobRun | None = None
        if job.recorded:
            run = await self._record_start(job, tick, leadership)
            if run is None:
                return
        started = self.clock.monotonic()
        logger.info("job run started", extra=details)
        if not inspect.iscoroutinefunction(job.func):
            with tracer.start_as_current_span("leaderlib.job", attributes=details):
                await self._in_thread(job, args, details, started, run)  # it reports the run's end
            return
        outcome = "error"
        try:
            with tracer.start_as_current_span("leaderlib.job", attributes=details):
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

    async def _record_start(self, job: _Job, tick: dt.datetime, leadership: Leadership) -> JobRun | None:
        """Record the run's start in the store before the job is called; None: do not run it."""
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
        if await record_start(self._lease(leadership), run, leadership, self.clock, self.config.retry_period):
            return run
        return None

    async def _in_thread(
        self,
        job: _Job,
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
        thread = _Thread(lambda: context.run(job.func, *args), name=f"leaderlib-{self.name}-{job.name}")

        def returned(done: asyncio.Future[BaseException | None]) -> None:
            if job.thread is thread:
                job.thread = None
            self._finished(job, details, _outcome(done.result(), details), started, run)

        job.thread = thread
        thread.done.add_done_callback(returned)
        thread.start()
        await asyncio.shield(thread.done)

    def _finished(
        self, job: _Job, details: dict[str, str | int], outcome: str, started: float, run: JobRun | None
    ) -> None:
        duration = self.clock.monotonic() - started
        attributes = {"job": details["job"], "election": details["election"]}
        instruments.job_runs.add(1, {**attributes, "outcome": outcome})
        instruments.job_duration.record(duration, attributes)
        logger.info("job run finished", extra={**details, "outcome": outcome, "duration": round(duration, 6)})
        if run is not None and self._backend_in_use is not None:
            # A task of its own: this may run in a cancelled run's finally, or a callback.
            ended = dataclasses.replace(run, outcome=outcome, duration=round(duration, 6))
            lease = self._backend_in_use.lease(str(details["election"]))
            job.recording = asyncio.ensure_future(record_end(lease, ended))


def _sole_cause(group: ExceptionGroup[Exception]) -> Exception:
    """The first leaderlib error in ``group`` if every error in it is one, else ``group``.

    Several electors (per-job mode) usually fail for one reason, such as a
    refused password; anything else is a bug whose whole group must be seen."""
    leaves: list[Exception] = []
    pending: list[Exception] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, ExceptionGroup):
            pending.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    if leaves and all(isinstance(error, LeaderlibError) for error in leaves):
        return leaves[0]
    return group


def _check_backend_url(url: str) -> None:
    """Refuse, when a service is made, a URL whose scheme no backend serves.

    Only the scheme: a backend's options are checked when :meth:`Service.run`
    makes it (making it here could open files or connections too early).
    """
    scheme = split_url(url).scheme
    if scheme not in known_schemes():
        raise ConfigError(
            f"unknown backend scheme {scheme!r} in {url!r}; known schemes: {', '.join(known_schemes())}",
            field="backend",
        )


def _misfire_grace(grace: float | dt.timedelta | None, coalesce: bool) -> float | None:
    """A job's ``misfire_grace`` in seconds; ConfigError for a bad one, or ``coalesce`` without one."""
    if not isinstance(coalesce, bool):
        raise ConfigError(f"coalesce must be True or False, got {coalesce!r}", field="coalesce")
    if grace is None:
        if coalesce:
            raise ConfigError(
                "coalesce=True needs misfire_grace=SECONDS: only ticks missed by at most the "
                "grace are run late (and coalesced)",
                field="coalesce",
            )
        return None
    seconds = grace.total_seconds() if isinstance(grace, dt.timedelta) else grace
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < float("inf"):
        raise ConfigError(
            f"misfire_grace must be a finite number of seconds >= 0, got {grace!r}", field="misfire_grace"
        )
    return float(seconds)


def _lease_name_part(job: str) -> str:
    """A job's name as part of a Kubernetes Lease name: lowercase, ``_`` as ``-``."""
    return job.lower().replace("_", "-")


def _pending(jobs: Collection[_Job]) -> set[asyncio.Future[Any]]:
    """What to wait for until no run of ``jobs`` is going."""
    return set().union(*(job.pending() for job in jobs))


def _outcome(error: BaseException | None, details: dict[str, str | int]) -> str:
    """A run's outcome from what it raised; a failure is logged with its traceback."""
    if error is None:
        return "ok"
    if isinstance(error, NotLeader):
        return "cancelled"
    logger.error("job run failed", exc_info=error, extra=details)
    return "error"


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

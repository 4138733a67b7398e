"""The job model: a registered job, its run state, and what a run is handed.

A :class:`Job` is what ``Service.add_job`` registers: the function, its
trigger and options, and the state of its runs, which outlives terms (the
latest tick reached, a sync run's thread that has not returned, the write of
the last run's end). A run gets a :class:`JobContext`; a sync run goes in a
:class:`RunThread` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
import sys
import threading
import traceback
from collections.abc import Callable, Collection
from typing import Any, Literal

from ._errors import ConfigError, NotLeader
from ._leadership import Leadership
from ._logging import get_logger
from ._triggers import Trigger

__all__ = [
    "Job",
    "JobContext",
    "Overlap",
    "RunThread",
    "misfire_grace_seconds",
    "outcome_of",
    "pending_runs",
    "takes_context",
]

logger = get_logger("leaderlib.runtime")

Overlap = Literal["skip", "queue"]


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
class Job:
    """A registered job: what to call and when, and the state of its runs across terms."""

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
    thread: RunThread | None = None
    """The sync run's thread while it has not returned, even once ``running`` is cancelled."""
    queued: dt.datetime | None = None
    """The tick waiting for the running run to end (``overlap="queue"``)."""
    last_tick: dt.datetime | None = None
    """The latest tick this process reached for the job, in any term: later ticks are
    named only after it, so a wall clock stepped back never makes it run a tick twice.
    For a recorded job, each term starts it from the store's run record."""
    recording: asyncio.Task[None] | None = None
    """The write of the last run's end (recorded jobs): the next start waits for it."""
    catching_up: bool = False
    """True while the run going is a missed tick run late: a tick that comes due
    meanwhile is part of the catch-up, and waits for it rather than being skipped."""

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


class RunThread:
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


def misfire_grace_seconds(grace: float | dt.timedelta | None, coalesce: bool) -> float | None:
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


def pending_runs(jobs: Collection[Job]) -> set[asyncio.Future[Any]]:
    """What to wait for until no run of ``jobs`` is going."""
    return set().union(*(job.pending() for job in jobs))


def outcome_of(error: BaseException | None, details: dict[str, str | int]) -> str:
    """A run's outcome from what it raised; a failure is logged with its traceback."""
    if error is None:
        return "ok"
    if isinstance(error, NotLeader):
        return "cancelled"
    logger.error("job run failed", exc_info=error, extra=details)
    return "error"


def takes_context(func: Callable[..., Any]) -> bool:
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

"""A scriptable in-memory backend and a clock that can pause, for deterministic unit tests.

``ScriptedBackend`` keeps leases in memory like a compare-and-swap store
(by default one WITHOUT server-side expiry, as a Kubernetes Lease: records
come back with ``expires_in=None``, so the elector must count
``lease_duration`` itself). A test queues behaviour per method::

    backend.script("renew", Raise(BackendUnavailable), times=3)
    backend.script("renew", Hang())            # the elector's own timeout must fire
    backend.script("try_acquire", Delay(1.5))  # fake-clock seconds, then the real call
    backend.script("renew", Conflict("other")) # another replica takes the lease first

and reads back every call of any of its leases with the fake time it was made
(``backend.calls``; each :class:`Call` names its election and has the
:class:`~leaderlib.backends.Lease` method's own arguments).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from typing import Any, Protocol

from leaderlib import Acquisition, BackendError, FakeClock, LeaseLost, LeaseRecord
from leaderlib.backends import FIRST_TOKEN, JobRun, decide
from leaderlib.backends._runs import fenced_out

__all__ = [
    "Behaviour",
    "Call",
    "Conflict",
    "Delay",
    "Hang",
    "PausingClock",
    "Raise",
    "Return",
    "ScriptedBackend",
    "ScriptedLease",
]


class PausingClock(FakeClock):
    """A :class:`FakeClock` that can also freeze the whole process, as SIGSTOP or a long GC does.

    ``advance`` wakes each sleeper at its own deadline; ``pause`` lets time pass
    with no task running, then wakes every overdue sleeper at once, late.
    """

    def jump(self, seconds: float) -> None:
        """Move time forward without letting any task run (the caller runs next)."""
        self._now += seconds

    async def pause(self, seconds: float) -> None:
        """Settle, freeze for ``seconds``, then wake every overdue sleeper at the new time."""
        await self.settle()
        self.jump(seconds)
        await self.advance(0)


@dataclasses.dataclass(frozen=True)
class Call:
    """One lease call as the elector made it."""

    method: str
    at: float
    """Fake monotonic time the call was made (before any scripted delay)."""
    election: str
    args: tuple[Any, ...]
    """The Lease method's arguments (for ``aclose``, none)."""


class Behaviour(Protocol):
    """What one scripted call does before (or instead of) the store's normal answer."""

    async def act(self, backend: ScriptedBackend, method: str, call: Call) -> Any:
        """Return :data:`PROCEED` to go on with the normal call, or the value to return."""
        ...


#: Returned by :meth:`Behaviour.act` to let the store answer normally.
PROCEED: Any = object()


@dataclasses.dataclass
class Raise(Behaviour):
    """Raise ``error``: an exception instance, or a leaderlib BackendError class to instantiate."""

    error: BaseException | type[BackendError]

    async def act(self, backend: ScriptedBackend, method: str, call: Call) -> Any:
        if isinstance(self.error, BaseException):
            raise self.error
        raise self.error(f"scripted failure of {method}", election=call.election, backend="scripted")


@dataclasses.dataclass
class Hang(Behaviour):
    """Never answer: await a future nobody resolves, so only the caller's timeout ends the call."""

    async def act(self, backend: ScriptedBackend, method: str, call: Call) -> Any:
        await asyncio.get_running_loop().create_future()


@dataclasses.dataclass
class Delay(Behaviour):
    """Answer normally after ``seconds`` of fake-clock time."""

    seconds: float

    async def act(self, backend: ScriptedBackend, method: str, call: Call) -> Any:
        await backend.clock.sleep(self.seconds)
        return PROCEED


@dataclasses.dataclass
class Return(Behaviour):
    """Return ``value`` without touching the store."""

    value: Any

    async def act(self, backend: ScriptedBackend, method: str, call: Call) -> Any:
        return self.value


@dataclasses.dataclass
class Conflict(Behaviour):
    """Another replica (``holder``) takes the lease just before this call reaches the store."""

    holder: str = "other"

    async def act(self, backend: ScriptedBackend, method: str, call: Call) -> Any:
        backend.seize(call.election, self.holder)
        return PROCEED


#: What :meth:`ScriptedBackend.script` can script: the Lease methods, and the backend's aclose.
SCRIPTABLE = frozenset(
    {"get", "try_acquire", "renew", "release", "watch", "aclose", "record_run", "last_runs"}
)


class ScriptedBackend:
    """An in-memory compare-and-swap store implementing the Backend Protocol, with scripted faults.

    ``server_expiry=False`` (the default) models a store that never expires a
    lease itself: a held record is replaced only by a ``takeover`` of exactly
    its version. ``server_expiry=True`` expires records ``lease_duration``
    after their last write, on the fake clock, and reports ``expires_in``.
    The acquire decision is :func:`leaderlib.backends.decide`, as on the
    stores that decide in Python.
    """

    scheme = "scripted"
    observation_granularity = 0.0  # tests that need more set it per instance

    def __init__(self, clock: FakeClock, *, server_expiry: bool = False) -> None:
        self.clock = clock
        self.server_expiry = server_expiry
        self.calls: list[Call] = []
        # Per election: the last record (a released one kept, emptied) and when it expires.
        self._records: dict[str, tuple[LeaseRecord, float]] = {}
        self._versions = itertools.count(1)
        self._scripts: dict[str, list[list[Any]]] = {}  # method -> [[behaviour, remaining or None]]
        self._changed = asyncio.Event()
        self._leases: dict[str, ScriptedLease] = {}
        self.runs: dict[str, dict[str, JobRun]] = {}
        """Per election, each job's last run record (the store's side of ``record_run``)."""

    # -- scripting ------------------------------------------------------------

    def script(self, method: str, behaviour: Behaviour, *, times: int | None = 1) -> None:
        """Queue ``behaviour`` for the next ``times`` calls of ``method`` (None: every call),
        on any of this backend's leases."""
        if method not in SCRIPTABLE:
            raise AttributeError(f"the Lease Protocol has no method {method!r}")
        self._scripts.setdefault(method, []).append([behaviour, times])

    def clear(self, method: str | None = None) -> None:
        """Drop the queued behaviour of ``method`` (of every method if None)."""
        if method is None:
            self._scripts.clear()
        else:
            self._scripts.pop(method, None)

    def calls_to(self, method: str) -> list[Call]:
        """The recorded calls of ``method``, oldest first."""
        return [call for call in self.calls if call.method == method]

    def times(self, method: str) -> list[float]:
        """The fake times at which ``method`` was called."""
        return [call.at for call in self.calls_to(method)]

    async def _enter(self, method: str, election: str, args: tuple[Any, ...]) -> Any:
        """Record the call and run its scripted behaviour, if any."""
        call = Call(method, self.clock.monotonic(), election, args)
        self.calls.append(call)
        queue = self._scripts.get(method)
        if not queue:
            return PROCEED
        entry = queue[0]
        if entry[1] is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                queue.pop(0)
        return await entry[0].act(self, method, call)

    # -- the store, also usable directly as "another replica" -------------------

    def _last(self, election: str) -> LeaseRecord | None:
        """The election's last record, one the store expired shown as released (for decide)."""
        entry = self._records.get(election)
        if entry is None:
            return None
        record, expires_at = entry
        if self.server_expiry and record.is_held and expires_at <= self.clock.monotonic():
            return dataclasses.replace(record, holder="")
        return record

    def current(self, election: str) -> LeaseRecord | None:
        """The election's live record, as the store would return it."""
        entry = self._records.get(election)
        if entry is None or not entry[0].is_held:
            return None
        record, expires_at = entry
        if not self.server_expiry:
            return record
        remaining = expires_at - self.clock.monotonic()
        if remaining <= 0:
            return None
        return dataclasses.replace(record, expires_in=remaining)

    def _write(self, record: LeaseRecord) -> LeaseRecord:
        record = dataclasses.replace(record, version=str(next(self._versions)), expires_in=None)
        self._records[record.election] = (record, self.clock.monotonic() + record.lease_duration)
        self._notify()
        return self.current(record.election) or record

    def _new_term(self, election: str, holder: str, lease_duration: float, token: int) -> LeaseRecord:
        now = self.clock.wall()
        return self._write(
            LeaseRecord(
                election=election,
                holder=holder,
                lease_duration=lease_duration,
                fencing_token=token,
                version="",
                transitions=token - FIRST_TOKEN,
                acquire_time=now,
                renew_time=now,
            )
        )

    def seize(self, election: str, holder: str = "other", lease_duration: float | None = None) -> LeaseRecord:
        """Another replica takes the lease, whatever the store held: a new term for ``holder``.

        ``lease_duration`` defaults to the current record's (10 s if there is none).
        """
        if lease_duration is None:
            current = self.current(election)
            lease_duration = current.lease_duration if current is not None else 10.0
        # As if it took over exactly what the store holds: a new term, the next token.
        last = self._last(election)
        return self._new_term(election, holder, lease_duration, decide(last, last).fencing_token)

    def touch(self, election: str) -> LeaseRecord:
        """The current holder renews: same term, new version."""
        record = self.current(election)
        assert record is not None, f"no record to renew for {election!r}"
        return self._write(dataclasses.replace(record, renew_time=self.clock.wall()))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the Backend Protocol ---------------------------------------------------

    def lease(self, election: str) -> ScriptedLease:
        handle = self._leases.get(election)
        if handle is None:
            handle = self._leases[election] = ScriptedLease(self, election)
        return handle

    async def aclose(self) -> None:
        await self._enter("aclose", "", ())


class ScriptedLease:
    """One election on a :class:`ScriptedBackend`; every call is recorded and may be scripted."""

    def __init__(self, backend: ScriptedBackend, election: str) -> None:
        self.election = election
        self._backend = backend

    async def get(self) -> LeaseRecord | None:
        backend = self._backend
        scripted = await backend._enter("get", self.election, ())
        if scripted is not PROCEED:
            return scripted  # type: ignore[no-any-return]
        return backend.current(self.election)

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        backend = self._backend
        scripted = await backend._enter("try_acquire", self.election, (identity, lease_duration, takeover))
        if scripted is not PROCEED:
            return scripted  # type: ignore[no-any-return]
        decision = decide(backend._last(self.election), takeover)
        if not decision.new_term:
            return Acquisition(acquired=False, record=backend.current(self.election))
        record = backend._new_term(self.election, identity, lease_duration, decision.fencing_token)
        return Acquisition(acquired=True, record=record)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        backend = self._backend
        scripted = await backend._enter("renew", self.election, (record,))
        if scripted is not PROCEED:
            return scripted  # type: ignore[no-any-return]
        current = backend.current(self.election)
        if current is None or current.version != record.version:
            raise LeaseLost("the lease is no longer ours", election=self.election, backend=backend.scheme)
        return backend._write(dataclasses.replace(current, renew_time=backend.clock.wall()))

    async def release(self, record: LeaseRecord) -> None:
        backend = self._backend
        scripted = await backend._enter("release", self.election, (record,))
        if scripted is not PROCEED:
            return
        current = backend.current(self.election)
        if current is not None and current.version == record.version:
            released = dataclasses.replace(current, holder="", version=str(next(backend._versions)))
            backend._records[self.election] = (released, backend.clock.monotonic())
            backend._notify()

    async def record_run(self, run: JobRun) -> None:
        backend = self._backend
        scripted = await backend._enter("record_run", self.election, (run,))
        if scripted is not PROCEED:
            return
        current = backend.current(self.election)
        holder, token = (current.holder, current.fencing_token) if current else (None, None)
        if holder != run.identity or token != run.fencing_token:
            raise fenced_out(run, holder=holder, token=token, backend=backend.scheme, election=self.election)
        backend.runs.setdefault(self.election, {})[run.job] = run

    async def last_runs(self) -> dict[str, JobRun]:
        backend = self._backend
        scripted = await backend._enter("last_runs", self.election, ())
        if scripted is not PROCEED:
            return scripted  # type: ignore[no-any-return]
        return dict(backend.runs.get(self.election, {}))

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        backend = self._backend
        scripted = await backend._enter("watch", self.election, ())
        if scripted is not PROCEED:
            return
        while True:
            changed = backend._changed
            yield backend.current(self.election)
            await changed.wait()

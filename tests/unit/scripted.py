"""A scriptable in-memory backend and a clock that can pause, for deterministic unit tests.

``ScriptedBackend`` keeps leases in memory like a compare-and-swap store
(by default one WITHOUT server-side expiry, as a Kubernetes Lease: records
come back with ``expires_in=None``, so the elector must count
``lease_duration`` itself). A test queues behaviour per method::

    backend.script("renew", Raise(BackendUnavailable), times=3)
    backend.script("renew", Hang())            # the elector's own timeout must fire
    backend.script("try_acquire", Delay(1.5))  # fake-clock seconds, then the real call
    backend.script("renew", Conflict("other")) # another replica takes the lease first

and reads back every call with the fake time it was made (``backend.calls``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from typing import Any, Protocol

from leaderlib import Acquisition, BackendError, FakeClock, LeaseLost, LeaseRecord
from leaderlib.backends import is_takeover

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
    """One backend call as the elector made it."""

    method: str
    at: float
    """Fake monotonic time the call was made (before any scripted delay)."""
    args: tuple[Any, ...]


class Behaviour(Protocol):
    """What one scripted call does before (or instead of) the store's normal answer."""

    async def act(self, backend: ScriptedBackend, method: str, args: tuple[Any, ...]) -> Any:
        """Return :data:`PROCEED` to go on with the normal call, or the value to return."""
        ...


#: Returned by :meth:`Behaviour.act` to let the store answer normally.
PROCEED: Any = object()


@dataclasses.dataclass
class Raise(Behaviour):
    """Raise ``error``: an exception instance, or a leaderlib BackendError class to instantiate."""

    error: BaseException | type[BackendError]

    async def act(self, backend: ScriptedBackend, method: str, args: tuple[Any, ...]) -> Any:
        if isinstance(self.error, BaseException):
            raise self.error
        raise self.error(
            f"scripted failure of {method}", election=backend.election_of(args), backend="scripted"
        )


@dataclasses.dataclass
class Hang(Behaviour):
    """Never answer: await a future nobody resolves, so only the caller's timeout ends the call."""

    async def act(self, backend: ScriptedBackend, method: str, args: tuple[Any, ...]) -> Any:
        await asyncio.get_running_loop().create_future()


@dataclasses.dataclass
class Delay(Behaviour):
    """Answer normally after ``seconds`` of fake-clock time."""

    seconds: float

    async def act(self, backend: ScriptedBackend, method: str, args: tuple[Any, ...]) -> Any:
        await backend.clock.sleep(self.seconds)
        return PROCEED


@dataclasses.dataclass
class Return(Behaviour):
    """Return ``value`` without touching the store."""

    value: Any

    async def act(self, backend: ScriptedBackend, method: str, args: tuple[Any, ...]) -> Any:
        return self.value


@dataclasses.dataclass
class Conflict(Behaviour):
    """Another replica (``holder``) takes the lease just before this call reaches the store."""

    holder: str = "other"

    async def act(self, backend: ScriptedBackend, method: str, args: tuple[Any, ...]) -> Any:
        backend.seize(backend.election_of(args), self.holder)
        return PROCEED


class ScriptedBackend:
    """An in-memory compare-and-swap store implementing the Backend Protocol, with scripted faults.

    ``server_expiry=False`` (the default) models a store that never expires a
    lease itself: a held record is replaced only by a ``takeover`` of exactly
    its version. ``server_expiry=True`` expires records ``lease_duration``
    after their last write, on the fake clock, and reports ``expires_in``.
    """

    scheme = "scripted"
    observation_granularity = 0.0  # tests that need more set it per instance

    def __init__(self, clock: FakeClock, *, server_expiry: bool = False) -> None:
        self.clock = clock
        self.server_expiry = server_expiry
        self.calls: list[Call] = []
        self._records: dict[str, tuple[LeaseRecord, float]] = {}  # record, expires at (monotonic)
        self._tokens: dict[str, int] = {}
        self._versions = itertools.count(1)
        self._scripts: dict[str, list[list[Any]]] = {}  # method -> [[behaviour, remaining or None]]
        self._changed = asyncio.Event()

    # -- scripting ------------------------------------------------------------

    def script(self, method: str, behaviour: Behaviour, *, times: int | None = 1) -> None:
        """Queue ``behaviour`` for the next ``times`` calls of ``method`` (None: every call)."""
        if not hasattr(self, method):
            raise AttributeError(f"the Backend Protocol has no method {method!r}")
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

    @staticmethod
    def election_of(args: tuple[Any, ...]) -> str:
        """The election a call is about (its first argument, or that record's election)."""
        if not args:
            return ""
        first = args[0]
        return first.election if isinstance(first, LeaseRecord) else str(first)

    async def _enter(self, method: str, args: tuple[Any, ...]) -> Any:
        """Record the call and run its scripted behaviour, if any."""
        self.calls.append(Call(method, self.clock.monotonic(), args))
        queue = self._scripts.get(method)
        if not queue:
            return PROCEED
        entry = queue[0]
        if entry[1] is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                queue.pop(0)
        return await entry[0].act(self, method, args)

    # -- the store, also usable directly as "another replica" -------------------

    def current(self, election: str) -> LeaseRecord | None:
        """The election's live record, as the store would return it."""
        entry = self._records.get(election)
        if entry is None:
            return None
        record, expires_at = entry
        if not self.server_expiry:
            return record
        remaining = expires_at - self.clock.monotonic()
        if remaining <= 0:
            del self._records[election]
            return None
        return dataclasses.replace(record, expires_in=remaining)

    def _write(self, record: LeaseRecord) -> LeaseRecord:
        record = dataclasses.replace(record, version=str(next(self._versions)), expires_in=None)
        self._records[record.election] = (record, self.clock.monotonic() + record.lease_duration)
        self._notify()
        return self.current(record.election) or record

    def _new_term(self, election: str, holder: str, lease_duration: float) -> LeaseRecord:
        token = self._tokens.get(election, 0) + 1
        self._tokens[election] = token
        now = self.clock.wall()
        return self._write(
            LeaseRecord(
                election=election,
                holder=holder,
                lease_duration=lease_duration,
                fencing_token=token,
                version="",
                transitions=token - 1,
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
        return self._new_term(election, holder, lease_duration)

    def touch(self, election: str) -> LeaseRecord:
        """The current holder renews: same term, new version."""
        record = self.current(election)
        assert record is not None, f"no record to renew for {election!r}"
        return self._write(dataclasses.replace(record, renew_time=self.clock.wall()))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the Backend Protocol ---------------------------------------------------

    async def get(self, election: str) -> LeaseRecord | None:
        scripted = await self._enter("get", (election,))
        if scripted is not PROCEED:
            return scripted  # type: ignore[no-any-return]
        return self.current(election)

    async def try_acquire(
        self, election: str, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        scripted = await self._enter("try_acquire", (election, identity, lease_duration, takeover))
        if scripted is not PROCEED:
            return scripted  # type: ignore[no-any-return]
        current = self.current(election)
        if current is None or not current.is_held:
            return Acquisition(acquired=True, record=self._new_term(election, identity, lease_duration))
        if is_takeover(current, takeover):
            return Acquisition(acquired=True, record=self._new_term(election, identity, lease_duration))
        return Acquisition(acquired=False, record=current)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        scripted = await self._enter("renew", (record,))
        if scripted is not PROCEED:
            return scripted  # type: ignore[no-any-return]
        current = self.current(record.election)
        if current is None or current.version != record.version:
            raise LeaseLost("the lease is no longer ours", election=record.election, backend=self.scheme)
        return self._write(dataclasses.replace(current, renew_time=self.clock.wall()))

    async def release(self, record: LeaseRecord) -> None:
        scripted = await self._enter("release", (record,))
        if scripted is not PROCEED:
            return
        current = self.current(record.election)
        if current is not None and current.version == record.version:
            del self._records[record.election]
            self._notify()

    async def watch(self, election: str) -> AsyncIterator[LeaseRecord | None]:
        scripted = await self._enter("watch", (election,))
        if scripted is not PROCEED:
            return
        while True:
            changed = self._changed
            yield self.current(election)
            await changed.wait()

    async def aclose(self) -> None:
        await self._enter("aclose", ())

"""``memory://[NAME]``: leases in this process's memory.

For one process with several electors (tests, local development, per-job
mode on a single replica). Backends made from the same URL in one process
share one store; different NAMEs are separate stores. The store expires
leases itself, on the clock it was given (a fake clock in unit tests).

A scheduled tick costs no store call at all: leadership is local knowledge.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from .._clock import Clock, SystemClock
from .._errors import LeaseLost
from . import FIRST_TOKEN, Acquisition, JobRun, LeaseRecord, check_election, decide, parse_options, split_url
from ._runs import fenced_out
from ._shared import ChangeNotifier

__all__ = ["MemoryBackend", "MemoryLease"]


class _Store:
    """The shared state behind every MemoryBackend made from one URL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Per election: the last record and when it expires (monotonic). A
        # released or expired record stays, emptied, so its token is the base
        # of the next term's.
        self.records: dict[str, tuple[LeaseRecord, float]] = {}
        self.versions = itertools.count(1)
        # Per election: each job's last run record (jobs with misfire_grace).
        self.runs: dict[str, dict[str, JobRun]] = {}
        self.changes = ChangeNotifier()


class MemoryBackend:
    """Leases in process memory; see the module docstring for the URL."""

    scheme = "memory"
    observation_granularity = 0.0  # every write is seen at once
    _stores: ClassVar[dict[str, _Store]] = {}
    _stores_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "", *, clock: Clock | None = None) -> None:
        with self._stores_lock:
            self._store = self._stores.setdefault(name, _Store())
        self._clock = clock or SystemClock()
        self._leases: dict[str, MemoryLease] = {}
        self._leases_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> MemoryBackend:
        parts = split_url(url)
        parse_options(parts, {}, options)
        return cls(parts.netloc + parts.path, clock=clock)

    def lease(self, election: str) -> MemoryLease:
        """The election's handle (the same one each time); any non-empty name will do."""
        check_election(election)
        with self._leases_lock:
            handle = self._leases.get(election)
            if handle is None:
                handle = self._leases[election] = MemoryLease(self, election)
            return handle

    async def aclose(self) -> None:
        return None


class MemoryLease:
    """One election in a memory store."""

    def __init__(self, backend: MemoryBackend, election: str) -> None:
        self.election = election
        self._store = backend._store
        self._clock = backend._clock
        self._scheme = backend.scheme

    def _last(self) -> tuple[LeaseRecord, float] | None:
        """The election's last record, an expired one emptied; caller holds the lock."""
        entry = self._store.records.get(self.election)
        if entry is not None and entry[0].is_held and entry[1] <= self._clock.monotonic():
            entry = (dataclasses.replace(entry[0], holder=""), entry[1])
            self._store.records[self.election] = entry
        return entry

    def _live(self) -> tuple[LeaseRecord, float] | None:
        """The election's record if someone holds it; caller holds the lock."""
        entry = self._last()
        return entry if entry is not None and entry[0].is_held else None

    def _with_expiry(self, entry: tuple[LeaseRecord, float] | None) -> LeaseRecord | None:
        if entry is None:
            return None
        record, expires_at = entry
        return dataclasses.replace(record, expires_in=max(0.0, expires_at - self._clock.monotonic()))

    def _write(self, record: LeaseRecord) -> LeaseRecord:
        """Store ``record`` with a new version and a fresh expiry; caller holds the lock."""
        record = dataclasses.replace(record, version=str(next(self._store.versions)), expires_in=None)
        self._store.records[self.election] = (record, self._clock.monotonic() + record.lease_duration)
        return dataclasses.replace(record, expires_in=record.lease_duration)

    async def get(self) -> LeaseRecord | None:
        with self._store.lock:
            return self._with_expiry(self._live())

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        with self._store.lock:
            entry = self._last()
            decision = decide(entry[0] if entry else None, takeover)
            if not decision.new_term:
                return Acquisition(acquired=False, record=self._with_expiry(entry))
            now = self._clock.wall()
            record = self._write(
                LeaseRecord(
                    election=self.election,
                    holder=identity,
                    lease_duration=lease_duration,
                    fencing_token=decision.fencing_token,
                    version="",
                    transitions=decision.fencing_token - FIRST_TOKEN,
                    acquire_time=now,
                    renew_time=now,
                )
            )
        self._store.changes.notify(self.election)
        return Acquisition(acquired=True, record=record)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        with self._store.lock:
            entry = self._live()
            if entry is None or entry[0].version != record.version:
                raise LeaseLost("the lease is no longer ours", election=self.election, backend=self._scheme)
            renewed = self._write(dataclasses.replace(entry[0], renew_time=self._clock.wall()))
        self._store.changes.notify(self.election)
        return renewed

    async def release(self, record: LeaseRecord) -> None:
        with self._store.lock:
            entry = self._live()
            if entry is None or entry[0].version != record.version:
                return
            released = dataclasses.replace(entry[0], holder="", version=str(next(self._store.versions)))
            self._store.records[self.election] = (released, self._clock.monotonic())
        self._store.changes.notify(self.election)

    async def record_run(self, run: JobRun) -> None:
        with self._store.lock:
            entry = self._live()
            holder, token = (entry[0].holder, entry[0].fencing_token) if entry else (None, None)
            if holder != run.identity or token != run.fencing_token:
                raise fenced_out(
                    run, holder=holder, token=token, backend=self._scheme, election=self.election
                )
            self._store.runs.setdefault(self.election, {})[run.job] = run

    async def last_runs(self) -> dict[str, JobRun]:
        with self._store.lock:
            return dict(self._store.runs.get(self.election, {}))

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        waiter = self._store.changes.subscribe(self.election)
        try:
            while True:
                yield await self.get()
                await waiter[1].wait()
                waiter[1].clear()
        finally:
            self._store.changes.unsubscribe(self.election, waiter)

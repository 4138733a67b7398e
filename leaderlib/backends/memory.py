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
from . import Acquisition, LeaseRecord, is_takeover, parse_options, split_url
from ._shared import ChangeNotifier

__all__ = ["MemoryBackend"]


class _Store:
    """The shared state behind every MemoryBackend made from one URL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, tuple[LeaseRecord, float]] = {}  # record, expires at (monotonic)
        self.tokens: dict[str, int] = {}
        self.versions = itertools.count(1)
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

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> MemoryBackend:
        parts = split_url(url)
        parse_options(parts, {}, options)
        return cls(parts.netloc + parts.path, clock=clock)

    def _live(self, election: str) -> tuple[LeaseRecord, float] | None:
        """The election's record if it has not expired; caller holds the lock."""
        entry = self._store.records.get(election)
        if entry is not None and entry[1] <= self._clock.monotonic():
            del self._store.records[election]
            return None
        return entry

    def _with_expiry(self, entry: tuple[LeaseRecord, float] | None) -> LeaseRecord | None:
        if entry is None:
            return None
        record, expires_at = entry
        return dataclasses.replace(record, expires_in=max(0.0, expires_at - self._clock.monotonic()))

    def _write(self, record: LeaseRecord) -> LeaseRecord:
        """Store ``record`` with a new version and a fresh expiry; caller holds the lock."""
        record = dataclasses.replace(record, version=str(next(self._store.versions)), expires_in=None)
        self._store.records[record.election] = (
            record,
            self._clock.monotonic() + record.lease_duration,
        )
        return dataclasses.replace(record, expires_in=record.lease_duration)

    async def get(self, election: str) -> LeaseRecord | None:
        with self._store.lock:
            return self._with_expiry(self._live(election))

    async def try_acquire(
        self, election: str, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        with self._store.lock:
            entry = self._live(election)
            current = entry[0] if entry else None
            if current is not None and current.is_held and not is_takeover(current, takeover):
                return Acquisition(acquired=False, record=self._with_expiry(entry))
            now = self._clock.wall()
            token = self._store.tokens.get(election, 0) + 1
            self._store.tokens[election] = token
            record = self._write(
                LeaseRecord(
                    election=election,
                    holder=identity,
                    lease_duration=lease_duration,
                    fencing_token=token,
                    version="",
                    transitions=token - 1,
                    acquire_time=now,
                    renew_time=now,
                )
            )
        self._store.changes.notify(election)
        return Acquisition(acquired=True, record=record)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        with self._store.lock:
            entry = self._live(record.election)
            if entry is None or entry[0].version != record.version:
                raise LeaseLost("the lease is no longer ours", election=record.election, backend=self.scheme)
            renewed = self._write(dataclasses.replace(entry[0], renew_time=self._clock.wall()))
        self._store.changes.notify(record.election)
        return renewed

    async def release(self, record: LeaseRecord) -> None:
        with self._store.lock:
            entry = self._live(record.election)
            if entry is None or entry[0].version != record.version:
                return
            del self._store.records[record.election]
        self._store.changes.notify(record.election)

    async def watch(self, election: str) -> AsyncIterator[LeaseRecord | None]:
        waiter = self._store.changes.subscribe(election)
        try:
            while True:
                yield await self.get(election)
                await waiter[1].wait()
                waiter[1].clear()
        finally:
            self._store.changes.unsubscribe(election, waiter)

    async def aclose(self) -> None:
        return None

"""One etcd backend object holding thousands of elections: an operation on one of them
examines that election only, however many the backend holds. Real etcd.

The work is counted, not timed: every election's candidacies (``EtcdLease.candidacies``,
its per-election state) are read through a dict that notes which election was looked
at. Deciding whether an election takes part in an operation means reading that state,
so any scan of the backend's elections shows here, whichever container drives it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from leaderlib.backends import JobRun
from leaderlib.backends.etcd import EtcdBackend, EtcdLease
from tests.backends import test_etcd
from tests.backends.test_etcd import name

pytestmark = pytest.mark.timeout(120)

make = test_etcd.make  # the fixture: EtcdBackends on the session's etcd, closed after the test

ELECTIONS = 2_000


class Examined(dict[int, Any]):
    """An election's candidacies, noting in ``seen`` each time they are read or changed."""

    def __init__(self, election: str, seen: set[str], *args: Any) -> None:
        super().__init__(*args)
        self.election = election
        self.seen = seen


def _noting(method: str) -> Callable[..., Any]:
    plain = getattr(dict, method)

    def noted(self: Examined, *args: Any) -> Any:
        self.seen.add(self.election)
        return plain(self, *args)

    return noted


for _method in (
    "__contains__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__iter__",
    "__len__",
    "get",
    "pop",
    "setdefault",
    "keys",
    "values",
    "items",
):
    setattr(Examined, _method, _noting(_method))


def counted(backend: EtcdBackend, seen: set[str]) -> EtcdLease:
    lease = backend.lease(name())
    lease.candidacies = Examined(lease.election, seen, lease.candidacies)
    return lease


async def test_one_election_among_thousands_examines_that_election_only(
    make: Callable[..., EtcdBackend],
) -> None:
    """2,000 elections led through one backend object (one session): acquiring, renewing,
    recording a run in and releasing one of them reads no other election's state."""
    backend = make()
    seen: set[str] = set()
    leases = [counted(backend, seen) for _ in range(ELECTIONS)]
    acquired = await asyncio.gather(*(lease.try_acquire("replica-a", 30.0, None) for lease in leases))
    assert all(result.acquired for result in acquired)
    assert len(backend.sessions.by_slot) == 1

    newcomer = counted(backend, seen)
    seen.clear()
    result = await newcomer.try_acquire("replica-a", 30.0, None)
    assert result.acquired and result.record is not None
    assert seen == {newcomer.election}, f"{len(seen)} elections examined"

    lease, record = leases[7], acquired[7].record
    assert record is not None
    seen.clear()
    record = await lease.renew(record)
    assert seen == {lease.election}, f"{len(seen)} elections examined"

    seen.clear()
    now = dt.datetime.now(dt.UTC)
    await lease.record_run(
        JobRun(
            job="tick",
            tick=now,
            fencing_token=record.fencing_token,
            identity=record.holder,
            started_at=now,
            outcome="ok",
            duration=0.0,
        )
    )
    assert seen == {lease.election}, f"{len(seen)} elections examined"

    seen.clear()
    await lease.release(record)
    assert seen == {lease.election}, f"{len(seen)} elections examined"
    assert await lease.get() is None
    assert await leases[8].get() is not None  # the others still lead

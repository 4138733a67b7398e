"""Many elections on one Kubernetes backend: one watch, one thread, a bounded pool; creates in one request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from leaderlib.backends import LeaseRecord
from leaderlib.backends.kubernetes import KubernetesBackend
from leaderlib.backends.kubernetes._api import WORKERS
from tests.backends.kube import name, record_requests
from tests.electing import until

pytestmark = pytest.mark.timeout(120)

ELECTIONS = 30


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("leaderlib-k8s-watch")]


def connections(backend: KubernetesBackend) -> int:
    """HTTP connections the backend's pool has opened so far."""
    pools = backend._api.rest_client.pool_manager.pools
    return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118 (RecentlyUsedContainer cannot iterate)


async def test_many_elections_share_one_watch_and_get_their_own_events(
    kube_backend: Callable[[], KubernetesBackend],
) -> None:
    backend, actor = kube_backend(), kube_backend()
    elections = [name() for _ in range(ELECTIONS)]
    records = {
        a.record.election: a.record
        for a in await asyncio.gather(*(actor.lease(e).try_acquire("replica-a", 5, None) for e in elections))
        if a.record is not None
    }
    assert len(records) == ELECTIONS
    before = len(watch_threads())
    sent = record_requests(backend)
    watches = [backend.lease(e).watch() for e in elections]
    firsts = await asyncio.gather(*(asyncio.wait_for(anext(w), 10) for w in watches))
    for election, first in zip(elections, firsts, strict=True):
        assert first is not None and first.version == records[election].version
    assert len(watch_threads()) - before == 1, [t.name for t in watch_threads()]
    await until(lambda: any("watch=true" in request.url for request in sent), timeout=5)
    assert sum("watch=true" in request.url for request in sent) == 1, "one watch stream for the namespace"
    assert sum(request.method == "GET" for request in sent) == 2, (
        "one list and one watch, not one per election"
    )

    # A Lease nobody here watches, in the same namespace: dispatched to no one.
    await actor.lease(name()).try_acquire("someone-else", 5, None)
    # Renewals reach each election's own watcher (followers restart their expiry count from them).
    renewed = await asyncio.gather(*(actor.lease(e).renew(records[e]) for e in elections))
    latest = {r.election: r.version for r in renewed}

    async def own_renewal(election: str, watch: AsyncIterator[LeaseRecord | None]) -> None:
        while True:
            seen = await asyncio.wait_for(anext(watch), 10)
            assert seen is not None and seen.election == election
            if seen.version == latest[election]:
                return

    await asyncio.gather(*(own_renewal(e, w) for e, w in zip(elections, watches, strict=True)))
    for watch in watches:
        await watch.aclose()
    await until(
        lambda: len(watch_threads()) == before, timeout=5, what="the watch thread stops with the last watcher"
    )


async def test_connections_do_not_grow_with_elections(kube_backend: Callable[[], KubernetesBackend]) -> None:
    """Twice as many elections as request threads, all at once: a connection per thread, plus the watch."""
    backend = kube_backend()
    elections = [name() for _ in range(2 * WORKERS)]
    watches = [backend.lease(e).watch() for e in elections]
    await asyncio.gather(*(asyncio.wait_for(anext(w), 10) for w in watches))
    results = await asyncio.gather(*(backend.lease(e).try_acquire("replica-a", 5, None) for e in elections))
    assert all(r.acquired for r in results)
    await asyncio.gather(
        *(backend.lease(e).renew(r.record) for e, r in zip(elections, results, strict=True) if r.record)
    )
    assert connections(backend) <= WORKERS + 1, (
        f"{connections(backend)} connections for {len(elections)} elections"
    )
    for watch in watches:
        await watch.aclose()


async def test_a_lease_that_does_not_exist_is_created_in_one_request(
    kube_backend: Callable[[], KubernetesBackend],
) -> None:
    backend, other = kube_backend(), kube_backend()
    election = name()
    sent = record_requests(backend)
    first = await backend.lease(election).try_acquire("replica-a", 2, None)
    assert first.acquired and first.record is not None and first.record.fencing_token == 1
    assert [request.method for request in sent] == ["POST"]

    # A Lease that exists but this process never saw: POST (409), then it is read.
    sent = record_requests(other)
    taken = await other.lease(election).try_acquire("replica-b", 2, None)
    assert not taken.acquired and taken.record is not None and taken.record.holder == "replica-a"
    assert [request.method for request in sent] == ["POST", "GET"]
    # Seen now: the next attempt reads first, it creates nothing.
    sent.clear()
    again = await other.lease(election).try_acquire("replica-b", 2, None)
    assert not again.acquired and [request.method for request in sent] == ["GET"]

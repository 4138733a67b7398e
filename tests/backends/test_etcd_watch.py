"""etcd: one shared Watch stream per backend, and the session keepalive loop (issue 11).

Real etcd. Streams are counted by etcd itself (``/metrics``:
``etcd_debugging_mvcc_watch_stream_total``, the watch streams open now).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aetcd
import pytest

from leaderlib import LeaseRecord
from leaderlib._errors import BackendUnavailable
from leaderlib.backends.etcd import DEFAULT_PREFIX, EtcdBackend
from leaderlib.testing.pytest_plugin import started
from leaderlib.testing.servers import EtcdServer
from tests.electing import until

TTL = 2.0


def name() -> str:
    return f"etcd-{uuid.uuid4().hex[:10]}"


def watch_streams(server: EtcdServer) -> float:
    """The Watch streams etcd has open now."""
    with urllib.request.urlopen(f"http://{server.host}:{server.client_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watch_stream_total "):
            return float(line.split()[1])
    raise AssertionError("etcd_debugging_mvcc_watch_stream_total not in /metrics")


@pytest.fixture
async def make(etcd_server: EtcdServer) -> AsyncIterator[Callable[..., EtcdBackend]]:
    made: list[EtcdBackend] = []

    def factory(url: str | None = None, **options: Any) -> EtcdBackend:
        backend = EtcdBackend.from_url(url or etcd_server.url, **options)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.aclose()


async def follower_key(raw: aetcd.Client, election: str) -> bytes:
    """The candidate key whose value is ``follower``."""
    keys = [
        kv.key
        for kv in await raw.get_prefix(f"{DEFAULT_PREFIX}{election}/".encode())
        if kv.value == b"follower"
    ]
    assert len(keys) == 1, keys
    return bytes(keys[0])


async def collect(backend: EtcdBackend, election: str, seen: list[LeaseRecord | None]) -> None:
    async for record in backend.lease(election).watch():
        seen.append(record)


async def test_many_elections_share_one_watch_stream(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    """Ten followers' waits on one backend are ten watchers on ONE stream, and each
    wait wakes only for its own election."""
    leader, follower = make(), make()
    elections = [name() for _ in range(10)]
    held = {}
    for election in elections:
        held[election] = (await leader.lease(election).try_acquire("leader", TTL, None)).record
        assert not (await follower.lease(election).try_acquire("follower", TTL, None)).acquired
    before = watch_streams(etcd_server)
    seen: dict[str, list[LeaseRecord | None]] = {e: [] for e in elections}
    tasks = [asyncio.create_task(collect(follower, e, seen[e])) for e in elections]
    try:
        await until(lambda: all(seen[e] for e in elections), 5, "every watch yields the leader")
        await asyncio.sleep(0.3)  # the waits register their watchers
        assert watch_streams(etcd_server) - before == 1
        first = elections[0]
        record = held[first]
        assert record is not None
        counts = {e: len(seen[e]) for e in elections}
        await leader.lease(first).release(record)
        await until(lambda: len(seen[first]) > counts[first], 5, "the released election's watch wakes")
        await asyncio.sleep(0.3)
        assert {e: len(seen[e]) for e in elections[1:]} == {e: counts[e] for e in elections[1:]}
        assert seen[first][-1] is not None and seen[first][-1].holder == "follower"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_leader_renewals_cost_a_watching_follower_no_request(make: Callable[..., EtcdBackend]) -> None:
    """A renewal (Proclaim) seen on the follower's watch is yielded from the event:
    no Range, no LeaseTimeToLive (only the session's keepalive loop talks to etcd)."""
    leader, follower = make(), make()
    election = name()
    record = (await leader.lease(election).try_acquire("leader", TTL, None)).record
    assert record is not None
    await follower.lease(election).try_acquire("follower", TTL, None)
    seen: list[LeaseRecord | None] = []
    task = asyncio.create_task(collect(follower, election, seen))
    try:
        await until(lambda: bool(seen), 5, "the watch yields the leader")
        await asyncio.sleep(0.2)
        calls: list[Any] = []
        real = follower.channel.call

        async def counting(election: str | None, op: Any) -> Any:
            task = asyncio.current_task()
            if task is None or not task.get_name().startswith("etcd-keepalive"):
                calls.append(op)  # not the session's own keepalive loop
            return await real(election, op)

        follower.channel.call = counting  # type: ignore[method-assign]
        for _ in range(3):
            record = await leader.lease(election).renew(record)
        await until(lambda: len(seen) >= 4, 5, "three renewals seen")
        renewed = seen[-1]
        assert renewed is not None and renewed.holder == "leader" and renewed.version == record.version
        assert renewed.expires_in is not None and renewed.expires_in >= TTL
        assert calls == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_follower_keepalive_loop_keeps_its_key_for_three_ttls(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    """With its watch live and no try_acquire, a follower's key outlives 3 TTLs."""
    leader, follower = make(), make()
    election = name()
    await leader.lease(election).try_acquire("leader", TTL, None)
    await follower.lease(election).try_acquire("follower", TTL, None)
    raw = aetcd.Client(host=etcd_server.host, port=etcd_server.client_port)
    key = await follower_key(raw, election)
    task = asyncio.create_task(collect(follower, election, []))
    try:
        await asyncio.sleep(3 * TTL + 1)
        assert await raw.get(key) is not None, "the follower's key expired"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await raw.close()


async def test_unwatched_candidacy_is_left_to_expire(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    """A follower nobody watches or polls (a stopped elector) is not kept alive."""
    leader, follower = make(), make()
    election = name()
    await leader.lease(election).try_acquire("leader", TTL, None)
    await follower.lease(election).try_acquire("follower", TTL, None)
    raw = aetcd.Client(host=etcd_server.host, port=etcd_server.client_port)
    key = await follower_key(raw, election)
    try:
        started_at = time.monotonic()
        while await raw.get(key) is not None:
            assert time.monotonic() - started_at < 2 * TTL + 2, "an unwatched follower was kept alive"
            await asyncio.sleep(0.2)
    finally:
        await raw.close()


async def test_broken_stream_fails_the_waits_and_the_next_wait_reconnects() -> None:
    with started(EtcdServer()) as server:
        backend = EtcdBackend.from_url(server.url, timeout=2)
        try:
            elections = [name(), name()]
            for election in elections:
                await backend.lease(election).try_acquire("one", TTL, None)
            errors: list[BaseException] = []

            async def wait_once(election: str) -> None:
                watch = backend.lease(election).watch()
                try:
                    await watch.__anext__()
                    await watch.__anext__()
                except BaseException as exc:
                    errors.append(exc)
                finally:
                    await watch.aclose()

            tasks = [asyncio.create_task(wait_once(e)) for e in elections]
            await asyncio.sleep(0.5)
            assert backend.watcher.streams_opened == 1
            server.kill()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            assert len(errors) == 2 and all(isinstance(e, BackendUnavailable) for e in errors), errors
            server.start()
            watch = backend.lease(elections[0]).watch()
            deadline = time.monotonic() + 15
            while True:
                try:
                    await watch.__anext__()
                    break
                except BackendUnavailable:
                    assert time.monotonic() < deadline, "no reconnect"
                    await watch.aclose()
                    watch = backend.lease(elections[0]).watch()
                    await asyncio.sleep(0.2)
            second = asyncio.create_task(watch.__anext__())
            await asyncio.sleep(0.3)
            assert backend.watcher.streams_opened == 2
            assert watch_streams(server) == 1
            second.cancel()
            await asyncio.gather(second, return_exceptions=True)
            await watch.aclose()
        finally:
            await backend.aclose()

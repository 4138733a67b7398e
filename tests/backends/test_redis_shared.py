"""One Redis backend object, many elections: one pub/sub connection, renewals heard without a GET,
a broken subscription reported to every watch, a bounded connection pool. Real ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from leaderlib._errors import BackendUnavailable
from leaderlib.backends import LeaseRecord
from leaderlib.backends.redis import RedisBackend
from leaderlib.testing.pytest_plugin import started
from leaderlib.testing.servers import RedisServer

LEASE = 5.0


def election() -> str:
    return f"shared-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def admin_of(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    admin = aioredis.Redis(**server.redis_kwargs())
    try:
        yield admin
    finally:
        await admin.aclose()


async def clients(admin: aioredis.Redis, kind: str) -> int:
    return len(await admin.client_list(_type=kind))


class Follower:
    """A watch in a task, collecting what it yields."""

    def __init__(self, backend: RedisBackend, name: str) -> None:
        self.seen: list[LeaseRecord | None] = []
        self.task = asyncio.create_task(self._run(backend, name))

    async def _run(self, backend: RedisBackend, name: str) -> None:
        async for record in backend.lease(name).watch():
            self.seen.append(record)

    async def until(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


async def test_many_elections_share_one_pubsub_connection(redis_server: RedisServer) -> None:
    """50 elections watched on one backend object: one pub/sub connection, each watch hears its own."""
    names = [election() for _ in range(50)]
    async with admin_of(redis_server) as admin:
        before = await clients(admin, "pubsub")
        backend = RedisBackend.from_url(redis_server.url)
        followers = [Follower(backend, name) for name in names]
        try:
            for follower in followers:
                await follower.until(1)
            assert await clients(admin, "pubsub") == before + 1
            assert all(f.seen == [None] for f in followers)
            record = (await backend.lease(names[7]).try_acquire("replica-a", LEASE, None)).record
            assert record is not None
            await followers[7].until(2)
            assert followers[7].seen[1] == record
            await asyncio.sleep(0.1)
            assert all(len(f.seen) == 1 for i, f in enumerate(followers) if i != 7)
            # Watches that stop unsubscribe their channel; the connection stays for the others.
            for follower in followers[:10]:
                await follower.stop()
            channels = await admin.pubsub_channels(f"leaderlib:{names[0][:7]}*")
            assert len(channels) == 40, channels
            assert await clients(admin, "pubsub") == before + 1
        finally:
            for follower in followers:
                await follower.stop()
            await backend.aclose()
        async with asyncio.timeout(2):  # the server notices the close a moment later
            while await clients(admin, "pubsub") != before:
                await asyncio.sleep(0.01)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, so INFO commandstats counts only its commands."""
    with started(RedisServer()) as server:
        yield server


async def test_a_renewal_reaches_a_watch_without_a_get(own_redis: RedisServer) -> None:
    """Each renewal is published with its record: the watch yields the new version and a fresh
    expires_in from the message; the only GETs are the renew script's own."""
    redis_server = own_redis
    name = election()
    leader = RedisBackend.from_url(redis_server.url)
    follower_backend = RedisBackend.from_url(redis_server.url)
    follower = Follower(follower_backend, name)
    async with admin_of(redis_server) as admin:
        try:
            record = (await leader.lease(name).try_acquire("replica-a", LEASE, None)).record
            assert record is not None
            record = await leader.lease(name).renew(record)  # loads the script (NOSCRIPT once)
            async with asyncio.timeout(5):
                while not follower.seen or follower.seen[-1] != record:
                    await asyncio.sleep(0.005)
            seen = len(follower.seen)
            before = await admin.info("commandstats")
            renewed = record
            for _ in range(5):
                await asyncio.sleep(0.2)
                renewed = await leader.lease(name).renew(renewed)
            await follower.until(seen + 5)
            after = await admin.info("commandstats")
            last = follower.seen[-1]
            assert last is not None and last.version == renewed.version
            assert last.fencing_token == record.fencing_token and last.holder == "replica-a"
            assert last.expires_in is not None and LEASE - 0.05 <= last.expires_in <= LEASE

            def calls(stats: dict[str, dict[str, int]], command: str) -> int:
                return stats.get(f"cmdstat_{command}", {}).get("calls", 0)

            delta = {c: calls(after, c) - calls(before, c) for c in ("evalsha", "get", "pttl", "publish")}
            assert delta == {"evalsha": 5, "get": 5, "pttl": 0, "publish": 5}, delta
        finally:
            await follower.stop()
            await leader.aclose()
            await follower_backend.aclose()


async def test_a_killed_subscription_fails_every_watch_and_the_next_watch_reconnects(
    redis_server: RedisServer,
) -> None:
    names = [election(), election()]
    backend = RedisBackend.from_url(redis_server.url)
    followers = [Follower(backend, name) for name in names]
    try:
        for follower in followers:
            await follower.until(1)
        async with admin_of(redis_server) as admin:
            assert await admin.client_kill_filter(_type="pubsub") >= 1
        for follower in followers:
            with pytest.raises(BackendUnavailable):
                await asyncio.wait_for(follower.task, 5)
        again = Follower(backend, names[0])
        try:
            await again.until(1)
            record = (await backend.lease(names[0]).try_acquire("replica-a", LEASE, None)).record
            assert record is not None
            await backend.lease(names[0]).release(record)
            await again.until(3)
            assert again.seen[1:] == [record, None]
        finally:
            await again.stop()
    finally:
        for follower in followers:
            await follower.stop()
        await backend.aclose()


async def test_concurrent_calls_of_many_elections_share_a_few_connections(redis_server: RedisServer) -> None:
    """2,000 elections acquiring at once on one backend object: all answered, over a bounded pool."""
    names = [election() for _ in range(2000)]
    backend = RedisBackend.from_url(redis_server.url)
    try:
        async with admin_of(redis_server) as admin:
            before = await clients(admin, "normal")
            results = await asyncio.gather(
                *(backend.lease(name).try_acquire("replica-a", LEASE, None) for name in names)
            )
            assert all(result.acquired for result in results)
            renewed = await asyncio.gather(
                *(backend.lease(r.record.election).renew(r.record) for r in results if r.record)
            )
            assert len(renewed) == len(names)
            assert await clients(admin, "normal") - before <= 8
    finally:
        await backend.aclose()

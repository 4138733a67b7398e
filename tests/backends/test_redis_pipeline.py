"""One Redis backend object, many elections: their script calls go out pipelined, a few round
trips for hundreds of calls, and each still gets its own answer. Real ``redis-server``."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from leaderlib._errors import LeaseLost
from leaderlib.backends.redis import RedisBackend
from leaderlib.testing.pytest_plugin import started
from leaderlib.testing.servers import RedisServer

LEASE = 5.0
ELECTIONS = 500


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, so INFO stats counts only this test's reads."""
    with started(RedisServer()) as server:
        yield server


async def reads(server: RedisServer) -> int:
    """How many times the server has read from a client socket (one per round trip at most)."""
    admin = aioredis.Redis(**server.redis_kwargs())
    try:
        stats = await admin.info("stats")
    finally:
        await admin.aclose()
    return int(stats["total_reads_processed"])


async def test_renewals_of_many_elections_go_out_in_a_few_round_trips(own_redis: RedisServer) -> None:
    """500 elections renewing at once: the server reads their 500 EVALSHAs in a few reads
    (sent one by one, each was a read of its own), and each renewal gets its own record."""
    names = [f"pipelined-{uuid.uuid4().hex[:10]}" for _ in range(ELECTIONS)]
    backend = RedisBackend.from_url(own_redis.url)
    try:
        acquired = await asyncio.gather(
            *(backend.lease(name).try_acquire("replica-a", LEASE, None) for name in names)
        )
        records = [result.record for result in acquired if result.acquired and result.record is not None]
        assert len(records) == ELECTIONS
        before = await reads(own_redis)
        renewed = await asyncio.gather(*(backend.lease(r.election).renew(r) for r in records))
        round_trips = await reads(own_redis) - before - 1  # the INFO itself is one read
        assert round_trips <= ELECTIONS // 10, round_trips
        for record, new in zip(records, renewed, strict=True):
            assert (new.election, new.fencing_token, new.holder) == (
                record.election,
                record.fencing_token,
                record.holder,
            )
            assert new.version != record.version
            stored = await backend.lease(record.election).get()  # what a follower reads
            assert stored is not None and dataclasses.replace(stored, expires_in=new.expires_in) == new
    finally:
        await backend.aclose()


async def test_a_call_that_fails_in_a_pipeline_fails_alone(own_redis: RedisServer) -> None:
    """One renewal of a lease that is gone, pipelined with others: it alone is LeaseLost."""
    names = [f"pipelined-{uuid.uuid4().hex[:10]}" for _ in range(20)]
    backend = RedisBackend.from_url(own_redis.url)
    try:
        acquired = await asyncio.gather(
            *(backend.lease(name).try_acquire("replica-a", LEASE, None) for name in names)
        )
        records = [result.record for result in acquired if result.record is not None]
        await backend.lease(records[3].election).release(records[3])
        outcomes = await asyncio.gather(
            *(backend.lease(r.election).renew(r) for r in records), return_exceptions=True
        )
        assert isinstance(outcomes[3], LeaseLost)
        assert not any(isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 3)
    finally:
        await backend.aclose()


async def test_a_lone_call_is_one_evalsha_in_the_callers_task(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One election alone: its acquisition is a plain EVALSHA made by the calling task, with
    no pipeline (redis-py's costs a shielded task to give its connection back) and no batch task."""
    backend = RedisBackend.from_url(own_redis.url)
    client = backend._client
    callers: list[asyncio.Task[object] | None] = []
    evalsha = client.evalsha

    def spied(*args: object) -> object:
        callers.append(asyncio.current_task())
        return evalsha(*args)  # type: ignore[arg-type]

    def no_pipeline(*args: object, **kwargs: object) -> object:
        raise AssertionError("a lone call opened a pipeline")

    try:
        await backend.lease("warm-up").try_acquire("replica-a", LEASE, None)  # loads the script
        monkeypatch.setattr(client, "evalsha", spied)
        monkeypatch.setattr(client, "pipeline", no_pipeline)
        acquired = await backend.lease(f"lone-{uuid.uuid4().hex[:10]}").try_acquire("replica-a", LEASE, None)
        assert acquired.acquired
        assert callers == [asyncio.current_task()]
    finally:
        monkeypatch.undo()
        await backend.aclose()

"""Job run records on Redis beyond the conformance suite: their cost, their key, broken keys.

Real ``redis-server`` (the session's). The fence itself (replaced, released,
foreign terms) is in tests/conformance/test_runs.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from leaderlib._errors import CorruptLeaseRecord, LeaseLost
from leaderlib.backends import JobRun, LeaseRecord
from leaderlib.backends._runs import encode_run
from leaderlib.backends.redis import RedisBackend
from leaderlib.testing.servers import RedisServer

LEASE = 2.0
TICK = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)


def election() -> str:
    return f"runs-{uuid.uuid4().hex[:10]}"


def run_of(record: LeaseRecord, job: str = "report") -> JobRun:
    return JobRun(
        job=job, tick=TICK, fencing_token=record.fencing_token, identity=record.holder, started_at=TICK
    )


@contextlib.asynccontextmanager
async def opened(server: RedisServer) -> AsyncIterator[tuple[RedisBackend, aioredis.Redis]]:
    backend = RedisBackend.from_url(server.url)
    admin = aioredis.Redis(**server.redis_kwargs())
    try:
        yield backend, admin
    finally:
        await backend.aclose()
        await admin.aclose()


async def acquired(backend: RedisBackend, name: str) -> LeaseRecord:
    record = (await backend.lease(name).try_acquire("holder-a", LEASE, None)).record
    assert record is not None and record.holder == "holder-a"
    return record


async def test_a_run_record_is_one_round_trip_into_the_runs_hash(redis_server: RedisServer) -> None:
    """record_run is one EVALSHA (GET the lease, HSET the record, nothing else); last_runs one
    HGETALL. The record is the codec's JSON in field ``job`` of ``P E:runs``."""
    name = election()
    async with opened(redis_server) as (backend, admin):
        record = await acquired(backend, name)
        await backend.lease(name).record_run(run_of(record, "warm-up"))  # loads the script
        before = await admin.info("commandstats")
        run = run_of(record)
        await backend.lease(name).record_run(run)
        middle = await admin.info("commandstats")
        assert await backend.lease(name).last_runs() == {"warm-up": run_of(record, "warm-up"), "report": run}
        after = await admin.info("commandstats")
        raw = await admin.hget(f"leaderlib:{name}:runs", "report")

    def delta(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, int]:
        names = {key for key in (*a, *b) if key.startswith("cmdstat_")}
        counts = {key[8:]: b.get(key, {}).get("calls", 0) - a.get(key, {}).get("calls", 0) for key in names}
        return {key: count for key, count in counts.items() if count and key != "info"}

    assert delta(before, middle) == {"evalsha": 1, "get": 1, "hset": 1}
    assert delta(middle, after) == {"hgetall": 1}
    assert raw == encode_run(run).encode()


async def test_a_runs_key_of_the_wrong_kind_is_corrupt_and_the_lease_goes_on(
    redis_server: RedisServer,
) -> None:
    name = election()
    async with opened(redis_server) as (backend, admin):
        record = await acquired(backend, name)
        await admin.set(f"leaderlib:{name}:runs", "not a hash")
        for call in (backend.lease(name).record_run(run_of(record)), backend.lease(name).last_runs()):
            with pytest.raises(CorruptLeaseRecord, match=f"leaderlib:{name}:runs"):
                await call
        assert await admin.get(f"leaderlib:{name}:runs") == b"not a hash", "left alone"
        renewed = await backend.lease(name).renew(record)
        assert renewed.fencing_token == record.fencing_token


async def test_a_lease_key_that_is_not_a_lease_fences_every_run_out(redis_server: RedisServer) -> None:
    name = election()
    async with opened(redis_server) as (backend, admin):
        record = await acquired(backend, name)
        await admin.set(f"leaderlib:{name}", b"\x00not a lease{", px=int(LEASE * 1000))
        with pytest.raises(LeaseLost, match="released or expired"):
            await backend.lease(name).record_run(run_of(record))
        assert await admin.exists(f"leaderlib:{name}:runs") == 0

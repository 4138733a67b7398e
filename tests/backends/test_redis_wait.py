"""``wait_replicas``: a term or a run record counts only once replicas have it (issue 14).

A real master and replica (the Sentinel group's, used here through a plain
``redis://`` URL of the master; the Sentinels stay idle). Replication is cut
with :meth:`RedisSentinelGroup.cut_replication` (the master refuses its
replica's resync), so a write that reaches no replica is deterministic. The
failover itself is in test_redis_sentinel.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from leaderlib._errors import AccessDenied, BackendUnavailable, ConfigError
from leaderlib.backends import JobRun, LeaseRecord, backend_from_url
from leaderlib.backends.redis import RedisBackend, RedisLease
from leaderlib.testing.pytest_plugin import started
from leaderlib.testing.sentinel import RedisSentinelGroup
from tests.backends.test_redis import LEAST_PRIVILEGE

LEASE = 2.0
#: Short, so a refused attempt costs little; well under the default socket_timeout (1 s).
WAIT = "wait_replicas=1&wait_timeout=0.2"


def election() -> str:
    return f"wait-{uuid.uuid4().hex[:10]}"


def run_of(record: LeaseRecord, job: str = "report") -> JobRun:
    tick = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)
    return JobRun(
        job=job, tick=tick, fencing_token=record.fencing_token, identity=record.holder, started_at=tick
    )


@pytest.fixture(scope="module")
def group() -> Iterator[RedisSentinelGroup]:
    with started(RedisSentinelGroup()) as made:
        yield made


@contextlib.contextmanager
def replication_cut(group: RedisSentinelGroup) -> Iterator[None]:
    group.cut_replication()
    try:
        yield
    finally:
        group.heal_replication()


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[RedisBackend]:
    backend = backend_from_url(url)
    assert isinstance(backend, RedisBackend)
    try:
        yield backend
    finally:
        await backend.aclose()


async def command_calls(group: RedisSentinelGroup, *names: str) -> dict[str, int]:
    admin = aioredis.Redis(**group.master().redis_kwargs())
    try:
        stats = await admin.info("commandstats")
    finally:
        await admin.aclose()
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in names}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("wait_replicas=-1", "wait_replicas"),
        ("wait_replicas=one", "wait_replicas"),
        ("wait_replicas=1&wait_timeout=0", "wait_timeout"),
        ("wait_replicas=1&wait_timeout=1.0", "wait_timeout"),  # not less than socket_timeout 1.0
        ("wait_replicas=1&wait_timeout=2&socket_timeout=1.5", "wait_timeout"),
    ],
)
def test_bad_wait_options_name_the_field(query: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        backend_from_url(f"redis://127.0.0.1?{query}")
    assert caught.value.field == field, str(caught.value)


def test_wait_options_parse() -> None:
    backend = backend_from_url("redis+sentinel://127.0.0.1/m?wait_replicas=2&wait_timeout=0.25")
    assert isinstance(backend, RedisBackend)
    assert (backend.wait.replicas, backend.wait.timeout, backend.wait.timeout_ms) == (2, 0.25, 250)
    assert backend_from_url("redis://127.0.0.1").wait.replicas == 0  # type: ignore[attr-defined]


async def test_confirmed_writes_cost_a_wait_each_and_nothing_else(group: RedisSentinelGroup) -> None:
    """With the replica up, every acquisition attempt and run record runs its script and one WAIT,
    pipelined on the script's connection (a held attempt too: the pipeline goes before the answer
    is known); renewals and releases do not wait."""

    async def cycle(lease: RedisLease) -> None:
        acquired = await lease.try_acquire("holder-a", LEASE, None)
        assert acquired.acquired and acquired.record is not None
        assert not (await lease.try_acquire("holder-b", LEASE, None)).acquired
        await lease.record_run(run_of(acquired.record))
        await lease.release(await lease.renew(acquired.record))

    async with opened(f"{group.master().url}?{WAIT}") as backend:
        await cycle(backend.lease(election()))  # loads the scripts
        before = await command_calls(group, "evalsha", "wait")
        await cycle(backend.lease(election()))
        after = await command_calls(group, "evalsha", "wait")
    assert {k: after[k] - before[k] for k in after} == {"evalsha": 5, "wait": 3}


async def test_an_acquisition_no_replica_confirmed_is_given_back(group: RedisSentinelGroup) -> None:
    """Replication cut: the attempt is BackendUnavailable saying why, the lease is released at
    once (another candidate need not wait for it to expire), and without the option the same
    attempt succeeds: the term a failover could lose."""
    name = election()
    async with opened(f"{group.master().url}?{WAIT}") as waiting, opened(group.master().url) as plain:
        with replication_cut(group):
            with pytest.raises(BackendUnavailable) as caught:
                await waiting.lease(name).try_acquire("holder-a", LEASE, None)
            assert "reached 0 of the 1 replicas" in str(caught.value), caught.value
            assert await plain.lease(name).get() is None, "an unconfirmed term must be given back"
            taken = await plain.lease(name).try_acquire("holder-b", LEASE, None)
            assert taken.acquired and taken.record is not None
            assert taken.record.fencing_token == 2, "the refused attempt burned token 1 on the master"
        # Replication back: the waiting backend acquires again.
        await plain.lease(name).release(taken.record)
        again = await waiting.lease(name).try_acquire("holder-a", LEASE, None)
        assert again.acquired and again.record is not None and again.record.fencing_token == 3


async def test_a_run_record_no_replica_confirmed_raises(group: RedisSentinelGroup) -> None:
    name = election()
    async with opened(f"{group.master().url}?{WAIT}") as backend:
        lease = backend.lease(name)
        acquired = await lease.try_acquire("holder-a", LEASE, None)
        assert acquired.acquired and acquired.record is not None
        run = run_of(acquired.record)
        with replication_cut(group):
            with pytest.raises(BackendUnavailable, match="run record of job 'report' reached 0 of the 1"):
                await lease.record_run(run)
            # Written on the master all the same: only a failover could lose it.
            assert await lease.last_runs() == {"report": run}
            held = await lease.get()
            assert held is not None and held.version == acquired.record.version, "the term goes on"


async def test_without_wait_permission_the_grant_names_it(group: RedisSentinelGroup) -> None:
    # Exactly what the backend documents without wait_replicas, on the default prefix.
    user = dataclasses.replace(
        LEAST_PRIVILEGE,
        name=f"nowait{uuid.uuid4().hex[:6]}",
        key_patterns=("leaderlib:*",),
        channel_patterns=("leaderlib:*",),
    )
    master = group.master()
    master.cli("ACL", "SETUSER", *user.acl_rule().split())
    try:
        async with opened(f"{master.url_for(user.name, user.password)}?{WAIT}") as backend:
            with pytest.raises(AccessDenied, match=r"\+hgetall \+wait"):
                await backend.lease(election()).try_acquire("holder-a", LEASE, None)
    finally:
        master.cli("ACL", "DELUSER", user.name)

"""Cases for the "Stores" rows of docs/bad-input.md, each against the real store."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from leaderlib.backends import Backend, backend_from_url
from leaderlib.testing.servers import EtcdServer, RedisServer, free_port

from .cases import Context, Seen, case, raised


def _name() -> str:
    return f"bad-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def _backend(url: str) -> AsyncIterator[Backend]:
    backend = backend_from_url(url)
    try:
        yield backend
    finally:
        await backend.aclose()


def _redis(ctx: Context) -> RedisServer:
    server: RedisServer = ctx.server("redis_server")
    return server


@case("store.redis-no-ttl")
async def _redis_key_without_ttl(ctx: Context) -> Seen:
    server, election = _redis(ctx), _name()
    client = aioredis.Redis.from_url(server.url)
    try:
        record = '{"holder":"by-hand","token":"t","fencing_token":1,"lease_duration":10,"seq":1}'
        await client.set(f"leaderlib:{election}", record)  # no PX: never expires
    finally:
        await client.aclose()
    async with _backend(server.url) as backend:
        return await raised(lambda: backend.lease(election).try_acquire("me", 2.0, None))


@case("store.redis-not-a-lease")
async def _redis_key_not_a_lease(ctx: Context) -> Seen:
    server, election = _redis(ctx), _name()
    client = aioredis.Redis.from_url(server.url)
    try:
        await client.set(f"leaderlib:{election}", "hello", px=60_000)
    finally:
        await client.aclose()
    async with _backend(server.url) as backend:
        return await raised(lambda: backend.lease(election).get())


@case("store.redis-reserved-suffix")
async def _redis_reserved_suffix(ctx: Context) -> Seen:
    async with _backend(_redis(ctx).url) as backend:
        return await raised(lambda: backend.lease("nightly:fencing").try_acquire("me", 2.0, None))


@case("store.redis-wrong-password")
async def _redis_wrong_password(ctx: Context) -> Seen:
    with RedisServer(password="the-password", directory=ctx.tmp_path / "redis") as server:
        async with _backend(server.url_for(None, "not-the-password")) as backend:
            return await raised(lambda: backend.lease(_name()).get())


@case("store.redis-unreachable")
async def _redis_unreachable(ctx: Context) -> Seen:
    async with _backend(f"redis://127.0.0.1:{free_port()}?socket_connect_timeout=0.5") as backend:
        return await raised(lambda: backend.lease(_name()).get())


@case("store.etcd-nested-name")
async def _etcd_nested_name(ctx: Context) -> Seen:
    # Refused when the handle is made: no etcd needs to answer.
    async with _backend("etcd://127.0.0.1:2379") as backend:
        return await raised(lambda: backend.lease("jobs/nightly"))


@case("store.etcd-port-not-a-number")
async def _etcd_port_not_a_number(ctx: Context) -> Seen:
    return await raised(lambda: backend_from_url("etcd://127.0.0.1:notaport"))


@case("store.etcd-auth-without-credentials")
async def _etcd_auth_without_credentials(ctx: Context) -> Seen:
    with EtcdServer(directory=ctx.tmp_path / "etcd") as server:
        server.enable_auth(users=[("elector", "right-password", "/leaderlib/")])
        async with _backend(server.url) as backend:
            return await raised(lambda: backend.lease(_name()).try_acquire("me", 2.0, None))

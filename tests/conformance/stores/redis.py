"""The conformance suite on ``redis://``, against a real ``redis-server``."""

from __future__ import annotations

import json
import secrets
import uuid

import pytest
import redis.asyncio as aioredis

from leaderlib.backends import Backend
from leaderlib.backends.redis import RedisBackend
from leaderlib.testing.servers import RedisServer

CORRUPTIBLE = True


def _server(request: pytest.FixtureRequest) -> RedisServer:
    """The session's Redis, from the ``redis_server`` fixture of leaderlib.testing.pytest_plugin."""
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


class RedisHarness:
    # The suffixes of an election's own counter, channel and run records.
    bad_election_names = ("nightly:fencing", "nightly:events", "nightly:runs")

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        # A prefix per test keeps tests apart even on a shared server.
        self.prefix = f"conformance-{uuid.uuid4().hex[:8]}:"
        self.url = f"{server.url}/0?prefix={self.prefix}"

    def backend(self) -> Backend:
        return RedisBackend.from_url(self.url)

    async def _raw(self) -> aioredis.Redis:
        return aioredis.Redis(**self.server.redis_kwargs())

    async def write_foreign(self, election: str, holder: str, lease_duration: float) -> None:
        """What another implementation of the format would do, with plain commands: INCR, SET PX."""
        client = await self._raw()
        try:
            fencing = await client.incr(f"{self.prefix}{election}:fencing")
            value = {
                "holder": holder,
                "token": secrets.token_hex(8),
                "fencing_token": fencing,
                "lease_duration": lease_duration,
            }
            await client.set(f"{self.prefix}{election}", json.dumps(value), px=int(lease_duration * 1000))
        finally:
            await client.aclose()

    async def write_corrupt(self, election: str) -> None:
        client = await self._raw()
        try:
            await client.set(f"{self.prefix}{election}", b"\x00not a lease{")
        finally:
            await client.aclose()

    async def write_corrupt_run(self, election: str, job: str) -> None:
        client = await self._raw()
        try:
            await client.hset(f"{self.prefix}{election}:runs", job, b"\x00not a run{")
        finally:
            await client.aclose()


def make_harness(request: pytest.FixtureRequest) -> RedisHarness:
    return RedisHarness(_server(request))

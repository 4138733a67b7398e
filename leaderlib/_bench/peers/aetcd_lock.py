"""aetcd's ``Lock``: ``acquire()`` (a lease plus a put-if-absent transaction; a follower waits
on a watch for the key's deletion), ``refresh()`` (a lease keepalive) every renew interval,
``release()`` on a graceful stop. Its default ``ttl`` is 60 s: set to the bench lease (matched)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, ClassVar

import aetcd

from ..stores import Target
from . import BENCH_TIMING, Emit, Peer


async def _client(target: Target) -> Any:
    host, port = target.hostport
    client = aetcd.Client(host=host, port=port)
    await client.connect()
    return client


class AetcdLockPeer(Peer):
    key = "aetcd-lock"
    subject = "aetcd Lock"
    settings = (
        f"ttl {int(BENCH_TIMING.lease)} s (matched; default 60 s), "
        f"refresh every {BENCH_TIMING.renew_interval:g} s"
    )
    unsupported: ClassVar[dict[str, str]] = {
        "scale": "not measured: no renewal loop of its own (the caller refreshes each lock)",
    }

    def _lock(self, client: Any, name: str) -> Any:
        return client.lock(f"/bench-lock/{name}".encode(), ttl=int(BENCH_TIMING.lease))

    async def acquire_samples(self, target: Target, n: int) -> list[float]:
        client = await _client(target)
        prefix = uuid.uuid4().hex[:6]
        samples = []
        try:
            await client.get(b"/bench-lock/warm")
            for i in range(n):
                lock = self._lock(client, f"{prefix}-{i}")
                started = time.perf_counter()
                assert await lock.acquire(timeout=None)
                samples.append(time.perf_counter() - started)
                await lock.release()
                await lock.lease.revoke()
        finally:
            await client.close()
        return samples

    async def renew_samples(self, target: Target, n: int) -> list[float]:
        client = await _client(target)
        try:
            lock = self._lock(client, uuid.uuid4().hex[:6])
            assert await lock.acquire(timeout=None)
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                await lock.refresh()
                samples.append(time.perf_counter() - started)
            await lock.release()
        finally:
            await client.close()
        return samples

    async def campaign(self, target: Target, election: str, identity: str, emit: Emit) -> None:
        client = await _client(target)
        lock = self._lock(client, election)
        try:
            emit("started")
            await lock.acquire(timeout=None)
            emit("leading")
            while True:
                await asyncio.sleep(BENCH_TIMING.renew_interval)
                emit("renew")
                await lock.refresh()
        finally:
            try:
                if lock.lease is not None:
                    await asyncio.wait_for(lock.release(), 5.0)
            finally:
                await client.close()

"""redis-py's ``Lock`` as an election: a blocking ``acquire`` (its default ``sleep=0.1`` s
polling), then ``reacquire`` every renew interval; a graceful stop ``release``s it.

Its default ``timeout=None`` never expires a lock, so a crashed holder keeps it
for ever: failover runs with ``timeout`` set to the bench lease (matched).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, ClassVar

import redis

from ..stores import Target
from . import BENCH_TIMING, Emit, Peer, in_thread_until_cancelled


def _client(target: Target) -> redis.Redis:
    host, port = target.hostport
    return redis.Redis(host=host, port=port)


class RedisLockPeer(Peer):
    key = "redis-lock"
    subject = "redis-py Lock"
    settings = (
        f"sleep 0.1 s (default), timeout {BENCH_TIMING.lease:g} s (matched; default None never expires), "
        f"reacquire every {BENCH_TIMING.renew_interval:g} s"
    )
    unsupported: ClassVar[dict[str, str]] = {
        "scale": "no renewal loop of its own: E locks need E threads the caller writes",
    }

    def _lock(self, client: redis.Redis, name: str) -> Any:
        return client.lock(f"bench-lock:{name}", timeout=BENCH_TIMING.lease, sleep=0.1)

    async def acquire_samples(self, target: Target, n: int) -> list[float]:
        def measure() -> list[float]:
            client = _client(target)
            client.ping()
            samples = []
            prefix = uuid.uuid4().hex[:6]
            for i in range(n):
                lock = self._lock(client, f"{prefix}-{i}")
                started = time.perf_counter()
                assert lock.acquire(blocking=True)
                samples.append(time.perf_counter() - started)
                lock.release()
            client.close()
            return samples

        import asyncio

        return await asyncio.to_thread(measure)

    async def renew_samples(self, target: Target, n: int) -> list[float]:
        def measure() -> list[float]:
            client = _client(target)
            lock = self._lock(client, uuid.uuid4().hex[:6])
            assert lock.acquire(blocking=True)
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                lock.reacquire()
                samples.append(time.perf_counter() - started)
            lock.release()
            client.close()
            return samples

        import asyncio

        return await asyncio.to_thread(measure)

    async def campaign(self, target: Target, election: str, identity: str, emit: Emit) -> None:
        def loop(stop: threading.Event) -> None:
            client = _client(target)
            lock = self._lock(client, election)
            emit("started")
            # blocking_timeout only so a stop request is noticed; it polls every 0.1 s meanwhile.
            while not stop.is_set() and not lock.acquire(blocking=True, blocking_timeout=0.5):
                pass
            if stop.is_set():
                client.close()
                return
            emit("leading")
            while not stop.wait(BENCH_TIMING.renew_interval):
                emit("renew")
                lock.reacquire()
            lock.release()
            client.close()

        await in_thread_until_cancelled(loop)

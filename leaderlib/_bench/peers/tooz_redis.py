"""tooz's Redis leader election, as its documentation runs it: ``watch_elected_as_leader``,
then a loop of ``heartbeat()``, ``run_watchers()`` and ``sleep(0.1)``; a graceful stop is
``stop()``, which releases the leader lock.

The lock's timeout comes from the URL's ``timeout`` (default 30 s): set to the
bench lease (matched) so a failover run ends in seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, ClassVar

from tooz import coordination

from ..stores import Target
from . import BENCH_TIMING, Emit, Peer, in_thread_until_cancelled

LOOP_SLEEP = 0.1


def _coordinator(target: Target, member: str) -> Any:
    host, port = target.hostport
    url = f"redis://{host}:{port}?timeout={int(BENCH_TIMING.lease)}"
    coordinator = coordination.get_coordinator(url, member.encode())
    coordinator.start()
    return coordinator


class ToozPeer(Peer):
    key = "tooz"
    subject = "tooz (Redis)"
    settings = (
        f"heartbeat + run_watchers every {LOOP_SLEEP:g} s (documented loop), "
        f"timeout {BENCH_TIMING.lease:g} s (matched; default 30 s)"
    )
    unsupported: ClassVar[dict[str, str]] = {
        "scale": "not measured: one coordinator per process, every group's lock heartbeated in one loop",
    }

    async def acquire_samples(self, target: Target, n: int) -> list[float]:
        def measure() -> list[float]:
            coordinator = _coordinator(target, f"bench-{uuid.uuid4().hex[:6]}")
            samples = []
            for i in range(n):
                group = f"bench-acquire-{uuid.uuid4().hex[:6]}-{i}".encode()
                elected = threading.Event()
                coordinator.watch_elected_as_leader(group, lambda _event, elected=elected: elected.set())
                started = time.perf_counter()
                while not elected.is_set():
                    coordinator.run_watchers()
                samples.append(time.perf_counter() - started)
                # The Redis driver cannot stand down: forget the group (its lock is released by stop()).
                coordinator._hooks_elected_leader.pop(group)
            coordinator.stop()
            return samples

        return await asyncio.to_thread(measure)

    async def renew_samples(self, target: Target, n: int) -> list[float]:
        def measure() -> list[float]:
            coordinator = _coordinator(target, f"bench-{uuid.uuid4().hex[:6]}")
            group = f"bench-renew-{uuid.uuid4().hex[:6]}".encode()
            elected = threading.Event()
            coordinator.watch_elected_as_leader(group, lambda _event: elected.set())
            while not elected.is_set():
                coordinator.run_watchers()
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                coordinator.heartbeat()
                samples.append(time.perf_counter() - started)
            coordinator.stop()
            return samples

        return await asyncio.to_thread(measure)

    async def campaign(self, target: Target, election: str, identity: str, emit: Emit) -> None:
        def loop(stop: threading.Event) -> None:
            coordinator = _coordinator(target, identity)
            leading = threading.Event()

            def elected(_event: Any) -> None:
                leading.set()
                emit("leading")

            coordinator.watch_elected_as_leader(election.encode(), elected)
            emit("started")
            while not stop.is_set():
                if leading.is_set():
                    emit("renew")
                coordinator.heartbeat()
                coordinator.run_watchers()
                stop.wait(LOOP_SLEEP)
            coordinator.stop()

        await in_thread_until_cancelled(loop)

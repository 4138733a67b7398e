"""leaderlib itself: a :class:`LeaderElector` per candidate, each on its own backend object
(as separate replicas would have), timings from :data:`BENCH_TIMING`."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

from leaderlib import Acquisition, Backend, ElectionConfig, LeaderElector, LeaseRecord, backend_from_url

from ..stores import Target
from . import BENCH_TIMING, Emit, Peer


def bench_config(identity: str = "", **overrides: float | bool) -> ElectionConfig:
    """The bench's election timing as an :class:`ElectionConfig`."""
    fields: dict[str, float | bool] = {
        "lease_duration": BENCH_TIMING.lease,
        "renew_deadline": BENCH_TIMING.renew_deadline,
        "renew_interval": BENCH_TIMING.renew_interval,
        "retry_period": BENCH_TIMING.retry,
        **overrides,
    }
    if identity:
        return ElectionConfig(identity=identity, **fields)  # type: ignore[arg-type]
    return ElectionConfig(**fields)  # type: ignore[arg-type]


class ObservedBackend:
    """A backend that reports each renewal as it is sent (``emit("renew")``) and counts them."""

    def __init__(self, inner: Backend, emit: Emit | None = None) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.observation_granularity = inner.observation_granularity
        self.emit = emit
        self.renewals: dict[str, list[float]] = {}
        """Election -> CLOCK_MONOTONIC times each renewal was sent."""

    async def get(self, election: str) -> LeaseRecord | None:
        return await self.inner.get(election)

    async def try_acquire(
        self, election: str, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        return await self.inner.try_acquire(election, identity, lease_duration, takeover)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        self.renewals.setdefault(record.election, []).append(time.monotonic())
        if self.emit is not None:
            self.emit("renew")
        return await self.inner.renew(record)

    async def release(self, record: LeaseRecord) -> None:
        await self.inner.release(record)

    def watch(self, election: str) -> AsyncIterator[LeaseRecord | None]:
        return self.inner.watch(election)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_until_leading(elector: LeaderElector, leading: asyncio.Event) -> asyncio.Task[None]:
    """Start ``elector`` and return its task once ``leading`` is set."""
    task = asyncio.create_task(elector.run())
    waiter = asyncio.create_task(leading.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # raises what run() raised
        raise RuntimeError("the elector stopped before leading")
    return task


class LeaderlibPeer(Peer):
    key = "leaderlib"
    subject = "leaderlib"
    settings = (
        f"lease {BENCH_TIMING.lease:g} s, renew_deadline {BENCH_TIMING.renew_deadline:g} s, "
        f"renew_interval {BENCH_TIMING.renew_interval:g} s, retry_period {BENCH_TIMING.retry:g} s "
        "(default; followers wake on the watch)"
    )
    unsupported: ClassVar[dict[str, str]] = {}

    async def acquire_samples(self, target: Target, n: int) -> list[float]:
        backend = backend_from_url(target.url)
        prefix = f"bench-acquire-{uuid.uuid4().hex[:6]}"
        samples = []
        try:
            await backend.get(f"{prefix}-warm")  # a warm connection, as a running service has
            for i in range(n):
                leading = asyncio.Event()

                async def lead(_leadership: object, leading: asyncio.Event = leading) -> None:
                    leading.set()

                elector = LeaderElector(f"{prefix}-{i}", backend, bench_config(), on_started_leading=lead)
                started = time.perf_counter()
                task = await run_until_leading(elector, leading)
                samples.append(time.perf_counter() - started)
                elector.stop()
                await task
        finally:
            await backend.aclose()
        return samples

    async def try_acquire_samples(self, target: Target, n: int) -> list[float]:
        """Seconds per ``Backend.try_acquire`` on a fresh election (the elector's first attempt)."""
        backend = backend_from_url(target.url)
        prefix = f"bench-try-{uuid.uuid4().hex[:6]}"
        samples, records = [], []
        try:
            await backend.get(f"{prefix}-warm")
            for i in range(n):
                started = time.perf_counter()
                acquisition = await backend.try_acquire(f"{prefix}-{i}", "bench", BENCH_TIMING.lease, None)
                samples.append(time.perf_counter() - started)
                if not acquisition.acquired or acquisition.record is None:
                    raise RuntimeError(f"try_acquire on a fresh election did not acquire: {acquisition}")
                records.append(acquisition.record)
            for record in records:
                await backend.release(record)
        finally:
            await backend.aclose()
        return samples

    async def renew_samples(self, target: Target, n: int) -> list[float]:
        backend = backend_from_url(target.url)
        try:
            acquisition = await backend.try_acquire(
                f"bench-renew-{uuid.uuid4().hex[:6]}", "bench", BENCH_TIMING.lease, None
            )
            record = acquisition.record
            assert record is not None
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                record = await backend.renew(record)
                samples.append(time.perf_counter() - started)
            await backend.release(record)
        finally:
            await backend.aclose()
        return samples

    async def campaign(self, target: Target, election: str, identity: str, emit: Emit) -> None:
        backend = ObservedBackend(backend_from_url(target.url), emit)

        async def lead(_leadership: object) -> None:
            emit("leading")

        elector = LeaderElector(election, backend, bench_config(identity), on_started_leading=lead)
        task = asyncio.create_task(elector.run())
        try:
            emit("started")
            await asyncio.shield(task)
        finally:
            elector.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10.0)
            await backend.aclose()

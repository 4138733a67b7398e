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
from leaderlib.backends import JobRun, Lease

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
    """A backend whose leases report each renewal as it is sent (``emit("renew")``) and count them."""

    def __init__(self, inner: Backend, emit: Emit | None = None) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.observation_granularity = inner.observation_granularity
        self.emit = emit
        self.renewals: dict[str, list[float]] = {}
        """Election -> CLOCK_MONOTONIC times each renewal was sent."""

    def lease(self, election: str) -> ObservedLease:
        return ObservedLease(self, self.inner.lease(election))

    async def aclose(self) -> None:
        await self.inner.aclose()


class ObservedLease:
    """One election's handle on an :class:`ObservedBackend`."""

    def __init__(self, backend: ObservedBackend, inner: Lease) -> None:
        self.backend = backend
        self.inner = inner
        self.election = inner.election

    async def get(self) -> LeaseRecord | None:
        return await self.inner.get()

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        return await self.inner.try_acquire(identity, lease_duration, takeover)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        self.backend.renewals.setdefault(self.election, []).append(time.monotonic())
        if self.backend.emit is not None:
            self.backend.emit("renew")
        return await self.inner.renew(record)

    async def release(self, record: LeaseRecord) -> None:
        await self.inner.release(record)

    def watch(self) -> AsyncIterator[LeaseRecord | None]:
        return self.inner.watch()

    async def record_run(self, run: JobRun) -> None:
        await self.inner.record_run(run)

    async def last_runs(self) -> dict[str, JobRun]:
        return await self.inner.last_runs()


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
            await backend.lease(f"{prefix}-warm").get()  # a warm connection, as a running service has
            for i in range(n):
                leading = asyncio.Event()
                led_at: list[float] = []

                async def lead(
                    _leadership: object, leading: asyncio.Event = leading, led_at: list[float] = led_at
                ) -> None:
                    led_at.append(time.perf_counter())  # what a user sees: on_started_leading runs
                    leading.set()

                elector = LeaderElector(f"{prefix}-{i}", backend, bench_config(), on_started_leading=lead)
                started = time.perf_counter()
                task = await run_until_leading(elector, leading)
                samples.append(led_at[0] - started)
                elector.stop()
                await task
        finally:
            await backend.aclose()
        return samples

    async def try_acquire_samples(self, target: Target, n: int) -> list[float]:
        """Seconds per ``Lease.try_acquire`` on a fresh election (the elector's first attempt)."""
        backend = backend_from_url(target.url)
        prefix = f"bench-try-{uuid.uuid4().hex[:6]}"
        samples, records = [], []
        try:
            await backend.lease(f"{prefix}-warm").get()
            for i in range(n):
                started = time.perf_counter()
                lease = backend.lease(f"{prefix}-{i}")
                acquisition = await lease.try_acquire("bench", BENCH_TIMING.lease, None)
                samples.append(time.perf_counter() - started)
                if not acquisition.acquired or acquisition.record is None:
                    raise RuntimeError(f"try_acquire on a fresh election did not acquire: {acquisition}")
                records.append((lease, acquisition.record))
            for lease, record in records:
                await lease.release(record)
        finally:
            await backend.aclose()
        return samples

    async def renew_samples(self, target: Target, n: int) -> list[float]:
        backend = backend_from_url(target.url)
        try:
            lease = backend.lease(f"bench-renew-{uuid.uuid4().hex[:6]}")
            acquisition = await lease.try_acquire("bench", BENCH_TIMING.lease, None)
            record = acquisition.record
            assert record is not None
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                record = await lease.renew(record)
                samples.append(time.perf_counter() - started)
            await lease.release(record)
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

"""Helpers for tests that run real electors on the real clock against a real store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from leaderlib import ElectionConfig, LeaderElector

#: Short leases; whole seconds, since Kubernetes and etcd count lease time in seconds.
LEASE = 2.0


def config(identity: str, **overrides: float) -> ElectionConfig:
    """A short-lease config for ``identity``; keyword overrides win."""
    values: dict[str, float] = {
        "lease_duration": LEASE,
        "renew_deadline": 1.5,
        "renew_interval": 0.3,
        "retry_period": 0.3,
    }
    values.update(overrides)
    return ElectionConfig(identity=identity, **values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(elector: LeaderElector) -> AsyncIterator[asyncio.Task[None]]:
    """Run the elector in a task; stop it (releasing) when the block ends."""
    task = asyncio.create_task(elector.run())
    try:
        yield task
    finally:
        elector.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


async def until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> float:
    """Wait until ``predicate()`` holds; return how long it took. Fails the test on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - start

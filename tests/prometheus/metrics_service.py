"""The replica of tests/prometheus/test_prometheus.py: one job of each outcome leaderlib counts.

``fast`` returns at once (outcome ``ok``), ``failing`` raises (``error``) and
``slow`` outlasts its interval, so its next ticks are skipped.
"""

from __future__ import annotations

import asyncio

from leaderlib import Service


def service() -> Service:
    replica = Service("metrics-test")

    @replica.job(every=0.2, name="fast")
    async def fast() -> None:
        return None

    @replica.job(every=0.3, name="failing")
    async def failing() -> None:
        raise RuntimeError("this job always fails (on purpose)")

    @replica.job(every=0.2, name="slow")
    async def slow() -> None:
        await asyncio.sleep(0.5)

    return replica

"""The exception tree: each error where a caller's ``except`` expects it."""

from __future__ import annotations

import asyncio

import pytest

from leaderlib import BackendError, LeaderlibError, NotLeader, _telemetry
from leaderlib._elector import LeaderElector
from leaderlib.backends.memory import MemoryBackend

from .scripted import PausingClock


def test_not_leader_is_not_a_store_failure() -> None:
    # `except BackendError` (retry the store) must not swallow "your leadership ended".
    assert not issubclass(NotLeader, BackendError)
    assert issubclass(NotLeader, LeaderlibError)
    error = NotLeader("leadership has ended", election="billing")
    assert error.election == "billing"
    assert "billing" in str(error)


async def test_transition_outcomes_are_the_documented_ones(
    clock: PausingClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    class Counter:
        def add(self, amount: int, attributes: dict[str, str]) -> None:
            if amount:  # not the series made at 0 when the election starts
                seen.append(attributes["outcome"])

    monkeypatch.setattr(_telemetry.instruments, "transitions", Counter())
    elector = LeaderElector("metrics", MemoryBackend("unit-errors-metrics", clock=clock), clock=clock)
    task = asyncio.create_task(elector.run())
    await clock.advance(1)
    elector.stop()
    await clock.advance(1)
    await task
    assert seen == ["acquired", "stopping"]
    # TRANSITION_OUTCOMES is also what the metric's description lists.
    assert set(seen) <= set(_telemetry.TRANSITION_OUTCOMES)

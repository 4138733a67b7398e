"""The conformance suite on ``memory://``."""

from __future__ import annotations

import uuid

import pytest

from leaderlib.backends import Backend
from leaderlib.backends.memory import MemoryBackend

CORRUPTIBLE = False


class MemoryHarness:
    bad_election_names = ()  # any non-empty name will do

    def __init__(self) -> None:
        self.url = f"memory://conformance-{uuid.uuid4().hex[:8]}"

    def backend(self) -> Backend:
        return MemoryBackend.from_url(self.url)

    async def write_foreign(self, election: str, holder: str, lease_duration: float) -> None:
        backend = MemoryBackend.from_url(self.url)
        await backend.lease(election).try_acquire(holder, lease_duration, None)

    async def write_corrupt(self, election: str) -> None:
        raise AssertionError("memory:// holds Python objects; a corrupt record cannot exist")


def make_harness(request: pytest.FixtureRequest) -> MemoryHarness:
    return MemoryHarness()

"""Unit tests run on a fake clock and never read the developer's LEADERLIB_* settings."""

from __future__ import annotations

import os

import pytest

from .scripted import PausingClock, ScriptedBackend


@pytest.fixture(autouse=True)
def _no_leaderlib_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("LEADERLIB_"):
            monkeypatch.delenv(key)


@pytest.fixture
def clock() -> PausingClock:
    return PausingClock()


@pytest.fixture
def backend(clock: PausingClock) -> ScriptedBackend:
    return ScriptedBackend(clock)

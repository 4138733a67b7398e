"""Runs every conformance test once per store module in ``stores/``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Callable
from types import ModuleType

import pytest

from leaderlib.backends import Backend

from . import stores
from .stores import Harness


def _store_modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(stores.__path__):
        found[info.name] = importlib.import_module(f"{stores.__name__}.{info.name}")
    return dict(sorted(found.items()))


STORES = _store_modules()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness" in metafunc.fixturenames:
        names = list(STORES)
        if metafunc.definition.get_closest_marker("corruptible"):
            names = [name for name in names if getattr(STORES[name], "CORRUPTIBLE", True)]
        metafunc.parametrize("store_name", names)


@pytest.fixture
def harness(store_name: str, request: pytest.FixtureRequest) -> Harness:
    module = STORES[store_name]
    made: Harness = module.make_harness(request)
    return made


@pytest.fixture
async def backends(harness: Harness) -> AsyncIterator[Callable[[], Backend]]:
    """Makes backend instances (one per simulated replica) and closes them after the test."""
    made: list[Backend] = []

    def make() -> Backend:
        backend = harness.backend()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()

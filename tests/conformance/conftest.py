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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="also run the suite on the store whose harness module (make_harness) this is, "
        "e.g. a third-party backend's; repeatable",
    )


def _stores(config: pytest.Config) -> dict[str, ModuleType]:
    """The suite's own stores, and those given with --store-module (named by their last part)."""
    found = dict(STORES)
    for name in config.getoption("--store-module", default=[]):
        found[name.rpartition(".")[2]] = importlib.import_module(name)
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness" in metafunc.fixturenames:
        stores = _stores(metafunc.config)
        names = list(stores)
        if metafunc.definition.get_closest_marker("corruptible"):
            names = [name for name in names if getattr(stores[name], "CORRUPTIBLE", True)]
        metafunc.parametrize("store_name", names)


@pytest.fixture
def harness(store_name: str, request: pytest.FixtureRequest) -> Harness:
    module = _stores(request.config)[store_name]
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

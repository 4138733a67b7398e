"""The public surface: a sorted ``__all__`` of names that exist, and docstrings where readers look."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import typing
from types import ModuleType

import pytest

import leaderlib
from leaderlib import backends
from leaderlib.backends import Backend, Lease


def isort_key(name: str) -> tuple[int, str]:
    """ruff RUF022's order: SCREAMING_CASE constants, then CamelCase classes, then the rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("module", [leaderlib, backends], ids=lambda m: m.__name__)
def test_all_is_sorted_unique_and_every_name_exists(module: ModuleType) -> None:
    names = list(module.__all__)
    assert names == sorted(names, key=isort_key)
    assert len(set(names)) == len(names)
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == []


def test_all_pins_the_public_api() -> None:
    assert leaderlib.__all__ == [
        "DEFAULT_BACKEND",
        "AccessDenied",
        "Acquisition",
        "Backend",
        "BackendError",
        "BackendNotInstalled",
        "BackendUnavailable",
        "BackgroundService",
        "Clock",
        "ConfigError",
        "CorruptLeaseRecord",
        "CronTrigger",
        "ElectionConfig",
        "ElectorState",
        "FakeClock",
        "IntervalTrigger",
        "JobContext",
        "LeaderElector",
        "LeaderlibError",
        "Leadership",
        "Lease",
        "LeaseLost",
        "LeaseRecord",
        "Mode",
        "NotLeader",
        "Service",
        "Settings",
        "SystemClock",
        "Trigger",
        "backend_from_url",
        "default_identity",
        "load_settings",
    ]


PUBLIC = [
    (f"{module.__name__}.{name}", getattr(module, name))
    for module in (leaderlib, backends)
    for name in module.__all__
    if inspect.isclass(getattr(module, name)) or inspect.isfunction(getattr(module, name))
]


@pytest.mark.parametrize("obj", [obj for _, obj in PUBLIC], ids=[name for name, _ in PUBLIC])
def test_every_public_class_and_function_has_its_own_docstring(obj: object) -> None:
    # __doc__ is not inherited by classes, so this checks the class's own docstring.
    assert obj.__doc__ and obj.__doc__.strip()


ENTRY_POINTS = sorted(
    importlib.metadata.entry_points(group="leaderlib.backends"), key=lambda entry: entry.name
)


def test_backends_are_registered() -> None:
    assert {"memory", "sqlite", "redis", "etcd", "kubernetes"} <= {entry.name for entry in ENTRY_POINTS}


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[entry.name for entry in ENTRY_POINTS])
def test_every_backend_module_and_class_is_documented(entry: importlib.metadata.EntryPoint) -> None:
    module_name, _, class_name = entry.value.partition(":")
    module = importlib.import_module(module_name)
    assert module.__doc__ and module.__doc__.strip()
    assert f"{entry.name}://" in module.__doc__, "the module docstring shows the URL format"
    cls = getattr(module, class_name)
    assert cls.__doc__ and cls.__doc__.strip()
    # Every Protocol method, none optional (STYLE rule 2). `scheme` may be set per instance
    # (one class serves redis:// and rediss://), so only the methods are checked on the class.
    methods = [name for name, value in vars(Backend).items() if not name.startswith("_") and callable(value)]
    assert set(methods) == {"lease", "aclose"}
    assert [name for name in methods if not callable(getattr(cls, name, None))] == []
    # The per-election handle `lease()` returns (its class, from the annotation).
    handle = typing.get_type_hints(cls.lease)["return"]
    assert handle.__doc__ and handle.__doc__.strip()
    lease_methods = [
        name for name, value in vars(Lease).items() if not name.startswith("_") and callable(value)
    ]
    assert set(lease_methods) == {
        "get",
        "try_acquire",
        "renew",
        "release",
        "watch",
        "record_run",
        "last_runs",
    }
    assert [name for name in lease_methods if not callable(getattr(handle, name, None))] == []
    assert sorted(Lease.__annotations__) == ["election"]
    # The data members: `scheme` (checked per instance elsewhere) and how finely the
    # store's other electors see renewals, which the elector reads at construction.
    assert sorted(Backend.__annotations__) == ["observation_granularity", "scheme"]
    granularity = getattr(cls, "observation_granularity", None)
    assert isinstance(granularity, float) and granularity >= 0
    assert callable(getattr(cls, "from_url", None))


def test_package_modules_have_docstrings() -> None:
    for name in ("leaderlib", "leaderlib.backends", "leaderlib._elector", "leaderlib._errors"):
        module = importlib.import_module(name)
        assert module.__doc__ and module.__doc__.strip(), name

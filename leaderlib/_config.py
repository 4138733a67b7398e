"""Configuration: one frozen dataclass, loaded from code, environment or TOML.

Precedence, highest first: keyword arguments given in code, environment
variables (``LEADERLIB_BACKEND``, ``LEADERLIB_ELECTION`` and one
``LEADERLIB_<FIELD>`` per field of :class:`ElectionConfig`), the ``[leaderlib]``
table of a TOML file, the defaults.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import string
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import ConfigError

__all__ = ["DEFAULT_BACKEND", "ElectionConfig", "Settings", "default_identity", "load_settings"]

#: The embedded default: a SQLite file that every process on this host shares.
DEFAULT_BACKEND = "sqlite:///" + str(Path(tempfile.gettempdir()) / "leaderlib.sqlite3").lstrip("/")


def default_identity() -> str:
    """``hostname/pid/random``: unique per process, readable in ``kubectl get lease``."""
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
    return f"{socket.gethostname()}/{os.getpid()}/{suffix}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElectionConfig:
    """How one replica campaigns for and holds a lease. Durations are float seconds.

    The invariant ``lease_duration > renew_deadline > renew_interval`` is what
    makes leadership safe: a leader steps down ``renew_deadline`` after its last
    successful renewal was sent, before any follower can count
    ``lease_duration`` and take over.
    """

    lease_duration: float = 10.0
    """How long a lease lives without renewal, in seconds (default 10)."""

    renew_deadline: float = 7.0
    """How long the leader keeps trying to renew before it steps down, in seconds,
    counted from when its last successful renewal was sent (default 7)."""

    renew_interval: float = 2.0
    """Time between the leader's renewals, in seconds (default 2)."""

    retry_period: float = 2.0
    """Time between a follower's attempts to acquire, in seconds (default 2). A
    watch or a release notification wakes a follower sooner."""

    jitter: float = 0.2
    """Fraction of ``retry_period`` added at random to each follower wait, so
    followers do not retry in lockstep (default 0.2)."""

    identity: str = dataclasses.field(default_factory=default_identity)
    """This replica's name in the lease record (default ``hostname/pid/random``)."""

    release_on_shutdown: bool = True
    """Release the lease on a clean shutdown so a standby takes over at once
    (default true)."""

    shutdown_grace: float = 5.0
    """On SIGTERM/SIGINT, how long running jobs may finish before they are
    cancelled and the lease is released, in seconds (default 5)."""

    def __post_init__(self) -> None:
        for name in ("lease_duration", "renew_deadline", "renew_interval", "retry_period"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ConfigError(f"must be a positive number of seconds, got {value!r}", field=name)
        for name in ("jitter", "shutdown_grace"):
            if not _is_number(getattr(self, name)):
                raise ConfigError(f"must be a number, got {getattr(self, name)!r}", field=name)
        if not self.lease_duration > self.renew_deadline:
            raise ConfigError(
                f"lease_duration ({self.lease_duration}) must be greater than renew_deadline "
                f"({self.renew_deadline}), or a follower could take over while the leader "
                "still believes it leads",
                field="lease_duration",
            )
        if not self.renew_deadline > self.renew_interval:
            raise ConfigError(
                f"renew_deadline ({self.renew_deadline}) must be greater than renew_interval "
                f"({self.renew_interval}), or the leader steps down between two renewals",
                field="renew_deadline",
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"must be between 0 and 1, got {self.jitter!r}", field="jitter")
        if self.shutdown_grace < 0:
            raise ConfigError(f"must not be negative, got {self.shutdown_grace!r}", field="shutdown_grace")
        if not self.identity or any(ch in self.identity for ch in "\n\r\0"):
            raise ConfigError(f"must be a non-empty single line, got {self.identity!r}", field="identity")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a replica needs to join an election, as loaded by :func:`load_settings`."""

    backend: str
    """The store's URL, e.g. ``sqlite:///var/lib/app/leases.db`` or ``kubernetes://prod``."""

    election: str | None
    """The election's name, or None to let the service name it."""

    config: ElectionConfig


_FIELDS = {field.name: field for field in dataclasses.fields(ElectionConfig)}


def _coerce(name: str, raw: Any, where: str) -> Any:
    """Turn a TOML or environment value into the field's type, naming ``where`` on error."""
    kind = _FIELDS[name].type
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        return str(raw)
    except ValueError:
        raise ConfigError(f"{raw!r} is not a valid {kind} (from {where})", field=name) from None


def load_settings(
    *,
    file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    backend: str | None = None,
    election: str | None = None,
    **overrides: Any,
) -> Settings:
    """Load settings from keyword arguments, environment and a TOML file, in that order.

    ``file`` may also come from ``LEADERLIB_CONFIG``. Unknown keys in the file
    or unknown keyword arguments raise :class:`ConfigError` naming them.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    file = file if file is not None else env.get("LEADERLIB_CONFIG") or None
    if file is not None:
        values.update(_read_toml(Path(file)))
    for name in ("backend", "election", *_FIELDS):
        key = f"LEADERLIB_{name.upper()}"
        if key in env:
            values[name] = env[key] if name in ("backend", "election") else _coerce(name, env[key], key)
    for name, value in overrides.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting; known: {', '.join(sorted(_FIELDS))}", field=name)
        if value is not None:
            values[name] = value
    if backend is not None:
        values["backend"] = backend
    if election is not None:
        values["election"] = election
    chosen_backend = values.pop("backend", DEFAULT_BACKEND)
    chosen_election = values.pop("election", None)
    return Settings(backend=chosen_backend, election=chosen_election, config=ElectionConfig(**values))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist", field="config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", field="config") from exc
    table = document.get("leaderlib", document)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [leaderlib] must be a table", field="config")
    result: dict[str, Any] = {}
    for key, raw in table.items():
        if key in ("backend", "election"):
            if not isinstance(raw, str):
                raise ConfigError(f"{path}: must be a string, got {raw!r}", field=key)
            result[key] = raw
        elif key in _FIELDS:
            result[key] = _coerce(key, raw, str(path))
        else:
            known = ", ".join(["backend", "election", *sorted(_FIELDS)])
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: {known}", field=key)
    return result

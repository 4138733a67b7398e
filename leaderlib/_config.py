"""Configuration: one frozen dataclass, loaded from code, environment or TOML.

Precedence, per setting, highest first: what the caller gives in code
(keyword arguments of :func:`load_settings`; a whole :class:`ElectionConfig`
counts as given for every field it holds), environment variables
(``LEADERLIB_BACKEND``, ``LEADERLIB_ELECTION`` and one ``LEADERLIB_<FIELD>``
per field of :class:`ElectionConfig`), the ``[leaderlib]`` (or, in a
``pyproject.toml``, ``[tool.leaderlib]``) table of a TOML file, the defaults.
A value that code shadows is reported in one warning, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
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
from ._logging import get_logger

__all__ = ["DEFAULT_BACKEND", "ElectionConfig", "Settings", "default_identity", "load_settings"]

#: The embedded default: a SQLite file that every process on this host shares.
DEFAULT_BACKEND = "sqlite:///" + str(Path(tempfile.gettempdir()) / "leaderlib.sqlite3").lstrip("/")


def default_identity() -> str:
    """``hostname/pid/random``: unique per process, readable in ``kubectl get lease``."""
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
    return f"{socket.gethostname()}/{os.getpid()}/{suffix}"


logger = get_logger("leaderlib.config")


def _is_number(value: object) -> bool:
    """True for a finite int or float (not a bool): nan and inf are no durations."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
    """Time between a follower's attempts to acquire while its watch is not live
    (not open yet, broken or refused), in seconds (default 2). While the watch is
    live a follower makes no attempt until a watch event says the lease may be
    free or the lease it saw expires."""

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
        # Each field is checked on its own before the invariants, so a bad value
        # (nan, inf, a string) is blamed on its own field, not on a neighbour.
        for name in ("lease_duration", "renew_deadline", "renew_interval", "retry_period"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ConfigError(f"must be a finite positive number of seconds, got {value!r}", field=name)
        if not _is_number(self.shutdown_grace):
            raise ConfigError(
                f"must be a finite number of seconds, got {self.shutdown_grace!r}", field="shutdown_grace"
            )
        if not _is_number(self.jitter):
            raise ConfigError(f"must be a number between 0 and 1, got {self.jitter!r}", field="jitter")
        if not isinstance(self.release_on_shutdown, bool):
            # A truthy "no" must not mean yes.
            raise ConfigError(
                f"must be True or False, got {self.release_on_shutdown!r}", field="release_on_shutdown"
            )
        if not isinstance(self.identity, str):
            raise ConfigError(f"must be a string, got {self.identity!r}", field="identity")
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


#: ``LEADERLIB_*`` variables that are not settings but are read elsewhere, so they
#: draw no "unknown variable" warning: server binaries and their cache
#: (``leaderlib.testing.servers.find_binary``, ``backends/install``) and the URLs
#: ``leaderlib testenv`` exports (``leaderlib.testing.testenv``); the Kubernetes
#: backend's service account directory (``leaderlib.backends.kubernetes``).
_OTHER_VARIABLES = frozenset(
    {
        "LEADERLIB_CONFIG",
        "LEADERLIB_CACHE_DIR",
        "LEADERLIB_ETCD",
        "LEADERLIB_ETCDCTL",
        "LEADERLIB_KUBE_APISERVER",
        "LEADERLIB_REDIS_SERVER",
        "LEADERLIB_REDIS_CLI",
        "LEADERLIB_TOXIPROXY_SERVER",
        "LEADERLIB_CLIENTGO_ELECTOR",
        "LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR",
        "LEADERLIB_TEST_REDIS_URL",
        "LEADERLIB_TEST_ETCD_URL",
        "LEADERLIB_TEST_ETCD_CLUSTER_URL",
        "LEADERLIB_TEST_KUBECONFIG",
        "LEADERLIB_TEST_KUBE_ADMIN_KUBECONFIG",
        "LEADERLIB_TEST_KUBE_NAMESPACE",
        "LEADERLIB_TEST_TOXIPROXY_URL",
    }
)
_warned: set[str] = set()
"""What this process has already warned about, so each warning comes once."""
_SETTING_VARIABLES = {f"LEADERLIB_{name.upper()}": name for name in ("backend", "election", *_FIELDS)}


def _warn_about_unknown_variables(env: Mapping[str, str]) -> None:
    """Warn (do not fail) about ``LEADERLIB_*`` variables nobody reads: usually a typo.

    TOML refuses unknown keys; the environment is shared with other programs, so
    an unknown variable is only reported, naming the closest known one.
    """
    known = sorted({*_SETTING_VARIABLES, *_OTHER_VARIABLES})
    for variable in sorted(env):
        if not variable.startswith("LEADERLIB_") or variable in _SETTING_VARIABLES:
            continue
        if variable in _OTHER_VARIABLES:
            continue
        if variable in _warned:
            continue  # settings are loaded more than once per process (Service, then the CLI)
        _warned.add(variable)
        close = difflib.get_close_matches(variable, known, n=1, cutoff=0.6)
        suggestion = close[0] if close else ", ".join(sorted(_SETTING_VARIABLES))
        logger.warning(
            "unknown LEADERLIB_ environment variable ignored",
            extra={"variable": variable, "did_you_mean": suggestion},
        )


def load_settings(
    *,
    file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    backend: str | None = None,
    election: str | None = None,
    config: ElectionConfig | None = None,
    **overrides: Any,
) -> Settings:
    """Load settings from code, environment and a TOML file, in that order, per setting.

    Code is the keyword arguments: ``backend``, ``election``, and either a whole
    ``config`` (every field then comes from it) or single fields as
    ``**overrides`` (``lease_duration=15``; None means not given). ``file`` may
    also come from ``LEADERLIB_CONFIG``. Unknown keys in the file or unknown
    keyword arguments raise :class:`ConfigError` naming them; unknown
    ``LEADERLIB_*`` variables are warned about. An error in a value from the
    environment or the file says which variable or file it came from.
    """
    env = os.environ if env is None else env
    _warn_about_unknown_variables(env)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file = file if file is not None else env.get("LEADERLIB_CONFIG") or None
    if file is not None:
        from_file = _read_toml(Path(file))
        values.update(from_file)
        sources.update(dict.fromkeys(from_file, str(file)))
    for key, name in _SETTING_VARIABLES.items():
        if key in env:
            values[name] = env[key] if name in ("backend", "election") else _coerce(name, env[key], key)
            sources[name] = key
    for name, value in overrides.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting; known: {', '.join(sorted(_FIELDS))}", field=name)
        if value is not None:
            values[name] = value
            sources.pop(name, None)
    if config is not None and any(value is not None for value in overrides.values()):
        raise ConfigError(
            "give a whole config=ElectionConfig(...) or single fields as keywords, not both", field="config"
        )
    shadowed = {name: sources.pop(name) for name in list(sources) if name in _FIELDS and config is not None}
    for name, value in (("backend", backend), ("election", election)):
        if value is not None:
            values[name] = value
            if name in sources:
                shadowed[name] = sources.pop(name)
    if shadowed and (key := repr(sorted(shadowed.items()))) not in _warned:
        _warned.add(key)
        logger.warning(
            "settings from the environment or a file are overridden by code",
            extra={
                "overridden": ", ".join(f"{name} from {where}" for name, where in sorted(shadowed.items()))
            },
        )
    chosen_backend = values.pop("backend", DEFAULT_BACKEND)
    chosen_election = values.pop("election", None)
    if config is not None:
        return Settings(backend=chosen_backend, election=chosen_election, config=config)
    try:
        chosen_config = ElectionConfig(**values)
    except ConfigError as exc:
        # Say where the blamed value came from: code and defaults need no pointer.
        if exc.field in sources:
            raise ConfigError(f"{exc.reason} (from {sources[exc.field]})", field=exc.field) from None
        raise
    return Settings(backend=chosen_backend, election=chosen_election, config=chosen_config)


def _settings_table(path: Path, document: dict[str, Any]) -> dict[str, Any]:
    """The table leaderlib's settings live in: ``[leaderlib]``, or ``[tool.leaderlib]`` as
    tools keep theirs in ``pyproject.toml``. A file of only leaderlib's keys at the top
    level is accepted too (as it always was)."""
    tool = document.get("tool")
    in_tool = isinstance(tool, dict) and "leaderlib" in tool
    if "leaderlib" in document and in_tool:
        raise ConfigError(
            f"{path} has both [leaderlib] and [tool.leaderlib]; keep the settings in one of them",
            field="config",
        )
    table: object = None
    if "leaderlib" in document:
        table = document["leaderlib"]
    elif isinstance(tool, dict) and "leaderlib" in tool:
        table = tool["leaderlib"]
    if table is None:
        unknown = sorted(key for key in document if key not in ("backend", "election", *_FIELDS))
        if unknown:
            raise ConfigError(
                f"{path} has no [leaderlib] table (nor [tool.leaderlib], as in pyproject.toml), and "
                f"its top-level keys are not leaderlib settings ({', '.join(map(repr, unknown))}); "
                "put leaderlib's settings under [leaderlib]",
                field="config",
            )
        return document
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [leaderlib] must be a table", field="config")
    return table


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist", field="config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", field="config") from exc
    table = _settings_table(path, document)
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

"""Stores that hold leases, all behind one small :class:`Backend` Protocol.

A backend only reads and compare-and-swaps a lease record; every timing
decision (when to renew, when a lease counts as expired to a follower, when a
leader must step down) is the elector's. Backends are chosen by URL scheme
through the entry-point group ``leaderlib.backends``:

==========================  ===========================================
``memory://``               one process (tests, local development)
``sqlite:///PATH``          a SQLite file shared by processes on one host
``redis://HOST:PORT/DB``    Redis (also ``rediss://``, ``redis+sentinel://``)
``etcd://HOST:PORT[,...]``  etcd v3 (also ``etcds://``)
``kubernetes://NAMESPACE``  a coordination.k8s.io/v1 Lease
==========================  ===========================================

Every backend class is constructed as ``Backend.from_url(url, **options)``;
query-string options are overridden by explicit keyword arguments.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .._errors import BackendNotInstalled, ConfigError

__all__ = [
    "Backend",
    "BackendFactory",
    "LeaseRecord",
    "backend_from_url",
    "known_schemes",
    "parse_options",
    "split_url",
]

#: The extra that installs each scheme's driver, for "pip install" hints.
_EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "redis+sentinel": "redis",
    "etcd": "etcd",
    "etcds": "etcd",
    "kubernetes": "kubernetes",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    """One election's lease as a store holds it.

    ``version`` is the store's compare-and-swap handle (a resourceVersion, a
    mod revision, a row version, a random token): it changes on every write,
    including renewals, so a follower can tell a live lease from a dead one by
    watching it change. ``holder`` is empty when the lease was released.
    """

    election: str
    holder: str
    """Identity of the replica holding the lease; ``""`` when released."""
    lease_duration: float
    """Seconds the lease lives without renewal, as the holder asked."""
    fencing_token: int
    """Strictly increases with each new leadership of this election."""
    version: str
    """Opaque compare-and-swap version; changes on every write."""
    transitions: int = 0
    """How many times the holder has changed (Kubernetes ``leaseTransitions``)."""
    acquire_time: dt.datetime | None = None
    """Wall time the holder acquired the lease, for humans; never used for safety."""
    renew_time: dt.datetime | None = None
    """Wall time of the last renewal, for humans; never used for safety."""
    expires_in: float | None = None
    """Seconds until the store itself expires this lease, for stores that do
    (Redis PX, a SQLite row's deadline): a hint for when to try again, never a
    reason to believe the lease is free. None for stores without expiry."""

    @property
    def is_held(self) -> bool:
        """True unless the lease was released (empty holder)."""
        return bool(self.holder)


@runtime_checkable
class Backend(Protocol):
    """What the elector needs from a store. Every method is required.

    All methods raise only leaderlib's exceptions: :class:`BackendUnavailable`
    for transient failures (the elector retries), :class:`AccessDenied`,
    :class:`CorruptLeaseRecord` and :class:`LeaseLost`.
    """

    scheme: str
    """The URL scheme this instance was made for, e.g. ``"redis"``."""

    async def get(self, election: str) -> LeaseRecord | None:
        """Return the election's current record, or None if there is none."""
        ...

    async def try_acquire(
        self,
        election: str,
        identity: str,
        lease_duration: float,
        takeover: LeaseRecord | None,
    ) -> LeaseRecord | None:
        """Make one attempt to hold the lease; return the record as it stands after it.

        The attempt succeeded when the returned record's holder is
        ``identity``; it then carries a new fencing token (or the same one, if
        ``identity`` already held the lease). Otherwise the record returned is
        the current holder's (None if there is none).

        If ``identity`` already holds the lease, the attempt extends it (a new
        ``version``, the same token). A lease the store itself has expired reads
        as released (empty holder) or as no record.

        ``takeover`` is the record the elector last saw and now judges expired
        (by its own clock) or released: a store without server-side expiry
        replaces it only if it is still exactly that version. Stores that
        expire leases themselves decide expiry alone and may ignore it.
        """
        ...

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        """Extend the lease held as ``record`` by its ``lease_duration``.

        Returns the new record. Raises :class:`LeaseLost` if the store holds a
        different record now.
        """
        ...

    async def release(self, record: LeaseRecord) -> None:
        """Give the lease up so a follower can take it at once.

        Does nothing if ``record`` no longer holds the lease.
        """
        ...

    def watch(self, election: str) -> AsyncIterator[LeaseRecord | None]:
        """Yield the election's record each time it may have changed (None: no record).

        Runs until cancelled; may yield spuriously. Raises
        :class:`BackendUnavailable` if the watch breaks; the elector then
        falls back to polling and watches again later.
        """
        ...

    async def aclose(self) -> None:
        """Close connections. The backend is unusable afterwards."""
        ...


class BackendFactory(Protocol):
    """A backend class, as registered under the ``leaderlib.backends`` entry points."""

    def from_url(self, url: str, **options: Any) -> Backend: ...


def split_url(url: str) -> SplitResult:
    """Split a backend URL, raising :class:`ConfigError` that shows the URL if it has no scheme."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"{url!r} is not a backend URL; expected SCHEME://..., one of: {', '.join(known_schemes())}",
            field="backend",
        )
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"{url!r} is not a valid URL: {exc}", field="backend") from exc


def parse_options(url: SplitResult, allowed: dict[str, type], given: dict[str, Any]) -> dict[str, Any]:
    """Merge the URL's query-string options with keyword ``given`` ones (which win).

    Each option is converted to its type in ``allowed``; an unknown option or a
    bad value raises :class:`ConfigError` naming it and the URL's scheme.
    """
    merged: dict[str, Any] = {}
    for key, raw in parse_qsl(url.query, keep_blank_values=True):
        merged[key] = raw
    merged.update({key: value for key, value in given.items() if value is not None})
    result: dict[str, Any] = {}
    for key, raw in merged.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"unknown option {key!r} for {url.scheme}://; known options: {known}", field=key
            )
        kind = allowed[key]
        if isinstance(raw, kind):
            result[key] = raw
            continue
        try:
            if kind is bool:
                text = str(raw).lower()
                if text not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                    raise ValueError(raw)
                result[key] = text in {"1", "true", "yes", "on"}
            else:
                result[key] = kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                f"option {key!r} of {url.scheme}:// must be {kind.__name__}, got {raw!r}", field=key
            ) from None
    return result


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group="leaderlib.backends")}


def known_schemes() -> list[str]:
    """The URL schemes of every registered backend, sorted."""
    return sorted(_entry_points())


def backend_from_url(url: str, **options: Any) -> Backend:
    """Make the backend for ``url``: its scheme picks the class, its query string the options.

    Raises :class:`ConfigError` for an unknown scheme (listing the known ones)
    and :class:`BackendNotInstalled` when the scheme's extra is missing.
    """
    scheme = split_url(url).scheme
    entry_point = _entry_points().get(scheme)
    if entry_point is None:
        raise ConfigError(
            f"unknown backend scheme {scheme!r} in {url!r}; known schemes: {', '.join(known_schemes())}",
            field="backend",
        )
    try:
        factory: BackendFactory = entry_point.load()
    except ImportError as exc:
        extra = _EXTRAS.get(scheme, scheme)
        raise BackendNotInstalled(
            f"the {scheme}:// backend needs a package that is not installed ({exc.name or exc}); "
            f"install it with: pip install 'leaderlib[{extra}]'",
            field="backend",
        ) from exc
    return factory.from_url(url, **options)

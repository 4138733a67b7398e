"""Stores that hold leases, behind two small Protocols: a :class:`Backend` per store,
a :class:`Lease` handle per election (``backend.lease(name)``).

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
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from .._errors import ConfigError
from ._urls import BackendFactory, backend_from_url, known_schemes, parse_options, split_url

__all__ = [
    "FIRST_TOKEN",
    "Acquisition",
    "Backend",
    "BackendFactory",
    "Decision",
    "JobRun",
    "Lease",
    "LeaseRecord",
    "backend_from_url",
    "check_election",
    "decide",
    "known_schemes",
    "parse_options",
    "split_url",
]


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


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """What one :meth:`Lease.try_acquire` did."""

    acquired: bool
    """True iff this call started a new term for the caller; ``record`` is then that term's."""
    record: LeaseRecord | None
    """The record as it stands after the attempt: the new term's if ``acquired``,
    else the current holder's (None if there is none)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobRun:
    """A job's last run, as the election's store keeps it (jobs with ``misfire_grace``).

    The leader writes it twice per run: when the run starts (``outcome`` None)
    and when it ends. It is what lets the next leader run a missed tick late,
    and never start a tick that was already started, whatever the wall clocks
    say. Stored as the JSON of :func:`leaderlib.backends._runs.encode_run`.
    """

    job: str
    tick: dt.datetime
    """The tick the run is for (timezone-aware; the same instant on every replica)."""
    fencing_token: int
    """The token of the term the run started in."""
    identity: str
    """The leader that ran it."""
    started_at: dt.datetime
    """The leader's wall time when the run started, for humans."""
    outcome: str | None = None
    """``"ok"``, ``"error"`` or ``"cancelled"``; None while it runs (or if its end was never recorded)."""
    duration: float | None = None
    """Seconds the run took, once it ended."""
    next_tick: dt.datetime | None = None
    """The job's tick after this one, as the leader's trigger named it."""


#: The fencing token of an election's first term, on every store.
FIRST_TOKEN = 1


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the acquire decision table (see :meth:`Lease.try_acquire`) says one attempt does."""

    new_term: bool
    """True: write a new term for the caller; False: write nothing, report the holder."""
    fencing_token: int
    """The new term's token if ``new_term`` (the last one + 1, or :data:`FIRST_TOKEN`),
    else the holder's."""


def decide(current: LeaseRecord | None, takeover: LeaseRecord | None) -> Decision:
    """The acquire decision, for the stores that decide in Python (memory, Kubernetes, tests).

    ``current`` is the last record the store holds for the election, with one
    the store itself has expired shown as released (empty holder); None only
    if the election never had one. ``takeover`` is the elector's (see
    :meth:`Lease.try_acquire`). A store that decides server-side (SQL, Lua, an
    etcd transaction) follows the same table there.
    """
    if current is None:
        return Decision(new_term=True, fencing_token=FIRST_TOKEN)
    if not current.is_held or (takeover is not None and takeover.version == current.version):
        return Decision(new_term=True, fencing_token=current.fencing_token + 1)
    return Decision(new_term=False, fencing_token=current.fencing_token)


@runtime_checkable
class Lease(Protocol):
    """One election on one store: what the elector needs. Every member is required.

    As client-go's ``LeaseLock`` owns its lease, a handle owns its election's
    state on this backend object: the validated name, the record (and
    version) it last read or wrote, its watch subscription, whatever the store
    keeps per election. Made by :meth:`Backend.lease`; it uses the backend's
    connections and never closes them.

    All methods raise only leaderlib's exceptions: :class:`BackendUnavailable`
    for transient failures (the elector retries), :class:`AccessDenied`,
    :class:`CorruptLeaseRecord` and :class:`LeaseLost`. A record passed to
    :meth:`renew` or :meth:`release` is one this election's handle returned.
    """

    election: str
    """The election's name, as validated by :meth:`Backend.lease`."""

    async def get(self) -> LeaseRecord | None:
        """Return the election's current record, or None if there is none."""
        ...

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        """Make one attempt to start a new term for ``identity``; say whether it did.

        The decision, the same on every store (:func:`decide` for the stores
        that decide in Python; SQL, Lua and etcd transactions follow it
        server-side)::

            the store holds                         the attempt
            ------------------------------------    -----------------------------------
            no record, a released one, or one       writes a record for ``identity``
              the store itself has expired          with fencing token + 1 (the first
                                                    term: FIRST_TOKEN): acquired
            exactly ``takeover``'s version          the same: acquired
            anything else, even a live record       writes nothing: not acquired; the
              whose holder is ``identity``          record returned is the holder's

        Every acquisition is a new term, so it always gets a new, higher
        fencing token; only :meth:`renew` keeps a term's token. A record
        that names ``identity`` but is not ``takeover`` is someone else's
        as far as this call knows (an answer lost in transit, or a second
        process with the same identity): it is left to expire, never
        adopted, because leadership is decided by the candidacy, not by the
        identity string.

        ``takeover`` is the record the elector last saw and now judges
        ended: released, expired by the elector's own count, or the record of
        a term this elector itself held and ended. The store replaces it only
        if it is still exactly that version.
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

    def watch(self) -> AsyncIterator[LeaseRecord | None]:
        """Yield the election's record each time it may have changed (None: no record).

        Runs until cancelled; may yield spuriously. Raises
        :class:`BackendUnavailable` if the watch breaks; the elector then
        falls back to polling and watches again later.

        Followers do not poll while a watch is live, so what it yields is a
        contract:

        - The first yield means "live": it is the current record, read
          *after* the subscription is in place, so that a write between the
          elector's last attempt and the subscription (a release) is not
          missed. Open the watch lazily, on the first ``__anext__``.
        - From then on, yield on every change of holder or version the store
          can see (acquisitions, releases, takeovers, deletions; renewals
          where the store reports them). A live follower wakes only on a
          yield that may mean the lease is free (no record, a released one,
          one naming itself) or at the expiry it counts from the last record
          it saw, with a ``lease_duration`` safety net when it saw none.
        - A store whose renewals do not reach the watch must give
          ``expires_in`` on its records (its own TTL), or followers count
          ``lease_duration`` from the last version they saw and spend one
          attempt per lease period: still correct (the attempt is a
          compare-and-swap), only not free.
        - Raise (do not stop yielding silently) when the feed breaks: a
          broken watch puts followers back to polling every retry period.
        """
        ...

    async def record_run(self, run: JobRun) -> None:
        """Store ``run`` as its job's last run, fenced by the term it belongs to.

        One conditional write: the store checks, atomically with the write,
        that the election's current term is ``run.identity``'s with
        ``run.fencing_token`` (held: not released, not taken over, not
        expired by the store itself) and replaces the job's record. Otherwise
        it writes nothing and raises :class:`LeaseLost`: a paused ex-leader
        can never overwrite its successor's record. A renewal between two
        writes is the same term. Records live beside the lease (never where
        another implementation of the store's format, such as client-go or
        ``etcdctl elect``, would read a candidate) and stay when the lease is
        released; other jobs' records are untouched.
        """
        ...

    async def last_runs(self) -> dict[str, JobRun]:
        """Every job's last recorded run in this election, by job name (empty: none yet).

        Raises :class:`CorruptLeaseRecord` if a stored run record cannot be read.
        """
        ...


@runtime_checkable
class Backend(Protocol):
    """One store: its connections, and a :class:`Lease` handle per election. Every member is required.

    Writing a backend for another store (see ``docs/backends/writing-a-backend.md``):

    1. A class with ``from_url(url, **options)`` (:func:`split_url` and
       :func:`parse_options` do the URL), registered under the entry-point
       group ``leaderlib.backends`` by its scheme::

           [project.entry-points."leaderlib.backends"]
           mystore = "mypackage.mystore:MyStoreBackend"

    2. :meth:`lease` validates the name once and returns the handle; the
       handle implements :meth:`Lease.try_acquire`'s decision table (with
       :func:`decide` if the store lets Python decide under a compare-and-swap).
    3. Every driver error is translated into leaderlib's, with one table
       (``leaderlib.backends._errors.error_map``).
    4. ``tests/conformance`` passes: add a ``stores/mystore.py`` harness.
    """

    scheme: str
    """The URL scheme this instance was made for, e.g. ``"redis"``."""

    observation_granularity: float
    """Seconds by which a renewal can go unseen by another elector on the same
    lease: 0 for stores where every write is seen (or that expire leases
    themselves). The elector keeps a leader's term at least this much shorter
    than the lease (``renew_deadline <= lease_duration - granularity``).
    Kubernetes says 1.0: client-go sees ``renewTime`` in whole seconds."""

    def lease(self, election: str) -> Lease:
        """The handle of ``election`` on this store.

        Validates the name once, raising :class:`ConfigError` (``field`` is
        ``"election"``) with the store's rule if it cannot name an election
        here. Calling it again with the same name returns the same handle: the
        handle's state is the election's on this backend object. Opens no
        connection.
        """
        ...

    async def aclose(self) -> None:
        """Close connections. The backend and its handles are unusable afterwards."""
        ...


def check_election(election: object) -> str:
    """Return ``election`` if it is a non-empty string; :class:`ConfigError` otherwise.

    The rule every store shares; each store's :meth:`Backend.lease` adds its own.
    """
    if not isinstance(election, str) or not election:
        raise ConfigError(f"must be a non-empty string, got {election!r}", field="election")
    return election

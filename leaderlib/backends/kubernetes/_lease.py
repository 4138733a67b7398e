"""One election's Lease: compare-and-swap acquire, renew, release and run records, and its watch."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..._errors import BackendUnavailable, LeaseLost
from ..._logging import get_logger
from .. import FIRST_TOKEN, Acquisition, JobRun, LeaseRecord, decide
from .._runs import fenced_out
from ._api import ERRORS, GROUP_PATH, LEASE_PATH, Response, StatusError
from ._record import (
    decode_runs,
    format_microtime,
    format_or,
    lease_spec,
    record_from_lease,
    spec_time,
    term_of,
    version_of,
    with_run,
)

if TYPE_CHECKING:
    from . import KubernetesBackend

__all__ = ["KubernetesLease"]

logger = get_logger("leaderlib.backends.kubernetes")

T = TypeVar("T")

#: Conflicting writes a run record is retried through while its term lasts
#: (each a GET + PUT); only a Lease rewritten this often by others gives up.
_RUN_RECORD_ATTEMPTS = 5
#: How many of its own writes' versions a handle remembers: enough for the run
#: records written between two renewals (or after the last one of a term).
_WRITES_REMEMBERED = 64


class KubernetesLease:
    """One election's Lease object: the objects last read, written and watched, and its watch."""

    def __init__(self, backend: KubernetesBackend, election: str) -> None:
        self.election = election
        self._backend = backend
        self._path = LEASE_PATH.format(namespace=backend.namespace, name=election)
        # The last Lease object this handle read or wrote: the leader renews
        # by updating it (no GET).
        self._object: dict[str, Any] | None = None
        # The last object the watch delivered, kept apart because a watch lags
        # behind this handle's own writes: a follower takes over from it when
        # it is exactly the version the elector asks to replace.
        self._watched: dict[str, Any] | None = None
        # The versions this handle's own writes produced, newest last: a run record
        # after the elector's last renewal is such a write, of the same term.
        self._written: collections.deque[str] = collections.deque(maxlen=_WRITES_REMEMBERED)
        self._lock = threading.Lock()

    # -- requests (worker threads) ------------------------------------------------

    async def _run(self, function: Callable[[], T]) -> T:
        """``function()`` on the backend's thread pool, API error answers translated (:data:`ERRORS`)."""
        backend = self._backend

        def translated() -> T:
            with ERRORS.translating(backend._rest.at("call"), election=self.election, backend=backend.scheme):
                return function()

        return await backend._rest.run(translated)

    def _remember(self, lease: dict[str, Any] | None) -> None:
        with self._lock:
            self._object = lease

    def _cached_term(self, term: tuple[str, int]) -> dict[str, Any] | None:
        """The last object this handle read or wrote, if it shows ``term`` (held): the base of
        a one-request update. Usually this handle's own latest write in the term, a renewal
        or a run record; an update from it fails with 409 if anything changed since."""
        with self._lock:
            lease = self._object
        return lease if lease is not None and term[0] and term_of(lease) == term else None

    def _unseen(self) -> bool:
        """True if this handle holds no copy of the Lease (never seen, or seen absent)."""
        with self._lock:
            return self._object is None and self._watched is None

    def _copy_of(self, version: str) -> dict[str, Any] | None:
        """The Lease object at exactly ``version``, if this handle has seen it."""
        with self._lock:
            for known in (self._watched, self._object):
                if known is not None and version_of(known) == version:
                    return known
        return None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Response:
        return self._backend._rest.request(method, path, election=self.election, body=body)

    def _read(self) -> dict[str, Any] | None:
        """GET the Lease (worker thread); None if there is none."""
        response = self._request("GET", self._path)
        if response.status == 404:
            self._remember(None)
            return None
        if response.status != 200:
            raise StatusError(response, "get")
        lease: dict[str, Any] = response.body
        self._remember(lease)
        return lease

    def _create(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        """POST a new Lease (worker thread); None if one exists already (409)."""
        namespace = self._backend.namespace
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.election, "namespace": namespace},
            "spec": spec,
        }
        response = self._request("POST", GROUP_PATH.format(namespace=namespace), body)
        if response.status == 409:
            return None
        if response.status != 201 and response.status != 200:
            raise StatusError(response, "create")
        lease: dict[str, Any] = response.body
        self._remember(lease)
        self._written.append(version_of(lease))
        return lease

    def _update(self, base: dict[str, Any], version: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        """PUT ``spec`` onto ``base`` if the Lease is still at ``version`` (worker thread).

        None on a conflict (409) or if the Lease was deleted meanwhile (404).
        ``base`` supplies the metadata (labels, annotations, owners) to keep.
        """
        metadata = {k: v for k, v in (base.get("metadata") or {}).items() if k != "managedFields"}
        metadata.update(name=self.election, namespace=self._backend.namespace, resourceVersion=version)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
        response = self._request("PUT", self._path, body)
        if response.status in (404, 409):
            return None
        if response.status != 200:
            raise StatusError(response, "update")
        lease: dict[str, Any] = response.body
        self._remember(lease)
        self._written.append(version_of(lease))
        return lease

    def _own_later_write(self, takeover: LeaseRecord, current: LeaseRecord | None) -> bool:
        """True if ``current`` is this handle's own write after ``takeover``, in the same term.

        The elector asks to take over the last record it renewed when it ends its
        own term; a run record this handle wrote since moved the version, not the
        term, so the elector's judgement (that term is over) holds for it as well.
        Only versions this handle wrote count: a write by anyone else is news.
        """
        if current is None or current.version == takeover.version:
            return False
        same_term = (current.holder, current.fencing_token) == (takeover.holder, takeover.fencing_token)
        written = list(self._written)
        return (
            same_term
            and takeover.version in written
            and current.version in written
            and written.index(takeover.version) < written.index(current.version)
        )

    def _record(self, lease: dict[str, Any] | None) -> LeaseRecord | None:
        return (
            None if lease is None else record_from_lease(self.election, lease, backend=self._backend.scheme)
        )

    # -- the Lease Protocol ----------------------------------------------------------

    async def get(self) -> LeaseRecord | None:
        return self._record(await self._run(self._read))

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        seconds = self._backend._duration(lease_duration)
        acquired, lease = await self._run(lambda: self._acquire(identity, seconds, takeover))
        return Acquisition(acquired=acquired, record=self._record(lease))

    def _acquire(
        self, identity: str, seconds: int, takeover: LeaseRecord | None
    ) -> tuple[bool, dict[str, Any] | None]:
        """client-go's tryAcquireOrRenew for a new term, minus the expiry judgement (the elector's).

        Returns whether this call wrote the Lease, and the Lease as it stands
        after one attempt (worker thread). :func:`decide` makes the decision;
        unlike client-go, a Lease whose holder is ``identity`` is not adopted:
        a new term is always a new ``leaseTransitions``, the fencing token.
        """
        now = format_microtime(self._backend._clock.wall())
        if takeover is None and self._unseen():
            # A Lease this handle has no copy of is usually one that does not
            # exist yet: create it in one request; only if it exists (409) read it.
            created = self._create(lease_spec(identity, seconds, now, now, 0))
            if created is not None:
                logger.debug("created lease", extra={"election": self.election, "holder": identity})
                return True, created
            lease = self._read()
        else:
            # A takeover of a version we hold a copy of (usually from the watch)
            # needs no GET: the update itself checks that nothing changed since.
            lease = None if takeover is None else self._copy_of(takeover.version)
            if lease is None:
                lease = self._read()
        current = self._record(lease)
        if takeover is not None and self._own_later_write(takeover, current):
            takeover = current
        decision = decide(current, takeover)
        if not decision.new_term:
            return False, lease  # held by someone whose lease has not expired for the elector
        spec = lease_spec(identity, seconds, now, now, decision.fencing_token - FIRST_TOKEN)
        if lease is None or current is None:
            created = self._create(spec)
            if created is None:  # someone created it first: we lost this round
                return False, self._read()
            logger.debug("created lease", extra={"election": self.election, "holder": identity})
            return True, created
        updated = self._update(lease, current.version, spec)
        if updated is None:  # lost the race: someone else wrote first
            return False, self._read()
        logger.debug("took lease", extra={"election": self.election, "previous": current.holder})
        return True, updated

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        seconds = self._backend._duration(record.lease_duration)
        lease = await self._run(lambda: self._renew(record, seconds))
        renewed = self._record(lease)
        assert renewed is not None
        return renewed

    def _renew(self, record: LeaseRecord, seconds: int) -> dict[str, Any]:
        now = format_microtime(self._backend._clock.wall())
        term = (record.holder, record.transitions)
        base = self._cached_term(term)
        if base is not None:
            # The fast path (client-go's optimistic renewal): one update of the
            # handle's latest object of this term, with its version and
            # metadata, no GET. That object may be newer than ``record`` (a run
            # record was written since): ``record.version`` would conflict.
            spec = lease_spec(
                record.holder, seconds, format_or(record.acquire_time, now), now, record.transitions
            )
            updated = self._update(base, version_of(base), spec)
            if updated is not None:
                return updated
        # Conflict (or nothing of this term cached): read it, and update again
        # only if it still shows our term (holder AND leaseTransitions: the same
        # identity in a later term is not ours to renew), from what was read.
        fresh = self._read()
        if fresh is None or term_of(fresh) != term:
            raise self._lost(record, fresh)
        spec = lease_spec(
            record.holder, seconds, spec_time(fresh, "acquireTime", now), now, record.transitions
        )
        updated = self._update(fresh, version_of(fresh), spec)
        if updated is None:
            raise LeaseLost(
                "the Lease changed again while it was being renewed",
                election=self.election,
                backend=self._backend.scheme,
            )
        return updated

    def _lost(self, record: LeaseRecord, lease: dict[str, Any] | None) -> LeaseLost:
        holder, transitions = term_of(lease) if lease is not None else ("", 0)
        if not holder:
            now_held = "released" if lease is not None else "deleted"
        elif holder == record.holder:
            now_held = f"in a later term of {holder!r} (leaseTransitions {transitions})"
        else:
            now_held = f"held by {holder!r}"
        return LeaseLost(
            f"the Lease is no longer ours: it is {now_held}",
            election=self.election,
            backend=self._backend.scheme,
        )

    async def release(self, record: LeaseRecord) -> None:
        await self._run(lambda: self._release(record))

    def _release(self, record: LeaseRecord) -> None:
        """client-go's release: empty holder, leaseDurationSeconds 1, transitions kept."""
        now = format_microtime(self._backend._clock.wall())
        term = (record.holder, record.transitions)
        spec = lease_spec("", 1, now, now, record.transitions)
        base = self._cached_term(term)
        # As in _renew: one update of our latest object of the term.
        if base is not None and self._update(base, version_of(base), spec) is not None:
            logger.debug("released lease", extra={"election": self.election})
            return
        fresh = self._read()
        if fresh is None or term_of(fresh) != term:
            return  # deleted, released, or another term now: nothing of ours to release
        if self._update(fresh, version_of(fresh), spec) is None:
            raise BackendUnavailable(
                "the Lease changed while it was being released",
                election=self.election,
                backend=self._backend.scheme,
            )
        logger.debug("released lease", extra={"election": self.election})

    async def record_run(self, run: JobRun) -> None:
        await self._run(lambda: self._record_run(run))

    def _record_run(self, run: JobRun) -> None:
        """Put ``run`` in the Lease's runs annotation by an update that only a Lease still
        showing the run's term takes (worker thread); LeaseLost once the term is over.

        The term is ``run.identity`` with ``leaseTransitions + 1 == run.fencing_token``;
        the update carries the resourceVersion of an object that shows it, so the API
        server refuses it (409) if anything was written since. The spec is sent back
        as it stands: a run record is no renewal, and client-go's view of the record
        does not change. One request from this handle's latest object of the term; a
        GET + PUT when there is none or on a conflict, retried while the term lasts.
        """
        backend = self._backend
        term = (run.identity, run.fencing_token - FIRST_TOKEN)
        lease = self._cached_term(term)
        for _ in range(_RUN_RECORD_ATTEMPTS):
            if lease is None:
                lease = self._read()
                if lease is None or not run.identity or term_of(lease) != term:
                    raise self._fenced_out(run, lease)
            annotations = with_run(lease, run, election=self.election, backend=backend.scheme)
            base = {**lease, "metadata": {**(lease.get("metadata") or {}), "annotations": annotations}}
            if self._update(base, version_of(lease), lease.get("spec") or {}) is not None:
                return
            lease = None  # written meanwhile (a renewal, another job's record): read and check again
        raise BackendUnavailable(
            f"the Lease changed {_RUN_RECORD_ATTEMPTS} times while the run of job {run.job!r} "
            "was being recorded",
            election=self.election,
            backend=backend.scheme,
        )

    def _fenced_out(self, run: JobRun, lease: dict[str, Any] | None) -> LeaseLost:
        holder, transitions = term_of(lease) if lease is not None else ("", 0)
        return fenced_out(
            run,
            holder=holder or None,
            token=transitions + FIRST_TOKEN if holder else None,
            backend=self._backend.scheme,
            election=self.election,
        )

    async def last_runs(self) -> dict[str, JobRun]:
        lease = await self._run(self._read)
        if lease is None:
            return {}
        return decode_runs(lease, election=self.election, backend=self._backend.scheme)

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        """Yield the Lease (None: deleted) as the backend's one namespace watch sees it."""
        backend, election = self._backend, self.election
        if backend._closed:
            raise BackendUnavailable("the backend was closed", election=election, backend=backend.scheme)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def emit(kind: str, value: Any) -> None:
            # The loop may be gone when a late event arrives after cancellation.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        subscription = backend._watch.subscribe(election, emit)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise value
                if kind == "lease":
                    with self._lock:
                        self._watched = value
                    yield self._record(value)
                else:  # "deleted"
                    with self._lock:
                        self._watched = None
                    yield None
        finally:
            backend._watch.unsubscribe(subscription)
            with self._lock:
                self._watched = None

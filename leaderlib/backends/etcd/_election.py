"""One election on etcd: Go's ``concurrency.Election`` recipe behind the :class:`Lease` handle.

The candidate key is ``PREFIX + ELECTION + "/" + <lease id hex>``, put with
the session's lease under ``create_revision == 0``; the leader is the lowest
create revision under the prefix, and that revision is the fencing token.
Renewing is a keepalive plus ``Proclaim``; resigning deletes the key. Job
run records are one key per job beside the campaign prefix, each written by
one transaction guarded by the term's leader key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aetcd import rpc

from ..._errors import CorruptLeaseRecord, LeaseLost
from ..._logging import get_logger
from .. import Acquisition, JobRun, LeaseRecord
from .._runs import decode_run, encode_run, fenced_out
from ._keys import (
    EXPIRY_SLACK,
    campaign_txn,
    candidate_key,
    holder_of,
    kvs,
    proclaim_txn,
    range_first_created,
    range_prefix,
    record_run_txn,
    resign_txn,
    run_key,
    runs_prefix,
)
from ._observe import observe
from ._session import Session, lease_ttl
from ._txns import beside

if TYPE_CHECKING:
    from . import EtcdBackend

__all__ = ["Candidacy", "EtcdLease"]

logger = get_logger("leaderlib.backends.etcd")


@dataclasses.dataclass
class Candidacy:
    """This backend's candidate key in one election, under one session."""

    key: bytes
    create_revision: int
    leading: bool = False
    acquire_time: dt.datetime | None = None
    proclaim: Any = None
    """The Proclaim transaction of this key and identity (the same for every renewal), once built."""


class EtcdLease:
    """One election: its key prefix, this backend's candidacies in it, and its watch.

    The sessions (one per identity and TTL, shared by every election as Go's
    ``Session`` is) and the connection are the backend's.
    """

    def __init__(self, backend: EtcdBackend, election: str) -> None:
        self.election = election
        self.backend = backend
        self.prefix = f"{backend.prefix}{election}/".encode()
        """The campaign prefix ``PREFIX + ELECTION + "/"``: every key under it is a candidate."""
        self.runs_prefix = runs_prefix(backend.prefix, election)
        """Where the job run records live: a sibling of the campaign prefix."""
        self.candidacies: dict[int, Candidacy] = {}
        """This backend's candidacy in the election, per session (by lease id)."""
        self.queued = asyncio.Event()
        """Set when try_acquire queues a new candidacy, so a watch that started
        before it (as the elector's does) moves from the leader's key to our
        predecessor's: no thundering herd."""
        self.granted_ttl: dict[int, float] = {}
        """The granted TTL of the other holder's lease last read, for renewals seen on the watch."""
        self.watching = 0
        """How many watches of this handle run: a follower whose elector watches is
        kept alive by its session's keepalive loop; one nobody watches is not."""

    async def record(self, kv: Any) -> LeaseRecord:
        """The LeaseRecord of leader key ``kv``; asks etcd for the lease's TTL unless it is ours."""
        backend = self.backend
        holder = holder_of(kv, self.prefix, election=self.election, backend=backend.scheme)
        session = backend.sessions.own(kv.lease)
        candidacy = self.candidacies.get(session.lease_id) if session is not None else None
        if session is not None:
            lease_duration, expires_in = session.lease_duration, session.expires_in()
        else:
            response = await backend.channel.call(
                self.election,
                lambda c: c.leasestub.LeaseTimeToLive(
                    rpc.LeaseTimeToLiveRequest(ID=kv.lease, keys=False),
                    timeout=c._timeout,
                    metadata=c.metadata,
                ),
            )
            lease_duration = float(response.grantedTTL)
            if response.TTL >= 0:
                self.granted_ttl = {kv.lease: lease_duration}
            expires_in = response.TTL + EXPIRY_SLACK if response.TTL >= 0 else 0.0
        return LeaseRecord(
            election=self.election,
            holder=holder,
            lease_duration=lease_duration,
            fencing_token=kv.create_revision,
            version=str(kv.mod_revision),
            acquire_time=candidacy.acquire_time if candidacy is not None else None,
            expires_in=expires_in,
        )

    def add_candidacy(self, session: Session, candidacy: Candidacy) -> None:
        """Make ``candidacy`` ours in this election under ``session``; the session notes
        the election (:attr:`Session.elections`), so releasing or ending it looks here only."""
        self.candidacies[session.lease_id] = candidacy
        session.elections.add(self)

    def drop_candidacy(self, session: Session, candidacy: Candidacy | None = None) -> None:
        """Forget our candidacy under ``session`` (only if it is still ``candidacy``, when given)."""
        if candidacy is None or self.candidacies.get(session.lease_id) is candidacy:
            self.candidacies.pop(session.lease_id, None)
            session.elections.discard(self)

    # ------------------------------------------------------------------ the Protocol

    async def get(self) -> LeaseRecord | None:
        leader = await self._leader()
        return await self.record(leader) if leader is not None else None

    async def _leader(self) -> Any:
        """The leader key (the lowest create revision under the campaign prefix), or None."""
        response = await self.backend.channel.range(self.election, range_first_created(self.prefix))
        return response.kvs[0] if response.kvs else None

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        # etcd expires leases itself; ``takeover`` matters only when it is a
        # term of ours that the elector ended: that candidacy resigns first, so
        # the new term is a new key with a new create revision (fencing token).
        backend, election = self.backend, self.election
        ended = self._held(takeover) if takeover is not None else None
        await backend.sessions.revoke_abandoned(election)
        if ended is not None:
            await self._resign(*ended)
        for attempt in range(2):
            session, granted = await backend.sessions.open(identity, lease_duration, election)
            try:
                record = await self._campaign(identity, lease_duration, session, granted)
            except LeaseLost:
                # The session lease expired or was revoked: start a new session,
                # as Go's callers do after Session.Done(). Once per call.
                backend.sessions.end(session)
                if attempt:
                    raise
                continue
            candidacy = self.candidacies.get(session.lease_id)
            return Acquisition(acquired=candidacy is not None and candidacy.leading, record=record)
        raise AssertionError("unreachable")

    async def _campaign(
        self, identity: str, lease_duration: float, session: Session, granted: bool
    ) -> LeaseRecord | None:
        """One Campaign step: make sure our candidate key exists, report the leader.

        etcd's form of the acquire decision: the leader is the lowest create
        revision, so a free election is ours with a new create revision (the
        token), and a held one is reported, never adopted.
        """
        backend, election = self.backend, self.election
        key = candidate_key(backend.prefix, election, session.lease_id)
        candidacy = self.candidacies.get(session.lease_id)
        queued = candidacy is not None and candidacy.key == key
        request = campaign_txn(key, identity, session.lease_id, self.prefix, queued=queued)

        sent = backend.txns.submit(request)
        if not granted:
            # The keepalive rides along with every attempt: it keeps a follower's
            # place in the queue, and a lease refreshed after the elector sent
            # this attempt outlives the term the elector counts from it.
            alive = await beside(sent, backend.sessions.keepalive(session, election))
            if not alive:
                raise LeaseLost("the etcd session lease expired", election=election, backend=backend.scheme)
        response = await sent

        if not queued and response.succeeded:
            create_revision = response.header.revision
        else:
            own = kvs(response, 0)
            if not own:
                # Our key is gone (deleted by someone else): queue again, now.
                self.drop_candidacy(session)
                return await self._campaign(identity, lease_duration, session, granted=True)
            create_revision = own[0].create_revision
            if own[0].value != identity.encode():
                await self._proclaim(identity, session, key, create_revision)
        if candidacy is None or candidacy.create_revision != create_revision:
            candidacy = Candidacy(key=key, create_revision=create_revision)
            self.add_candidacy(session, candidacy)
            self.queued.set()

        leaders = kvs(response, 1)
        if not leaders:
            # Nothing under the prefix although we just wrote: our lease died in between.
            raise LeaseLost("the etcd candidate key vanished", election=election, backend=backend.scheme)
        leader = leaders[0]
        if bytes(leader.key) != key:
            candidacy.leading = False
            return await self.record(leader)
        now = dt.datetime.now(dt.UTC)
        if not candidacy.leading:
            candidacy.leading = True
            candidacy.acquire_time = now
            logger.debug(
                "candidate key leads",
                extra={"election": election, "key": key.decode(), "fencing_token": create_revision},
            )
        return LeaseRecord(
            election=election,
            holder=identity,
            lease_duration=lease_duration,
            fencing_token=create_revision,
            version=str(leader.mod_revision),
            acquire_time=candidacy.acquire_time,
            renew_time=now,
            expires_in=session.expires_in(),
        )

    async def _proclaim(
        self,
        identity: str,
        session: Session,
        key: bytes,
        create_revision: int,
        timeout: float | None = None,
    ) -> int:
        """Go's ``Election.Proclaim``: rewrite our key's value if it is still our key; returns
        the new mod revision. Raises :class:`LeaseLost` if the key is gone or was recreated."""
        request = proclaim_txn(key, identity, session.lease_id, create_revision)
        return self._proclaimed(await self.backend.txns.submit(request, timeout))

    def _proclaimed(self, response: Any) -> int:
        """The new mod revision of a Proclaim's answer; LeaseLost if it found our key gone."""
        if not response.succeeded:
            raise LeaseLost(
                "our etcd candidate key was deleted or replaced",
                election=self.election,
                backend=self.backend.scheme,
            )
        return int(response.header.revision)

    def _held(self, record: LeaseRecord) -> tuple[Session, Candidacy] | None:
        """The session and candidacy behind ``record``, if this backend still has them."""
        backend = self.backend
        session = backend.sessions.by_slot.get((record.holder, lease_ttl(record.lease_duration)))
        if session is None or not backend.sessions.live(session):
            return None
        candidacy = self.candidacies.get(session.lease_id)
        if candidacy is None or candidacy.create_revision != record.fencing_token:
            return None
        return session, candidacy

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        backend, election = self.backend, self.election
        held = self._held(record)
        if held is None:
            raise LeaseLost(
                "this backend holds no such etcd candidacy", election=election, backend=backend.scheme
            )
        session, candidacy = held
        timeout = backend.channel.renew_timeout(record.lease_duration)
        if candidacy.proclaim is None:
            candidacy.proclaim = proclaim_txn(
                candidacy.key, record.holder, session.lease_id, candidacy.create_revision
            )
        proclaimed = backend.txns.submit(candidacy.proclaim, timeout)
        try:
            alive = await beside(proclaimed, backend.sessions.keepalive(session, election, timeout))
            mod_revision = self._proclaimed(await proclaimed)
        except LeaseLost:
            self.drop_candidacy(session)
            raise
        if not alive:
            backend.sessions.end(session)
            raise LeaseLost("the etcd session lease expired", election=election, backend=backend.scheme)
        logger.debug("renewed lease", extra={"election": election, "version": mod_revision})
        return dataclasses.replace(
            record,
            version=str(mod_revision),
            renew_time=dt.datetime.now(dt.UTC),
            expires_in=session.expires_in(),
        )

    async def release(self, record: LeaseRecord) -> None:
        backend = self.backend
        held = self._held(record)
        if held is None:
            # A term this backend does not hold (another process's, or one whose
            # session it lost): Go's Resign of its key if the term is current.
            leader = await self._leader()
            if leader is not None and _names_term(leader, record.holder, record.fencing_token):
                await backend.txns.submit(resign_txn(bytes(leader.key), leader.create_revision))
            return
        session, candidacy = held
        self.drop_candidacy(session)
        if not session.elections:
            # Go's Resign + Session.Close in one raft entry: revoking the lease
            # deletes the key with it.
            backend.sessions.end(session)
            with contextlib.suppress(LeaseLost):  # already expired: the key went with it
                await backend.channel.revoke(self.election, session.lease_id)
            return
        await self._resign(session, candidacy)

    async def _resign(self, session: Session, candidacy: Candidacy) -> None:
        """Go's ``Resign``: delete our key if it is still the one we created; forget the candidacy."""
        await self.backend.txns.submit(
            resign_txn(candidacy.key, candidacy.create_revision), tell_retired=True
        )
        self.drop_candidacy(session, candidacy)

    async def record_run(self, run: JobRun) -> None:
        """One ``Txn`` (:func:`record_run_txn`): the job's record is put only while the
        term's leader key exists with ``run``'s token as its create revision and
        ``run``'s identity as its value.

        That key's name (its lease id) is known when this handle leads that
        term: one round trip. Otherwise (another process's handle) the leader is
        read first to learn it: two.
        """
        backend, election = self.backend, self.election
        ours = [
            c.key for c in self.candidacies.values() if c.leading and c.create_revision == run.fencing_token
        ]
        if ours:
            leader_key = ours[0]
        else:
            leader = await self._leader()
            if leader is None or not _names_term(leader, run.identity, run.fencing_token):
                raise self._fenced_out(run, leader)
            leader_key = bytes(leader.key)
        key, value = run_key(backend.prefix, election, run.job), encode_run(run)
        request = record_run_txn(leader_key, run.fencing_token, run.identity, key, value, self.prefix)
        response = await backend.txns.submit(request)
        if not response.succeeded:
            leaders = kvs(response, 0)
            raise self._fenced_out(run, leaders[0] if leaders else None)

    def _fenced_out(self, run: JobRun, leader: Any) -> LeaseLost:
        """The refusal of ``run``, saying who leads now (``leader``: the leader key, or None)."""
        return fenced_out(
            run,
            holder=bytes(leader.value).decode(errors="backslashreplace") if leader is not None else None,
            token=leader.create_revision if leader is not None else None,
            backend=self.backend.scheme,
            election=self.election,
        )

    async def last_runs(self) -> dict[str, JobRun]:
        """One range read of the records' prefix."""
        prefix = self.runs_prefix
        response = await self.backend.channel.range(self.election, range_prefix(prefix))
        runs: dict[str, JobRun] = {}
        for kv in response.kvs:
            key = bytes(kv.key).decode(errors="backslashreplace")
            job = bytes(kv.key)[len(prefix) :].decode(errors="backslashreplace")
            try:
                # No election or backend here: they are added once, below.
                runs[job] = decode_run(bytes(kv.value), election="", backend="")
            except CorruptLeaseRecord as exc:
                raise CorruptLeaseRecord(
                    f"job {job!r} at etcd key {key!r}: {exc}; remove it with: etcdctl del {key!r}",
                    election=self.election,
                    backend=self.backend.scheme,
                ) from None
        return runs

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        """Yield the leader's record, then again whenever the key we wait on changes.

        A candidate waits on the key just before its own (and on its own key,
        which vanishes if its lease does), as Go's ``waitDeletes`` does; when
        that predecessor was the leader, the record read and yielded next is our
        own key's, as etcd holds it (the elector then campaigns: only
        ``try_acquire`` says whether we lead).
        A backend that is not a candidate waits on the leader's key, or on the
        whole prefix while the election is empty (Go's ``Observe``).
        """
        self.watching += 1
        try:
            async for record in observe(self):
                yield record
        finally:
            self.watching -= 1


def _names_term(leader: Any, identity: str, fencing_token: int) -> bool:
    """True if leader key ``leader`` is the term of ``identity`` with ``fencing_token``."""
    return bool(leader.create_revision == fencing_token and bytes(leader.value) == identity.encode())

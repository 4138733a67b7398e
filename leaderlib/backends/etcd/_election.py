"""One election on etcd: Go's ``concurrency.Election`` recipe behind the :class:`Lease` handle.

The candidate key is ``PREFIX + ELECTION + "/" + <lease id hex>``, put with
the session's lease under ``create_revision == 0``; the leader is the lowest
create revision under the prefix, and that revision is the fencing token.
Renewing is a keepalive plus ``Proclaim``; resigning deletes the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aetcd import rpc
from aetcd.utils import prefix_range_end

from ..._errors import CorruptLeaseRecord, LeaseLost
from ..._logging import get_logger
from .. import Acquisition, LeaseRecord
from ._session import Session, lease_ttl
from ._watch import Target

if TYPE_CHECKING:
    from . import EtcdBackend

__all__ = ["Candidacy", "EtcdLease", "candidate_key"]

logger = get_logger("leaderlib.backends.etcd")

#: A candidate key's last segment: the lease id as Go's ``%x`` prints it.
_LEASE_HEX = re.compile(rb"[0-9a-f]{1,16}")

#: Slack added to a lease's remaining TTL in ``expires_in``: etcd reports TTLs
#: in whole seconds (rounded down) and revokes expired leases on a 500 ms sweep.
_EXPIRY_SLACK = 1.0


def candidate_key(prefix: str, election: str, lease_id: int) -> bytes:
    """``PREFIX + ELECTION + "/" + <lease id hex>``: the key Go's ``Election.Campaign`` writes."""
    return f"{prefix}{election}/{lease_id:x}".encode()


@dataclasses.dataclass
class Candidacy:
    """This backend's candidate key in one election, under one session."""

    key: bytes
    create_revision: int
    leading: bool = False
    acquire_time: dt.datetime | None = None


def _range_first_created(prefix: bytes) -> Any:
    """Go's ``Get(pfx, WithFirstCreate()...)``: the key with the lowest create revision."""
    return rpc.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.CREATE,
        limit=1,
    )


def _range_predecessor(prefix: bytes, create_revision: int) -> Any:
    """Go's ``waitDeletes`` query: the newest key created before ``create_revision``."""
    return rpc.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        sort_order=rpc.RangeRequest.DESCEND,
        sort_target=rpc.RangeRequest.CREATE,
        max_create_revision=create_revision - 1,
        limit=1,
    )


def _kvs(response: Any, index: int) -> list[Any]:
    return list(response.responses[index].response_range.kvs)


class EtcdLease:
    """One election: its key prefix, this backend's candidacies in it, and its watch.

    The sessions (one per identity and TTL, shared by every election as Go's
    ``Session`` is) and the connection are the backend's.
    """

    def __init__(self, backend: EtcdBackend, election: str) -> None:
        self.election = election
        self._backend = backend
        self._prefix = f"{backend.prefix}{election}/".encode()
        # This backend's candidacy in the election, per session (by lease id).
        self._candidacies: dict[int, Candidacy] = {}
        # Set when try_acquire queues a new candidacy, so a watch that started
        # before it (as the elector's does) moves from the leader's key to our
        # predecessor's: no thundering herd.
        self._queued = asyncio.Event()
        # The granted TTL of the other holder's lease last read, for renewals seen on the watch.
        self._granted_ttl: dict[int, float] = {}
        self.watching = 0
        """How many watches of this handle run: a follower whose elector watches is
        kept alive by its session's keepalive loop; one nobody watches is not."""

    # ------------------------------------------------------------------ records

    def _holder(self, kv: Any) -> str:
        """The identity in a leader key, or :class:`CorruptLeaseRecord` if it is not a candidate key."""
        prefix = self._prefix
        suffix = bytes(kv.key)[len(prefix) :]
        key = bytes(kv.key).decode(errors="backslashreplace")
        if not _LEASE_HEX.fullmatch(suffix) or int(suffix, 16) != kv.lease:
            raise CorruptLeaseRecord(
                f"etcd key {key!r} holds the election (lowest create revision under "
                f"{prefix.decode(errors='backslashreplace')!r}) but is not a candidate key "
                "PREFIX/ELECTION/<lease id hex> attached to that lease (a nested election name, "
                f"or written by hand?); remove it with: etcdctl del {key!r}",
                election=self.election,
                backend=self._backend.scheme,
            )
        try:
            holder = bytes(kv.value).decode("utf-8")
        except UnicodeDecodeError:
            holder = ""
        if not holder:
            raise CorruptLeaseRecord(
                f"etcd key {key!r} holds the election but its value is not a UTF-8 identity "
                f"({bytes(kv.value)[:40]!r}); remove it with: etcdctl del {key!r}",
                election=self.election,
                backend=self._backend.scheme,
            )
        return holder

    async def _record(self, kv: Any) -> LeaseRecord:
        """The LeaseRecord of leader key ``kv``; asks etcd for the lease's TTL unless it is ours."""
        backend = self._backend
        holder = self._holder(kv)
        session = backend.sessions.own(kv.lease)
        candidacy = self._candidacies.get(session.lease_id) if session is not None else None
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
                self._granted_ttl = {kv.lease: lease_duration}
            expires_in = response.TTL + _EXPIRY_SLACK if response.TTL >= 0 else 0.0
        return LeaseRecord(
            election=self.election,
            holder=holder,
            lease_duration=lease_duration,
            fencing_token=kv.create_revision,
            version=str(kv.mod_revision),
            acquire_time=candidacy.acquire_time if candidacy is not None else None,
            expires_in=expires_in,
        )

    # ------------------------------------------------------------------ the Protocol

    async def get(self) -> LeaseRecord | None:
        prefix = self._prefix
        response = await self._backend.channel.call(
            self.election,
            lambda c: c.kvstub.Range(_range_first_created(prefix), timeout=c._timeout, metadata=c.metadata),
        )
        if not response.kvs:
            return None
        return await self._record(response.kvs[0])

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        # etcd expires leases itself; ``takeover`` matters only when it is a
        # term of ours that the elector ended: that candidacy resigns first, so
        # the new term is a new key with a new create revision (fencing token).
        backend, election = self._backend, self.election
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
            candidacy = self._candidacies.get(session.lease_id)
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
        backend, election = self._backend, self.election
        prefix = self._prefix
        key = candidate_key(backend.prefix, election, session.lease_id)
        candidacy = self._candidacies.get(session.lease_id)
        leader_op = rpc.RequestOp(request_range=_range_first_created(prefix))
        if candidacy is not None and candidacy.key == key:
            # Already queued: a read-only transaction (a linearizable read, no raft write).
            request = rpc.TxnRequest(
                success=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key)), leader_op]
            )
        else:
            # Go's Campaign: put the key if it does not exist, else read it back.
            request = rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=key,
                        target=rpc.Compare.CREATE,
                        result=rpc.Compare.EQUAL,
                        create_revision=0,
                    )
                ],
                success=[
                    rpc.RequestOp(
                        request_put=rpc.PutRequest(key=key, value=identity.encode(), lease=session.lease_id)
                    ),
                    leader_op,
                ],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key)), leader_op],
            )

        if granted:
            response = await backend.channel.txn(election, request)
        else:
            # The keepalive rides along with every attempt: it keeps a follower's
            # place in the queue, and a lease refreshed after the elector sent
            # this attempt outlives the term the elector counts from it.
            alive, response = await asyncio.gather(
                backend.sessions.keepalive(session, election), backend.channel.txn(election, request)
            )
            if not alive:
                raise LeaseLost("the etcd session lease expired", election=election, backend=backend.scheme)

        if request.compare and response.succeeded:
            create_revision = response.header.revision
        else:
            own = _kvs(response, 0)
            if not own:
                # Our key is gone (deleted by someone else): queue again, now.
                self._candidacies.pop(session.lease_id, None)
                return await self._campaign(identity, lease_duration, session, granted=True)
            create_revision = own[0].create_revision
            if own[0].value != identity.encode():
                await self._proclaim(identity, session, key, create_revision)
        if candidacy is None or candidacy.create_revision != create_revision:
            candidacy = Candidacy(key=key, create_revision=create_revision)
            self._candidacies[session.lease_id] = candidacy
            self._queued.set()

        leaders = _kvs(response, 1)
        if not leaders:
            # Nothing under the prefix although we just wrote: our lease died in between.
            raise LeaseLost("the etcd candidate key vanished", election=election, backend=backend.scheme)
        leader = leaders[0]
        if bytes(leader.key) != key:
            candidacy.leading = False
            return await self._record(leader)
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
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=key,
                    target=rpc.Compare.CREATE,
                    result=rpc.Compare.EQUAL,
                    create_revision=create_revision,
                )
            ],
            success=[
                rpc.RequestOp(
                    request_put=rpc.PutRequest(key=key, value=identity.encode(), lease=session.lease_id)
                )
            ],
        )
        response = await self._backend.channel.txn(self.election, request, timeout)
        if not response.succeeded:
            raise LeaseLost(
                "our etcd candidate key was deleted or replaced",
                election=self.election,
                backend=self._backend.scheme,
            )
        return int(response.header.revision)

    def _held(self, record: LeaseRecord) -> tuple[Session, Candidacy] | None:
        """The session and candidacy behind ``record``, if this backend still has them."""
        backend = self._backend
        session = backend.sessions.by_slot.get((record.holder, lease_ttl(record.lease_duration)))
        if session is None or not backend.sessions.live(session):
            return None
        candidacy = self._candidacies.get(session.lease_id)
        if candidacy is None or candidacy.create_revision != record.fencing_token:
            return None
        return session, candidacy

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        backend, election = self._backend, self.election
        held = self._held(record)
        if held is None:
            raise LeaseLost(
                "this backend holds no such etcd candidacy", election=election, backend=backend.scheme
            )
        session, candidacy = held
        timeout = backend.channel.renew_timeout(record.lease_duration)
        try:
            alive, mod_revision = await asyncio.gather(
                backend.sessions.keepalive(session, election, timeout),
                self._proclaim(record.holder, session, candidacy.key, candidacy.create_revision, timeout),
            )
        except LeaseLost:
            self._candidacies.pop(session.lease_id, None)
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
        backend = self._backend
        held = self._held(record)
        if held is None:
            return
        session, candidacy = held
        del self._candidacies[session.lease_id]
        if not backend.sessions.candidacies_on(session):
            # Go's Resign + Session.Close in one raft entry: revoking the lease
            # deletes the key with it.
            backend.sessions.end(session)
            with contextlib.suppress(LeaseLost):  # already expired: the key went with it
                await backend.channel.revoke(self.election, session.lease_id)
            return
        await self._resign(session, candidacy)

    async def _resign(self, session: Session, candidacy: Candidacy) -> None:
        """Go's ``Resign``: delete our key if it is still the one we created; forget the candidacy."""
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=candidacy.key,
                    target=rpc.Compare.CREATE,
                    result=rpc.Compare.EQUAL,
                    create_revision=candidacy.create_revision,
                )
            ],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=candidacy.key))],
        )
        await self._backend.channel.txn(self.election, request)
        if self._candidacies.get(session.lease_id) is candidacy:
            del self._candidacies[session.lease_id]

    def _watch_candidacy(self) -> tuple[Session, Candidacy] | None:
        """Our queued candidacy in this election closest to the front, and its session, if any."""
        backend = self._backend
        found = [
            (s, self._candidacies[s.lease_id])
            for s in list(backend.sessions.by_slot.values())
            if s.lease_id in self._candidacies and backend.sessions.live(s)
        ]
        return min(found, key=lambda pair: pair[1].create_revision) if found else None

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
            async for record in self._watch():
                yield record
        finally:
            self.watching -= 1

    async def _watch(self) -> AsyncIterator[LeaseRecord | None]:
        prefix = self._prefix
        queued = self._queued
        while True:
            queued.clear()
            ours = self._watch_candidacy()
            candidacy = ours[1] if ours is not None else None
            ops = [rpc.RequestOp(request_range=_range_first_created(prefix))]
            if candidacy is not None:
                ops.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=candidacy.key)))
                ops.append(rpc.RequestOp(request_range=_range_predecessor(prefix, candidacy.create_revision)))
            response = await self._backend.channel.txn(self.election, rpc.TxnRequest(success=ops))
            leaders = _kvs(response, 0)
            revision = response.header.revision + 1
            targets: list[Target]
            if candidacy is not None and _kvs(response, 1):
                predecessor = _kvs(response, 2)
                targets = [(candidacy.key, None, revision)]
                if predecessor:
                    targets.append((bytes(predecessor[0].key), None, revision))
            elif leaders:
                targets = [(bytes(leaders[0].key), None, revision)]
            else:
                targets = [(prefix, prefix_range_end(prefix), revision)]
            leader = leaders[0] if leaders else None
            yield await self._record(leader) if leader is not None else None
            async with self._backend.watcher.subscribe(self.election, targets) as subscription:
                while True:
                    renewal = self._renewal(leader, await subscription.next(queued))
                    if renewal is None:
                        break  # anything but the leader's renewal: read the election afresh
                    yield renewal

    def _renewal(self, leader: Any, events: list[Any]) -> LeaseRecord | None:
        """The record of the leader's renewal (``Proclaim`` puts on the key we read) if that
        is all ``events`` are, built without asking etcd; None for anything else.

        etcd expires leases itself, so a follower needs no remaining TTL from
        etcd here: a renewal's keepalive went with its put, and the lease
        lives at least its granted TTL from then (``expires_in`` is a hint).
        """
        if leader is None or not events:
            return None
        own = self._backend.sessions.own(leader.lease)
        granted = own.lease_duration if own is not None else self._granted_ttl.get(leader.lease)
        if granted is None:
            return None
        for event in events:
            kv = event.kv
            if (
                event.type != rpc.Event.PUT
                or bytes(kv.key) != bytes(leader.key)
                or kv.create_revision != leader.create_revision
                or kv.lease != leader.lease
            ):
                return None
        kv = events[-1].kv
        candidacy = self._candidacies.get(own.lease_id) if own is not None else None
        return LeaseRecord(
            election=self.election,
            holder=self._holder(kv),
            lease_duration=granted,
            fencing_token=kv.create_revision,
            version=str(kv.mod_revision),
            acquire_time=candidacy.acquire_time if candidacy is not None else None,
            expires_in=own.expires_in() if own is not None else granted + _EXPIRY_SLACK,
        )

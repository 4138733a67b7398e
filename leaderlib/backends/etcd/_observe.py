"""Watching one election: which keys a wait watches, and the leader's renewals seen there.

A candidate waits on the key just before its own and on its own key (Go's
``waitDeletes``), and on the leader's key for its renewals; a backend that
is not a candidate waits on the leader's key, or on the whole prefix while
the election is empty (Go's ``Observe``).
The waits run on the backend's shared Watch stream (``_watch``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aetcd import rpc
from aetcd.utils import prefix_range_end

from ..._logging import get_logger
from .. import LeaseRecord
from ._keys import EXPIRY_SLACK, holder_of, kvs, range_first_created, range_predecessor
from ._watch import Target

if TYPE_CHECKING:
    from ._election import Candidacy, EtcdLease
    from ._session import Session

__all__ = ["observe"]

logger = get_logger("leaderlib.backends.etcd")


async def observe(lease: EtcdLease) -> AsyncIterator[LeaseRecord | None]:
    """Yield the leader's record, then again whenever the key we wait on changes
    (see :meth:`EtcdLease.watch`)."""
    backend = lease.backend
    prefix = lease.prefix
    queued = lease.queued
    while True:
        queued.clear()
        ours = _watch_candidacy(lease)
        candidacy = ours[1] if ours is not None else None
        ops = [rpc.RequestOp(request_range=range_first_created(prefix))]
        if candidacy is not None:
            ops.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=candidacy.key)))
            ops.append(rpc.RequestOp(request_range=range_predecessor(prefix, candidacy.create_revision)))
        response = await backend.txns.submit(rpc.TxnRequest(success=ops))
        leaders = kvs(response, 0)
        revision = response.header.revision + 1
        targets: list[Target]
        if candidacy is not None and kvs(response, 1):
            predecessor = kvs(response, 2)
            targets = [(candidacy.key, None, revision)]
            if predecessor:
                targets.append((bytes(predecessor[0].key), None, revision))
            if leaders and (not predecessor or predecessor[0].key != leaders[0].key):
                # Further back in the queue: the leader's renewals (its Proclaim puts)
                # are watched too, so that its expiry moves on without asking etcd.
                targets.append((bytes(leaders[0].key), None, revision))
        elif leaders:
            targets = [(bytes(leaders[0].key), None, revision)]
        else:
            targets = [(prefix, prefix_range_end(prefix), revision)]
        leader = leaders[0] if leaders else None
        yield await lease.record(leader) if leader is not None else None
        if logger.isEnabledFor(logging.DEBUG):  # thousands of elections wait at once
            logger.debug(
                "etcd watch waits",
                extra={
                    "election": lease.election,
                    "keys": [key.decode(errors="backslashreplace") for key, _, _ in targets],
                    "from_revision": revision,
                },
            )
        async with backend.watcher.subscribe(lease.election, targets) as subscription:
            while True:
                events = await subscription.next(queued)
                renewal = _renewal(lease, leader, events)
                if renewal is None:
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug(
                            "etcd watch woke",
                            extra={
                                "election": lease.election,
                                "events": _described(events),
                                "queued": queued.is_set(),
                            },
                        )
                    break  # anything but the leader's renewal: read the election afresh
                yield renewal


def _described(events: list[Any]) -> list[str]:
    """``events`` for a log line: ``"PUT key"``, ``"DELETE key"``."""
    return [
        f"{rpc.Event.EventType.Name(e.type)} {bytes(e.kv.key).decode(errors='backslashreplace')}"
        for e in events
    ]


def _watch_candidacy(lease: EtcdLease) -> tuple[Session, Candidacy] | None:
    """Our queued candidacy in this election closest to the front, and its session, if any."""
    sessions = lease.backend.sessions
    found = [
        (session, candidacy)
        for lease_id, candidacy in list(lease.candidacies.items())
        if (session := sessions.own(lease_id)) is not None
    ]
    return min(found, key=lambda pair: pair[1].create_revision) if found else None


def _renewal(lease: EtcdLease, leader: Any, events: list[Any]) -> LeaseRecord | None:
    """The record of the leader's renewal (``Proclaim`` puts on the key we read) if that
    is all ``events`` are, built without asking etcd; None for anything else.

    etcd expires leases itself, so a follower needs no remaining TTL from
    etcd here: a renewal's keepalive went with its put, and the lease
    lives at least its granted TTL from then (``expires_in`` is a hint).
    """
    if leader is None or not events:
        return None
    backend = lease.backend
    own = backend.sessions.own(leader.lease)
    granted = own.lease_duration if own is not None else lease.granted_ttl.get(leader.lease)
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
    candidacy = lease.candidacies.get(own.lease_id) if own is not None else None
    return LeaseRecord(
        election=lease.election,
        holder=holder_of(kv, lease.prefix, election=lease.election, backend=backend.scheme),
        lease_duration=granted,
        fencing_token=kv.create_revision,
        version=str(kv.mod_revision),
        acquire_time=candidacy.acquire_time if candidacy is not None else None,
        expires_in=own.expires_in() if own is not None else granted + EXPIRY_SLACK,
    )

"""An election's keys and the etcd requests on them (no I/O here).

The candidate key is ``PREFIX + ELECTION + "/" + <lease id hex>`` (Go's
``concurrency.Election``); the leader is the lowest create revision under
``PREFIX + ELECTION + "/"``. Job run records live beside that prefix, never
under it: ``PREFIX + ELECTION + "~runs/" + JOB`` (``etcdctl elect`` and Go's
recipe take every key under the campaign prefix for a candidate). This module
names those keys, reads a leader key's identity, and builds the ranges and
transactions of the recipe and of the run records.
"""

from __future__ import annotations

import re
from typing import Any

from aetcd import rpc
from aetcd.utils import prefix_range_end

from ..._errors import CorruptLeaseRecord

__all__ = [
    "EXPIRY_SLACK",
    "RUNS_SUFFIX",
    "campaign_txn",
    "candidate_key",
    "holder_of",
    "kvs",
    "proclaim_txn",
    "range_first_created",
    "range_predecessor",
    "range_prefix",
    "record_run_txn",
    "resign_txn",
    "run_key",
    "runs_prefix",
]

#: A candidate key's last segment: the lease id as Go's ``%x`` prints it.
_LEASE_HEX = re.compile(rb"[0-9a-f]{1,16}")

#: Slack added to a lease's remaining TTL in ``expires_in``: etcd reports TTLs
#: in whole seconds (rounded down) and revokes expired leases on a 500 ms sweep.
EXPIRY_SLACK = 1.0


def candidate_key(prefix: str, election: str, lease_id: int) -> bytes:
    """``PREFIX + ELECTION + "/" + <lease id hex>``: the key Go's ``Election.Campaign`` writes."""
    return f"{prefix}{election}/{lease_id:x}".encode()


#: Election ``E``'s run records are under ``PREFIX + E + RUNS_SUFFIX + "/"``, a
#: sibling of its campaign prefix. Election names may not end in it: election
#: ``E~runs``'s campaign prefix would be ``E``'s records.
RUNS_SUFFIX = "~runs"


def runs_prefix(prefix: str, election: str) -> bytes:
    """``PREFIX + ELECTION + "~runs/"``: where the election's job run records live."""
    return f"{prefix}{election}{RUNS_SUFFIX}/".encode()


def run_key(prefix: str, election: str, job: str) -> bytes:
    """``PREFIX + ELECTION + "~runs/" + JOB``: one job's last run record (the JSON of ``_runs``)."""
    return runs_prefix(prefix, election) + job.encode()


def holder_of(kv: Any, prefix: bytes, *, election: str, backend: str) -> str:
    """The identity in leader key ``kv`` under campaign ``prefix``, or
    :class:`CorruptLeaseRecord` if it is not a candidate key."""
    suffix = bytes(kv.key)[len(prefix) :]
    key = bytes(kv.key).decode(errors="backslashreplace")
    if not _LEASE_HEX.fullmatch(suffix) or int(suffix, 16) != kv.lease:
        raise CorruptLeaseRecord(
            f"etcd key {key!r} holds the election (lowest create revision under "
            f"{prefix.decode(errors='backslashreplace')!r}) but is not a candidate key "
            "PREFIX/ELECTION/<lease id hex> attached to that lease (a nested election name, "
            f"or written by hand?); remove it with: etcdctl del {key!r}",
            election=election,
            backend=backend,
        )
    try:
        holder = bytes(kv.value).decode("utf-8")
    except UnicodeDecodeError:
        holder = ""
    if not holder:
        raise CorruptLeaseRecord(
            f"etcd key {key!r} holds the election but its value is not a UTF-8 identity "
            f"({bytes(kv.value)[:40]!r}); remove it with: etcdctl del {key!r}",
            election=election,
            backend=backend,
        )
    return holder


def kvs(response: Any, index: int) -> list[Any]:
    """The keys read by the ``index``-th range of a transaction's response."""
    return list(response.responses[index].response_range.kvs)


def range_prefix(prefix: bytes) -> Any:
    """Every key under ``prefix``."""
    return rpc.RangeRequest(key=prefix, range_end=prefix_range_end(prefix))


def range_first_created(prefix: bytes) -> Any:
    """Go's ``Get(pfx, WithFirstCreate()...)``: the key with the lowest create revision."""
    return rpc.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.CREATE,
        limit=1,
    )


def range_predecessor(prefix: bytes, create_revision: int) -> Any:
    """Go's ``waitDeletes`` query: the newest key created before ``create_revision``."""
    return rpc.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        sort_order=rpc.RangeRequest.DESCEND,
        sort_target=rpc.RangeRequest.CREATE,
        max_create_revision=create_revision - 1,
        limit=1,
    )


def _created_at(key: bytes, create_revision: int) -> Any:
    """The guard "``key`` is the incarnation created at ``create_revision``" (0: it does not exist)."""
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=create_revision
    )


def campaign_txn(key: bytes, identity: str, lease_id: int, prefix: bytes, *, queued: bool) -> Any:
    """One Campaign step; responses: [our key, the leader] (the put's, if it created ours).

    Already ``queued``: a read-only transaction (a linearizable read, no raft
    write). Otherwise Go's Campaign: put the key if it does not exist, else
    read it back.
    """
    leader_op = rpc.RequestOp(request_range=range_first_created(prefix))
    read_ours = rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
    if queued:
        return rpc.TxnRequest(success=[read_ours, leader_op])
    return rpc.TxnRequest(
        compare=[_created_at(key, 0)],
        success=[
            rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=identity.encode(), lease=lease_id)),
            leader_op,
        ],
        failure=[read_ours, leader_op],
    )


def proclaim_txn(key: bytes, identity: str, lease_id: int, create_revision: int) -> Any:
    """Go's ``Election.Proclaim``: rewrite our key's value if it is still our key."""
    return rpc.TxnRequest(
        compare=[_created_at(key, create_revision)],
        success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=identity.encode(), lease=lease_id))],
    )


def resign_txn(key: bytes, create_revision: int) -> Any:
    """Go's ``Resign``: delete our key if it is still the one we created."""
    return rpc.TxnRequest(
        compare=[_created_at(key, create_revision)],
        success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))],
    )


def record_run_txn(
    leader_key: bytes, fencing_token: int, identity: str, key: bytes, value: str, prefix: bytes
) -> Any:
    """Put run record ``value`` at ``key`` if the term's leader key is still there; on
    failure responses: [the leader under campaign ``prefix``], to say who holds it.

    The guard is that ``leader_key`` is the incarnation created at
    ``fencing_token`` (so neither deleted, nor expired, nor recreated since)
    and names ``identity``. That is enough for "still the leader" once the key
    was seen leading: the leader is the lowest create revision, and a key
    created later always gets a higher one. The record has no lease: it
    outlives the term.
    """
    return rpc.TxnRequest(
        compare=[
            _created_at(leader_key, fencing_token),
            rpc.Compare(
                key=leader_key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=identity.encode()
            ),
        ],
        success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value.encode()))],
        failure=[rpc.RequestOp(request_range=range_first_created(prefix))],
    )

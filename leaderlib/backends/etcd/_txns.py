"""Every election's transactions, sent together: one Txn of nested Txns for those due at once.

etcd runs a transaction's operations in order, a nested ``Txn`` among them,
each with its own guard and its own ``succeeded`` (etcd 3.3 and later): one
outer transaction of N election transactions costs one gRPC call and one raft
entry where N would cost N of each. Renewals (Proclaim) and campaign steps of
thousands of elections on one backend object go out this way, through a
:class:`~leaderlib.backends._batch.Batcher`; a lone transaction goes out as
itself, as before.

etcd refuses a transaction that writes one key twice, and one with more
than ``--max-txn-ops`` (default 128) operations at any level, counting the
outer level's against the nested ones. So a batch is cut into groups of
distinct keys, at most :data:`GROUP_LIMIT` each; and a group etcd refuses
as a whole for any other reason than being unreachable (a permission one
election lacks, a lower ``--max-txn-ops``) is sent again one transaction at
a time, so that each gets its own answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from aetcd import rpc

from ..._errors import BackendUnavailable
from .._batch import Batcher
from ._channel import Channel

__all__ = ["GROUP_LIMIT", "Transactions", "beside"]

T = TypeVar("T")

#: Election transactions per outer one: with 2 operations per branch in each,
#: 100 + 2 stays within etcd's default --max-txn-ops of 128.
GROUP_LIMIT = 100

#: How many queued transactions one batch takes (several groups, sent in turn).
_BATCH_LIMIT = 10 * GROUP_LIMIT


@dataclasses.dataclass(frozen=True)
class _Txn:
    request: Any
    """An ``rpc.TxnRequest`` built by ``_keys``."""
    timeout: float | None
    """Its per-call deadline (None: the channel's)."""


class Transactions:
    """The backend's election transactions, batched (see the module docstring)."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._batcher: Batcher[_Txn, Any] = Batcher(self._send, limit=_BATCH_LIMIT)

    def submit(
        self, request: Any, timeout: float | None = None, *, tell_retired: bool = False
    ) -> asyncio.Future[Any]:
        """Queue ``request`` (an ``rpc.TxnRequest``) for the next batch; its future ``TxnResponse``.

        Queued at once, so the caller may await something else meanwhile (a
        renewal's keepalive); cancelling the future drops it if not yet sent.
        With ``tell_retired`` (a resignation) it is also sent, at once and
        unbatched, on the connections given up on lately (:meth:`Channel.tell_retired`).
        """
        if tell_retired:
            self._channel.tell_retired(
                lambda c: c.kvstub.Txn(request, timeout=timeout or c._timeout, metadata=c.metadata)
            )
        return self._batcher.submit(_Txn(request, timeout))

    async def _send(self, txns: Sequence[_Txn]) -> list[Any]:
        groups = _groups(txns)
        if len(groups) == 1:
            return await self._send_group(groups[0])  # no task to gather: one hop less
        # The groups go out together: one after another, each would wait its
        # turn through a busy event loop as well as its round trip.
        answered = await asyncio.gather(*(self._send_group(group) for group in groups))
        return [outcome for outcomes in answered for outcome in outcomes]

    async def _send_group(self, group: list[_Txn]) -> list[Any]:
        """The group's responses (or errors), in order."""
        if len(group) == 1:
            return [await self._call_one(group[0])]
        outer = rpc.TxnRequest(success=[rpc.RequestOp(request_txn=txn.request) for txn in group])
        timeouts = [txn.timeout for txn in group if txn.timeout is not None]
        try:
            response = await self._channel.txn(None, outer, min(timeouts) if timeouts else None)
        except BackendUnavailable as exc:
            return [exc] * len(group)  # unreachable or overloaded: each alone would fare no better
        except Exception:
            return [await self._call_one(txn) for txn in group]
        answers = []
        for op in response.responses:
            answer = op.response_txn
            answer.header.CopyFrom(response.header)  # the revision every write of the group got
            answers.append(answer)
        return answers

    async def _call_one(self, txn: _Txn) -> Any:
        try:
            return await self._channel.txn(None, txn.request, txn.timeout)
        except Exception as exc:
            return exc

    async def aclose(self) -> None:
        await self._batcher.aclose()


def _groups(txns: Sequence[_Txn]) -> list[list[_Txn]]:
    """``txns`` in order, cut wherever a key would be written twice or a group would pass GROUP_LIMIT."""
    groups: list[list[_Txn]] = []
    written: set[bytes] = set()
    for txn in txns:
        keys = _written_keys(txn.request)
        if not groups or len(groups[-1]) >= GROUP_LIMIT or not written.isdisjoint(keys):
            groups.append([])
            written = set()
        groups[-1].append(txn)
        written |= keys
    return groups


def _written_keys(request: Any) -> set[bytes]:
    """The keys a transaction puts or deletes, in either branch (``_keys`` deletes single keys)."""
    keys = set()
    for op in (*request.success, *request.failure):
        if op.HasField("request_put"):
            keys.add(bytes(op.request_put.key))
        elif op.HasField("request_delete_range"):
            keys.add(bytes(op.request_delete_range.key))
    return keys


async def beside(queued: asyncio.Future[Any], other: Awaitable[T]) -> T:
    """Await ``other`` while the transaction ``queued`` goes out; if ``other`` fails, drop
    ``queued`` (unsent, it is never sent; sent, its answer is not waited for)."""
    try:
        return await other
    except BaseException:
        queued.cancel()
        raise

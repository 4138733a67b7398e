"""One etcd backend object, many elections: their renewals share the session's keepalives and
go out as a few Txns of nested Txns, each still answered on its own. Counted by etcd itself
(``/metrics``). Real etcd."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Callable

import pytest

from leaderlib._errors import LeaseLost
from leaderlib.backends.etcd import EtcdBackend, candidate_key
from leaderlib.testing.servers import EtcdServer
from tests.backends import test_etcd
from tests.backends.test_etcd import name

pytestmark = pytest.mark.timeout(60)

make = test_etcd.make  # the fixture: EtcdBackends on the session's etcd, closed after the test

ELECTIONS = 300


def received(server: EtcdServer) -> dict[str, float]:
    """gRPC messages etcd has received so far, by method (Txn, LeaseKeepAlive...)."""
    with urllib.request.urlopen(f"http://{server.host}:{server.client_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        found = re.match(r'grpc_server_msg_received_total\{.*grpc_method="(\w+)"', line)
        if found:
            counts[found[1]] = counts.get(found[1], 0.0) + float(line.split()[-1])
    return counts


async def test_renewals_of_many_elections_share_keepalives_and_txns(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    """300 elections of one identity renewing at once: a few Txns and keepalives in all (sent
    one by one: 300 of each), and each renewal gets its own new revision."""
    backend = make()
    leases = [backend.lease(name()) for _ in range(ELECTIONS)]
    acquired = await asyncio.gather(*(lease.try_acquire("replica-a", 10.0, None) for lease in leases))
    records = [result.record for result in acquired if result.acquired and result.record is not None]
    assert len(records) == ELECTIONS
    before = received(etcd_server)
    renewed = await asyncio.gather(*(lease.renew(r) for lease, r in zip(leases, records, strict=True)))
    after = received(etcd_server)
    txns = after["Txn"] - before.get("Txn", 0.0)
    keepalives = after["LeaseKeepAlive"] - before.get("LeaseKeepAlive", 0.0)
    assert txns <= ELECTIONS // 20, txns
    assert keepalives <= 5, keepalives
    assert len({r.version for r in renewed}) <= txns  # the writes of one transaction share a revision
    for lease, record, new in zip(leases, records, renewed, strict=True):
        assert (new.holder, new.fencing_token) == (record.holder, record.fencing_token)
        assert int(new.version) > int(record.version)
        stored = await lease.get()
        assert stored is not None and stored.version == new.version


async def test_a_renewal_whose_key_is_gone_fails_alone_in_its_batch(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    backend = make()
    leases = [backend.lease(name()) for _ in range(20)]
    acquired = await asyncio.gather(*(lease.try_acquire("replica-a", 10.0, None) for lease in leases))
    records = [result.record for result in acquired if result.record is not None]
    session = backend.sessions.by_slot[("replica-a", 10)]
    gone = candidate_key(backend.prefix, records[3].election, session.lease_id)
    await backend.channel.call(None, lambda c: c.delete(gone))
    outcomes = await asyncio.gather(
        *(lease.renew(r) for lease, r in zip(leases, records, strict=True)), return_exceptions=True
    )
    assert isinstance(outcomes[3], LeaseLost)
    assert not any(isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 3)


async def test_two_writes_of_one_key_due_together_both_go_through(make: Callable[..., EtcdBackend]) -> None:
    """etcd refuses a Txn that writes a key twice: two renewals of one term, due at once, are
    sent in separate transactions rather than failing together."""
    backend = make()
    lease = backend.lease(name())
    record = (await lease.try_acquire("replica-a", 10.0, None)).record
    assert record is not None
    first, second = await asyncio.gather(lease.renew(record), lease.renew(record))
    assert first.version != second.version


async def test_a_lone_transaction_goes_out_in_the_batchs_own_task(
    make: Callable[..., EtcdBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction alone is sent by the batch's task itself: no task per group to gather
    (a hop through the event loop each way)."""
    backend = make()
    lease = backend.lease(name())
    await lease.try_acquire("replica-a", 10.0, None)  # the session exists: the next try is one Txn
    senders: list[str] = []
    txn = backend.channel.txn

    async def spied(*args: object) -> object:
        task = asyncio.current_task()
        senders.append(task.get_name() if task is not None else "")
        return await txn(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(backend.channel, "txn", spied)
    acquired = await backend.lease(name()).try_acquire("replica-a", 10.0, None)
    assert acquired.acquired
    assert senders == ["leaderlib-batch"]

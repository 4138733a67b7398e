"""etcd job run records (issue 15): what the conformance suite does not cover.

Where the records live (beside the campaign prefix, so ``etcdctl elect`` never
queues behind them), what one record costs (counted by etcd itself in
``/metrics``), the refusal of a stale leader's own handle, and the etcd roles a
user needs. Real etcd; raw reads go through a plain ``aetcd.Client``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import time
import urllib.request
from collections.abc import Callable

import aetcd
import pytest

from leaderlib._errors import AccessDenied, LeaseLost
from leaderlib.backends import JobRun, LeaseRecord
from leaderlib.backends._runs import encode_run
from leaderlib.backends.etcd import DEFAULT_PREFIX, EtcdBackend, run_key
from leaderlib.testing.pytest_plugin import started
from leaderlib.testing.servers import EtcdServer
from tests.backends import test_etcd
from tests.backends.test_etcd import Etcdctl, name
from tests.electing import until

pytestmark = pytest.mark.timeout(60)

TICK = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)

make = test_etcd.make  # the fixture: EtcdBackends on the session's etcd, closed after the test


def run_of(record: LeaseRecord, job: str = "report", tick: dt.datetime = TICK) -> JobRun:
    return JobRun(
        job=job, tick=tick, fencing_token=record.fencing_token, identity=record.holder, started_at=tick
    )


def requests(server: EtcdServer) -> dict[str, float]:
    """KV requests etcd has started so far, by method (Range, Txn, Put...)."""
    with urllib.request.urlopen(f"http://{server.host}:{server.client_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        found = re.match(
            r'grpc_server_started_total\{.*grpc_method="(\w+)",grpc_service="etcdserverpb.KV"', line
        )
        if found:
            counts[found[1]] = counts.get(found[1], 0.0) + float(line.split()[-1])
    return counts


async def test_records_live_beside_the_campaign_prefix(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    """``PREFIX + E + "~runs/" + JOB``, the codec's JSON, attached to no lease; the campaign
    prefix holds only candidates, so after the leader resigns ``etcdctl elect`` leads at
    once instead of queueing behind a record."""
    election = name()
    backend = make()
    record = (await backend.lease(election).try_acquire("leader", 2.0, None)).record
    assert record is not None
    run = run_of(record)
    await backend.lease(election).record_run(run)
    async with aetcd.Client(host=etcd_server.host, port=etcd_server.client_port) as raw:
        stored = await raw.get(f"{DEFAULT_PREFIX}{election}~runs/report".encode())
        assert stored is not None and stored.key == run_key(DEFAULT_PREFIX, election, "report")
        assert json.loads(stored.value) == json.loads(encode_run(run))
        assert stored.lease == 0, "a record must outlive the session"
        campaign = await raw.get_prefix(f"{DEFAULT_PREFIX}{election}/".encode())
        assert [kv.value for kv in campaign] == [b"leader"]
    await backend.lease(election).release(record)
    ctl = await Etcdctl.start(etcd_server, f"{DEFAULT_PREFIX}{election}", "ctl-proposal")
    try:
        await until(lambda: ctl.elected, 10, "etcdctl elect leads after our leader resigned")
        assert ctl.lines[0].startswith(f"{DEFAULT_PREFIX}{election}/")
    finally:
        await ctl.stop()
    assert await make().lease(election).last_runs() == {"report": run}


async def test_a_record_costs_the_leader_one_txn(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    """The leader's own handle knows its key: one Txn per record, no read. Another
    backend's handle reads the leader first (one Range more); last_runs is one Range."""
    election = name()
    leader = make()
    record = (await leader.lease(election).try_acquire("leader", 2.0, None)).record
    assert record is not None
    other = make().lease(election)
    await other.get()  # connected, so the counts below hold only the calls measured

    def delta(before: dict[str, float]) -> dict[str, float]:
        after = requests(etcd_server)
        return {m: after[m] - before.get(m, 0.0) for m in after if after[m] != before.get(m, 0.0)}

    before = requests(etcd_server)
    for second in range(3):
        run = run_of(record, tick=TICK + dt.timedelta(seconds=second))
        await leader.lease(election).record_run(run)
        await leader.lease(election).record_run(dataclasses.replace(run, outcome="ok", duration=0.01))
    assert delta(before) == {"Txn": 6.0}

    before = requests(etcd_server)
    await other.record_run(run_of(record, "elsewhere"))
    assert delta(before) == {"Range": 1.0, "Txn": 1.0}

    before = requests(etcd_server)
    runs = await other.last_runs()
    assert delta(before) == {"Range": 1.0}
    assert set(runs) == {"report", "elsewhere"}


async def test_the_stale_leaders_own_handle_is_refused(make: Callable[..., EtcdBackend]) -> None:
    """A leader that stopped renewing (paused) still believes in its key; the store refuses
    its record once the key expired and another term began, and says who leads."""
    election = name()
    paused, successor = make(), make()
    old = (await paused.lease(election).try_acquire("paused", 2.0, None)).record
    assert old is not None
    await paused.lease(election).record_run(run_of(old))
    taken: LeaseRecord | None = None
    deadline = time.monotonic() + 10
    while taken is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # the paused leader's lease expires after its TTL (2 s)
        attempt = await successor.lease(election).try_acquire("successor", 2.0, None)
        taken = attempt.record if attempt.acquired else None
    assert taken is not None, "the successor never led"
    assert any(c.leading for c in paused.lease(election).candidacies.values()), "it never learned"
    theirs = run_of(taken, tick=TICK + dt.timedelta(seconds=5))
    await successor.lease(election).record_run(theirs)
    with pytest.raises(LeaseLost, match="successor"):
        await paused.lease(election).record_run(run_of(old, tick=TICK + dt.timedelta(seconds=9)))
    assert await paused.lease(election).last_runs() == {"report": theirs}


async def test_a_role_needs_both_ranges() -> None:
    """Least privilege for one election E: readwrite on ``PREFIX+E/`` (the campaign) and
    on ``PREFIX+E~runs/`` (the records). The campaign alone elects, but recording is
    AccessDenied, and so is reading the records."""
    election = name()
    campaign, runs = f"{DEFAULT_PREFIX}{election}/", f"{DEFAULT_PREFIX}{election}~runs/"
    with started(EtcdServer()) as server:
        server.enable_auth(users=[("campaign-only", "pw", campaign), ("both", "pw", campaign)])
        server.etcdctl("role", "grant-permission", "both", "--prefix=true", "readwrite", runs)
        for user, allowed in (("campaign-only", False), ("both", True)):
            backend = EtcdBackend.from_url(f"etcd://{user}:pw@{server.endpoint}")
            try:
                lease = backend.lease(election)
                record = (await lease.try_acquire(user, 2.0, None)).record
                assert record is not None and record.holder == user, "the campaign range elects"
                run = run_of(record)
                if allowed:
                    await lease.record_run(run)
                    assert await lease.last_runs() == {"report": run}
                    await lease.release(record)
                else:
                    with pytest.raises(AccessDenied, match="grant-permission"):
                        await lease.record_run(run)
                    with pytest.raises(AccessDenied):
                        await lease.last_runs()
                    await lease.release(record)
            finally:
                await backend.aclose()

"""The short chaos campaign, on every store (``make chaos`` runs the long one).

A few seeded random faults per store (``CHAOS_SHORT_FAULTS``, default 4;
``CHAOS_SEED`` replays a printed seed), judged by the ledger: no overlapping
terms, no act by a replaced leader, no accepted stale write, no fencing-token
regression, and a new leader within lease duration + 1 s of every fault that
leaves a healthy majority. Outages are kept short here (at most 3 s). What
follows a fault that makes Redis lose acknowledged writes is a documented
limit (``check.LOSES_WRITES``): reported, not failed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from leaderlib.testing.pytest_plugin import require_binary
from leaderlib.testing.toxiproxy import Toxiproxy

from .campaign import run_store, verdict
from .report import markdown, write_report
from .stores import EtcdStore, KubeStore, RedisStore, SentinelStore, SQLiteStore, Store

SEED = os.environ.get("CHAOS_SEED") or str(random.SystemRandom().randrange(10**6))
FAULTS = int(os.environ.get("CHAOS_SHORT_FAULTS", "4"))


@pytest.fixture(params=["sqlite", "redis", "etcd", "kubernetes", "redis-sentinel"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    name = request.param
    if name == "sqlite":
        return SQLiteStore(tmp_path / name)
    if name in ("redis", "redis-sentinel"):
        require_binary("redis-server")
        return RedisStore(tmp_path / name) if name == "redis" else SentinelStore(tmp_path / name)
    if name == "etcd":
        return EtcdStore(tmp_path / name, request.getfixturevalue("etcd_cluster"))
    return KubeStore(tmp_path / name, request.getfixturevalue("kube_apiserver"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_short_campaign(store: Store, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    toxiproxy = request.getfixturevalue("toxiproxy") if store.network else None
    assert toxiproxy is None or isinstance(toxiproxy, Toxiproxy)
    print(f"CHAOS_SEED={SEED}")
    try:
        run = run_store(store, SEED, FAULTS, tmp_path / "run", toxiproxy, max_outage=3.0)
    finally:
        store.close()
    write_report([run], tmp_path / "report")
    ok, why = verdict(run)
    assert ok and not run.account["problems"], (
        f"CHAOS_SEED={SEED} on {store.name}: {why}\n{run.account['problems'][:10]}\n{markdown([run])}"
    )

"""`leaderlib bench --quick` on all four stores: the report is complete and well-formed.

A smoke test of the benchmark suite. It never asserts a time: it checks that
every store x scenario x subject has a row that was measured or says why not
("n/a (why)"), that the JSON is valid and the plots were written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leaderlib._bench.model import SCENARIOS, STORES
from leaderlib._bench.peers import load_peer, peers_for
from leaderlib.testing.servers import EtcdServer, KubeAPIServer, RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TICK_SUBJECTS = [
    "leaderlib leader mode", "leaderlib leader mode, misfire_grace", "leaderlib record_run",
    "leaderlib per-job mode", "schedule (no election)",
]  # fmt: skip
PLOTS = [*(f"latency-{store}.png" for store in STORES), "failover-timeline.png", "load.png", "scale.png"]


def expected_subjects(store: str, scenario: str) -> set[str]:
    """Who must have a row for ``scenario`` on ``store``."""
    if scenario == "raw":
        return {"raw"}
    if scenario == "tick":
        return {*TICK_SUBJECTS, *(["redis-py Lock per run"] if store == "redis" else [])}
    subjects = {load_peer(key, store).subject for key in peers_for(store)}
    return subjects | ({"leaderlib try_acquire"} if scenario == "acquire" else set())


def test_quick_bench_report_is_complete(
    tmp_path: Path, redis_server: RedisServer, etcd_server: EtcdServer, kube_apiserver: KubeAPIServer
) -> None:
    report_dir, json_path = tmp_path / "report", tmp_path / "bench.json"
    kube_url = f"kubernetes://{kube_apiserver.namespace}?kubeconfig={kube_apiserver.kubeconfig}"
    sqlite_url = "sqlite:///" + str(tmp_path / "bench.sqlite3").lstrip("/")
    argv = [
        sys.executable, "-m", "leaderlib", "bench", "--quick",
        "--backend", sqlite_url, "--backend", redis_server.url, "--backend", etcd_server.url,
        "--backend", kube_url, "--kube-admin-kubeconfig", str(kube_apiserver.admin_kubeconfig),
        "--json", str(json_path), "--report", str(report_dir),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "[bench]" in done.stderr  # progress was shown

    report = json.loads(json_path.read_text())
    assert {"machine", "versions", "settings", "rows", "goals", "timelines"} <= report.keys()
    rows = {(r["store"], r["scenario"], r["subject"]): r for r in report["rows"]}
    for store in STORES:
        for scenario in SCENARIOS:
            for subject in expected_subjects(store, scenario):
                row = rows.get((store, scenario, subject))
                assert row is not None, f"no row for {store} x {scenario} x {subject}"
                assert row["status"] in ("ok", "n/a"), f"{store} x {scenario} x {subject}: {row['why']}"
                if row["status"] == "n/a":
                    assert row["why"], f"{store} x {scenario} x {subject} is n/a without a why"
                elif scenario in ("load", "scale"):
                    assert row["points"], f"{store} x {scenario} x {subject} has no points"
                else:
                    assert row["n"] > 0 and row["median"] is not None, f"{store} x {scenario} x {subject}"
    for store in STORES:  # the cost of a run record: two record_run writes, next to the raw round trip
        record = rows[(store, "tick", "leaderlib record_run")]
        if record["status"] == "ok":
            assert record["extra"]["cost_per_run_ms"] == round(2 * record["median"], 3), record["extra"]
            assert record["ratio_to_raw"] is not None, f"{store}: record_run has no ratio to raw"
    assert {g["verdict"] for g in report["goals"]} <= {"met", "MISSED", "not measured"}
    assert "| store | scenario | subject |" in (report_dir / "report.md").read_text()
    for name in PLOTS:
        plot = report_dir / name
        assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

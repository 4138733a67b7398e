"""The tick scenario's run-record rows on a SQLite file: the misfire_grace subject ran its job,
``record_run`` was timed and its cost per run is two writes next to the raw round trip; a
backend without ``record_run`` gives n/a rows that say why, not a crash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from leaderlib._bench import runner
from leaderlib._bench.plan import QUICK
from leaderlib._bench.report import markdown
from leaderlib._bench.scenarios import RECORD_RUN
from leaderlib._bench.stores import Target
from leaderlib.backends.sqlite._lease import SQLiteLease

PLAN = dataclasses.replace(QUICK, samples=10, tick_window=0.5)
GRACE = "leaderlib leader mode, misfire_grace"


def sqlite_target(tmp_path: Path) -> Target:
    return Target.from_url("sqlite:///" + str(tmp_path / "bench.sqlite3").lstrip("/"))


async def test_record_run_row_gives_the_cost_per_run_next_to_raw(tmp_path: Path) -> None:
    result = await runner.run_target(sqlite_target(tmp_path), ["raw", "tick"], [], PLAN)
    rows = {r.subject: r for r in result["rows"]}
    record, grace, raw = rows[RECORD_RUN], rows[GRACE], rows["raw"]
    assert record.status == "ok", record.why
    assert len(record.samples) == PLAN.samples
    median = float(record.stats()["median"] or 0)
    assert record.extra["cost_per_run_ms"] == round(2 * median, 3)
    assert record.ratio_to_raw == round(median / float(raw.stats()["median"] or 1), 2)
    assert record.extra["last_runs_ms"]["n"] > 0
    assert grace.status == "ok" and grace.samples, grace.why
    # Each recorded run writes its start and its end (statements counted by the trace callback).
    assert grace.extra["requests_per_run"] > rows["leaderlib leader mode"].extra["requests_per_run"]
    report = {"rows": result["rows"], "started": "", "duration_s": 0, "machine": {"cpus": 2},
              "settings": {"quick": True, "followers": []}}  # fmt: skip
    assert f"cost per run = 2 x record_run = {record.extra['cost_per_run_ms']} ms" in markdown(report)


async def test_a_backend_without_record_run_gives_na_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(SQLiteLease, "record_run")
    result = await runner.run_target(sqlite_target(tmp_path), ["tick"], [], PLAN)
    rows = {r.subject: r for r in result["rows"]}
    for subject in (RECORD_RUN, GRACE):
        assert rows[subject].status == "n/a", (subject, rows[subject].why)
        assert "has no record_run" in rows[subject].why
    assert rows["leaderlib leader mode"].status == "ok"

"""The conformance suite on ``sqlite:///PATH``, one fresh file per test.

Foreign and corrupt records are written with the plain ``sqlite3`` module, as
another process (or an operator with the ``sqlite3`` shell) would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from leaderlib.backends import Backend
from leaderlib.backends.sqlite import SQLiteBackend

CORRUPTIBLE = True

TABLE = "leaderlib_leases"
RUNS_TABLE = "leaderlib_runs"


def boottime() -> float:
    """The clock the store measures expiry on (see leaderlib.backends.sqlite)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class SQLiteHarness:
    corruptible = True
    bad_election_names = ()  # any non-empty name will do

    def __init__(self, directory: Path) -> None:
        self.path = directory / "leases.db"
        self.url = f"sqlite://{self.path}"

    def backend(self) -> Backend:
        return SQLiteBackend.from_url(self.url)

    async def _ensure_table(self) -> None:
        # Let leaderlib create the file and tables, then write behind its back.
        backend = SQLiteBackend.from_url(self.url)
        try:
            await backend.lease("conformance-setup").get()
        finally:
            await backend.aclose()

    def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, params)
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def write_foreign(self, election: str, holder: str, lease_duration: float) -> None:
        await self._ensure_table()
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        await asyncio.to_thread(
            self._execute,
            f"INSERT OR REPLACE INTO {TABLE} (election, holder, lease_duration, fencing_token,"
            " version, transitions, acquire_time, renew_time, expires_at)"
            " VALUES (?, ?, ?, 7, 100, 3, ?, ?, ?)",
            (election, holder, lease_duration, now, now, boottime() + lease_duration),
        )

    async def write_corrupt(self, election: str) -> None:
        await self._ensure_table()
        await asyncio.to_thread(
            self._execute,
            f"INSERT OR REPLACE INTO {TABLE} (election, holder, lease_duration, fencing_token,"
            " version, transitions, acquire_time, renew_time, expires_at)"
            " VALUES (?, X'00ff9a', 'garbage', NULL, 'v?', -1, 'yesterday', 12, NULL)",
            (election,),
        )

    async def write_corrupt_run(self, election: str, job: str) -> None:
        await self._ensure_table()
        await asyncio.to_thread(
            self._execute,
            f"INSERT OR REPLACE INTO {RUNS_TABLE} (election, job, record) VALUES (?, ?, ?)",
            (election, job, '{"job": "report", "tick": "at eight'),
        )


def make_harness(request: pytest.FixtureRequest) -> SQLiteHarness:
    directory: Path = request.getfixturevalue("tmp_path")
    return SQLiteHarness(directory)

"""The raw compare-and-swap on a SQLite file, without leaderlib: the floor under
``sqlite:///PATH``'s figures.

One operation is ``BEGIN IMMEDIATE; UPDATE ... WHERE version = ?; COMMIT`` on
one row of a table of its own, with the connection settings the backend uses
(WAL, ``synchronous=NORMAL``, autocommit with explicit transactions, a busy
timeout). It runs on the calling thread: the backend's extra cost is its hop to
its worker thread plus reading and checking the row.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit

TABLE = "leaderlib_raw_bench"


async def raw_round_trip(
    url: str,
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """Return (one raw compare-and-swap, close) on the file ``url`` names."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc == ".":
        path = os.path.abspath(path.lstrip("/"))
    conn = sqlite3.connect(path, timeout=2.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (k TEXT PRIMARY KEY, version INTEGER)")
    conn.execute(f"INSERT OR REPLACE INTO {TABLE} VALUES ('bench', 0)")
    version = 0

    async def operation() -> None:
        nonlocal version
        conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(
            f"UPDATE {TABLE} SET version = version + 1 WHERE k = 'bench' AND version = ?",
            (version,),
        )
        conn.execute("COMMIT")
        if cursor.rowcount != 1:
            raise RuntimeError("the raw compare-and-swap lost: another writer on the bench row")
        version += 1

    async def close() -> None:
        conn.close()

    return operation, close

"""The lease file's one connection, its worker thread, its pragmas and tables, and the error table."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

from ..._errors import AccessDenied, BackendUnavailable, CorruptLeaseRecord
from ..._logging import get_logger
from .._errors import ErrorMap, Row, error_map

__all__ = ["Database"]

logger = get_logger("leaderlib.backends.sqlite")

T = TypeVar("T")

#: sqlite3 errors after which the connection is dropped and the file opened again.
_REOPEN = re.compile(r"not a database|malformed|no such table")


def _sqlite_text(exc: BaseException) -> str:
    return str(exc).lower()


def _is_unwritable(exc: BaseException, db: Database) -> bool:
    text = _sqlite_text(exc)
    return ("readonly" in text or "unable to open" in text) and db.why_unwritable() is not None


#: sqlite3's errors as leaderlib's, messages naming the file and table.
_ERRORS: ErrorMap[Database] = error_map(
    [
        Row(
            sqlite3.OperationalError,
            BackendUnavailable,
            lambda exc, db: (
                f"{db.path} stayed locked by another process longer than busy_timeout={db.busy_timeout}s"
            ),
            when=lambda exc, db: "locked" in _sqlite_text(exc) or "busy" in _sqlite_text(exc),
        ),
        Row(sqlite3.Error, AccessDenied, lambda exc, db: db.why_unwritable() or "", when=_is_unwritable),
        Row(
            sqlite3.Error,
            CorruptLeaseRecord,
            lambda exc, db: (
                f"{db.path} is not a readable SQLite database ({exc}); "
                "point sqlite:/// at a new file or restore this one"
            ),
            when=lambda exc, db: "not a database" in _sqlite_text(exc) or "malformed" in _sqlite_text(exc),
        ),
        Row(
            sqlite3.Error,
            CorruptLeaseRecord,
            lambda exc, db: (
                f"{db.path} (table {db.table} or {db.runs_table}) does not have leaderlib's "
                f"columns ({exc}); choose another table= option"
            ),
            when=lambda exc, db: (
                "no such column" in _sqlite_text(exc) or "has no column" in _sqlite_text(exc)
            ),
        ),
        Row(
            sqlite3.Error,
            BackendUnavailable,
            lambda exc, db: f"sqlite error on {db.path} (table {db.table}): {exc}",
        ),
    ]
)


class Database:
    """One connection to the lease file, used only by its own worker thread.

    No call ever blocks the event loop, and the object can be shared by
    several event loops (the sync facade).
    """

    scheme = "sqlite"
    path: str
    table: str
    runs_table: str
    busy_timeout: float

    def __init__(self, path: str, table: str, busy_timeout: float) -> None:
        self.path = path
        self.table = table
        # Job run records live beside the leases, in a table of their own that
        # follows the lease table's name: leaderlib_leases -> leaderlib_runs.
        self.runs_table = table.removesuffix("_leases") + "_runs"
        self.busy_timeout = busy_timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="leaderlib-sqlite"
        )
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self.closed = False

    async def run(self, election: str | None, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` on the worker thread, with sqlite3 errors translated there."""
        if self.closed:
            raise BackendUnavailable("the backend was closed", election=election, backend=self.scheme)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(self._translated, election, func, *args)
            )
        except RuntimeError as exc:  # the executor was shut down by aclose()
            if not self.closed:
                raise
            raise BackendUnavailable(
                "the backend was closed", election=election, backend=self.scheme
            ) from exc

    def _translated(self, election: str | None, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)``, raising leaderlib's errors for sqlite3's (:data:`_ERRORS`); on the worker thread."""
        with _ERRORS.translating(self, election=election, backend=self.scheme):
            try:
                return func(*args)
            except sqlite3.Error as exc:
                if _REOPEN.search(str(exc).lower()):
                    # An unreadable file, or someone dropped a table: open
                    # again (which recreates the tables) on the next call.
                    self._reset()
                raise

    def connection(self) -> sqlite3.Connection:
        """This instance's connection, opened (and the tables created) on first use.

        ``CREATE TABLE IF NOT EXISTS`` on every open gives a file made by an
        older version (leases only) its runs table too.
        """
        if self._conn is not None:
            return self._conn
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                # Still correct (rollback journal), only slower under contention.
                logger.warning("sqlite file is not in WAL mode", extra={"path": self.path, "mode": mode})
            # In WAL mode NORMAL loses at most the last commits on power loss,
            # when every process holding a lease is gone anyway.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "election TEXT PRIMARY KEY, holder TEXT, lease_duration REAL, fencing_token INTEGER,"
                " version INTEGER, transitions INTEGER, acquire_time TEXT, renew_time TEXT,"
                " expires_at REAL)"
            )
            # One row per job that recorded a run: the JSON of backends._runs.
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.runs_table} ("
                "election TEXT NOT NULL, job TEXT NOT NULL, record TEXT, PRIMARY KEY (election, job))"
            )
        except BaseException:
            conn.close()
            raise
        logger.debug(
            "opened sqlite lease file",
            extra={"path": self.path, "table": self.table, "runs_table": self.runs_table},
        )
        self._conn = conn
        return conn

    def why_unwritable(self) -> str | None:
        """Why this process cannot write the file or its directory, or None if it can."""
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            return f"the directory {directory} does not exist any more"
        try:
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            return (
                f"cannot create files in {directory} ({exc.strerror}); SQLite creates "
                f"{os.path.basename(self.path)}, its -wal and its -shm file there: "
                "grant this user write permission on it"
            )
        for path in (self.path, self.path + "-wal", self.path + "-shm"):
            if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
                return f"cannot write {path}; grant this user read and write permission on it"
        return None

    def _reset(self) -> None:
        """Drop the connection so the next call opens the file again; on the worker thread."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def write(self, func: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``func`` in a ``BEGIN IMMEDIATE`` transaction; commit unless it raises."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = func(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        """Close the connection on its thread, then stop the thread; later calls are BackendUnavailable."""
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error, RuntimeError):
            await loop.run_in_executor(self._executor, self._close_sync)
        self.closed = True
        self._executor.shutdown(wait=False)

"""The lease file's connections (inline and the worker's), pragmas, tables, checkpoints, error table."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..._errors import AccessDenied, BackendUnavailable, CorruptLeaseRecord
from ..._logging import get_logger
from .._errors import ErrorMap, Row, error_map
from ._walindex import WalIndex, wal_index

__all__ = ["Database"]

logger = get_logger("leaderlib.backends.sqlite")

T = TypeVar("T")

#: Frames left in the WAL before a checkpoint copies them to the file: SQLite's
#: own default (``wal_autocheckpoint``), which the worker's connection keeps.
CHECKPOINT_FRAMES = 1000

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


class _Deferred(Exception):
    """Raised inside an inline write that would fsync: it is rolled back and run by the worker."""


class Database:
    """The lease file's connections: one for the worker thread, one used inline.

    A call runs first on the calling (event loop) thread, on the inline
    connection, if that does not block: the connection is free (``try``-locked,
    several event loops may share the object: the sync facade), it never waits
    for another process's lock (``busy_timeout`` 0), never checkpoints
    (``wal_autocheckpoint=0``) and writes only when the commit appends to the
    WAL without an fsync (:class:`~._walindex.WalIndex`). Anything else (a busy
    file, a commit that would rewind the WAL and fsync its header, any sqlite3
    error) is rolled back and runs again on the worker thread, on its own
    connection, which waits up to ``busy_timeout``, checkpoints (SQLite's
    automatic checkpoint, and one asked for by the inline connection at the same
    1000 frames) and translates errors. The worker opens, resets and closes
    both connections.
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
        # The inline connection and the WAL index it checks: used by whoever holds
        # _inline_lock, swapped (under it) only by the worker. None until the worker
        # opened the file; stays None (until a reset) where it cannot be used:
        # another journal mode, no WAL index to read.
        self._inline: tuple[sqlite3.Connection, WalIndex] | None = None
        self._inline_lock = threading.Lock()
        self._inline_tried = False  # touched only on the worker thread
        self._checkpoint_asked = False
        self.closed = False

    async def run(self, election: str | None, func: Callable[..., T], *args: Any) -> T:
        """``func(connection, *args)``: inline if that cannot block, else on the worker thread."""
        if self.closed:
            raise BackendUnavailable("the backend was closed", election=election, backend=self.scheme)
        if self._inline_lock.acquire(blocking=False):
            try:
                inline = self._inline
                if inline is not None:
                    try:
                        return func(inline[0], *args)
                    except (sqlite3.Error, _Deferred):
                        # Busy, a commit that would fsync, or an error the worker
                        # translates: nothing was written; the worker runs it again.
                        self._recover_inline(inline)
            finally:
                self._inline_lock.release()
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

    def _recover_inline(self, inline: tuple[sqlite3.Connection, WalIndex]) -> None:
        """After a failed inline call (under _inline_lock): a connection left in a
        transaction (its ROLLBACK failed) is not used again; the worker closes it
        and opens another."""
        if inline[0].in_transaction:
            self._inline = None
            with contextlib.suppress(RuntimeError):  # closed meanwhile: aclose() has nothing to do
                self._executor.submit(self._drop_inline, inline)

    def _drop_inline(self, inline: tuple[sqlite3.Connection, WalIndex]) -> None:
        """Close an inline connection; the next worker call opens another. On the worker thread."""
        with contextlib.suppress(sqlite3.Error):
            inline[0].close()
        self._inline_tried = False

    def _translated(self, election: str | None, func: Callable[..., T], *args: Any) -> T:
        """``func(connection, *args)`` on the worker thread; sqlite3's errors become leaderlib's (:data:`_ERRORS`)."""
        with _ERRORS.translating(self, election=election, backend=self.scheme):
            try:
                return func(self.connection(), *args)
            except sqlite3.Error as exc:
                if _REOPEN.search(str(exc).lower()):
                    # An unreadable file, or someone dropped a table: open
                    # again (which recreates the tables) on the next call.
                    self._reset()
                raise

    def connection(self) -> sqlite3.Connection:
        """The worker's connection, opened (and the tables created) on first use; on the worker thread.

        ``CREATE TABLE IF NOT EXISTS`` on every open gives a file made by an
        older version (leases only) its runs table too. The inline connection
        is opened right after, once the file exists in WAL mode.
        """
        if self.closed:  # a call or checkpoint queued behind aclose(): open nothing again
            raise BackendUnavailable("the backend was closed", backend=self.scheme)
        if self._conn is None:
            self._conn = self._open()
        if not self._inline_tried:
            self._inline_tried = True
            inline = self._open_inline()
            with self._inline_lock:
                self._inline = inline
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            mode = self._switch_to_wal(conn)
            if mode.lower() != "wal":
                # Still correct (rollback journal), only slower under contention.
                logger.warning("sqlite file is not in WAL mode", extra={"path": self.path, "mode": mode})
            # In WAL mode NORMAL loses at most the last commits on power loss,
            # when every process holding a lease is gone anyway.
            conn.execute("PRAGMA synchronous=NORMAL")
            # The write lock asked up front, where the busy timeout applies (a read that
            # upgrades to a write can be refused at once when another commits between).
            conn.execute("BEGIN IMMEDIATE")
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
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        logger.debug(
            "opened sqlite lease file",
            extra={"path": self.path, "table": self.table, "runs_table": self.runs_table},
        )
        return conn

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        """Put the file in WAL mode; returns the journal mode it is in.

        Several connections turning a new file to WAL at once each read it, then all
        but one are refused the exclusive lock with "database is locked" at once:
        SQLite does not wait out the busy timeout where waiting could deadlock. So
        the switch is asked again until the busy timeout has passed.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    def _open_inline(self) -> tuple[sqlite3.Connection, WalIndex] | None:
        """The inline connection and the WAL index, or None if the file cannot be used inline."""
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                raise ValueError("not in WAL mode: every commit would fsync")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA busy_timeout=0")
            return conn, wal_index(self.path)
        except (sqlite3.Error, OSError, ValueError) as exc:
            conn.close()
            logger.debug("sqlite calls stay on the worker thread", extra={"path": self.path, "why": str(exc)})
            return None

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

    def write(self, conn: sqlite3.Connection, func: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``func`` in a ``BEGIN IMMEDIATE`` transaction on ``conn``; commit unless it raises.

        On the inline connection, a commit that would fsync raises
        :class:`_Deferred` (rolled back) instead, and a commit that leaves
        1000 frames to checkpoint asks the worker to checkpoint.
        """
        inline = self._inline if self._inline is not None and self._inline[0] is conn else None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if inline is not None and not inline[1].appends():
                raise _Deferred
            result = func(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if (
            inline is not None
            and not self._checkpoint_asked
            and inline[1].unbackfilled() >= CHECKPOINT_FRAMES
        ):
            self._checkpoint_asked = True
            self._executor.submit(self._checkpoint)
        return result

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file; on the worker thread.

        PASSIVE waits for nobody. The inline connection is held meanwhile, so
        that this process appends nothing while it runs: a checkpoint that
        copies every frame lets the next commit rewind the WAL (that commit
        finds the WAL backfilled and is deferred to this thread), where one
        that always has new frames behind it would let the WAL grow forever.
        """
        self._checkpoint_asked = False
        if self.closed:
            return
        conn = self.connection()
        with self._inline_lock:
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the next commit asks again
                logger.debug("sqlite checkpoint failed", extra={"path": self.path, "error": str(exc)})

    def _reset(self) -> None:
        """Drop both connections so the next call opens the file again; on the worker thread."""
        with self._inline_lock:
            inline, self._inline = self._inline, None
        if inline is not None:
            self._drop_inline(inline)
        self._inline_tried = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    async def aclose(self) -> None:
        """Close the connections on the worker thread, then stop it; later calls are BackendUnavailable."""
        if self.closed:
            return
        self.closed = True
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError):
            await loop.run_in_executor(self._executor, self._reset)
        self._executor.shutdown(wait=False)

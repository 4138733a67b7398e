"""``sqlite:///PATH``: leases in a SQLite file shared by the processes of one host.

The embedded default: no server to run, and every replica on the host that
opens the same file takes part in the same elections.

URL format::

    sqlite:///var/lib/myapp/leases.db          absolute path /var/lib/myapp/leases.db
    sqlite:///tmp/x.db                         /tmp/x.db
    sqlite://./leases.db                       relative to the working directory,
                                               resolved once, when the backend is made
    sqlite:///tmp/x.db?busy_timeout=2&table=leases

Options (query string, or keyword arguments to :meth:`SQLiteBackend.from_url`,
which win):

``busy_timeout``
    float seconds, default 2.0: how long one call waits for another process's
    write transaction to finish before it raises :class:`BackendUnavailable`.
``table``
    default ``leaderlib_leases``: the table that holds one row per election.

How it works: the file is in WAL mode; each write runs in ``BEGIN IMMEDIATE``
(the write lock is taken before the row is read, so two processes never both
decide the lease is free) and is a compare-and-swap
``UPDATE ... WHERE election = ? AND version = ?``. The row is never deleted:
a release empties ``holder`` and keeps ``fencing_token``, so the fencing token
of an election never goes back.

Expiry is the store's decision, as Redis's PX is: ``expires_at`` is a reading
of the host's ``CLOCK_BOOTTIME``, which every process on the host shares and
which never jumps when the wall clock is set. Because the store is local, this
is the *server's* clock, not a timestamp from another machine.

Only for processes on one host, with the file on a local filesystem: SQLite's
locking is not reliable over NFS/SMB, and ``CLOCK_BOOTTIME`` is not comparable
across hosts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import functools
import math
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import SplitResult, unquote

from .._clock import boottime
from .._errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    CorruptLeaseRecord,
    LeaseLost,
)
from .._logging import get_logger
from . import Acquisition, LeaseRecord, check_election, decide, parse_options, split_url
from ._errors import ErrorMap, Row, error_map
from ._shared import ChangeNotifier
from ._sqlite_poller import Poller

__all__ = ["SQLiteBackend", "SQLiteLease"]

logger = get_logger(__name__)

T = TypeVar("T")

_DEFAULT_TABLE = "leaderlib_leases"
_DEFAULT_BUSY_TIMEOUT = 2.0
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SQLITE_MAGIC = b"SQLite format 3\x00"

#: Columns in the order every SELECT and RETURNING lists them.
_COLUMNS = (
    "election",
    "holder",
    "lease_duration",
    "fencing_token",
    "version",
    "transitions",
    "acquire_time",
    "renew_time",
    "expires_at",
)
_SELECT_COLUMNS = ", ".join(_COLUMNS)


def _wall() -> str:
    """UTC wall time for the human-readable columns; never used for expiry."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _parse_path(parts: SplitResult) -> str:
    """The absolute file path a ``sqlite://`` URL names."""
    netloc, path = parts.netloc, unquote(parts.path)
    if netloc == ".":
        # sqlite://./x.db: relative to the working directory at construction.
        path = os.path.abspath(path.lstrip("/"))
    elif netloc:
        raise ConfigError(
            f"sqlite:// takes a file path, not a host ({netloc!r}); write "
            "sqlite:///ABSOLUTE/PATH or sqlite://./RELATIVE/PATH",
            field="path",
        )
    if path in ("", "/") or path.endswith("/"):
        raise ConfigError(
            "sqlite:// needs a database file, e.g. sqlite:///var/lib/myapp/leases.db", field="path"
        )
    # normpath keeps a leading "//" (POSIX allows it a meaning); sqlite:////x is /x.
    return os.path.normpath("/" + path.lstrip("/"))


def _check_path(path: str) -> None:
    """Refuse paths SQLite could never use, with a message that says why."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise ConfigError(f"the directory {directory} {what}; create it or choose another path", field="path")
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a directory, not a database file", field="path")
    if os.path.exists(path):
        try:
            with open(path, "rb") as file:
                header = file.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise AccessDenied(
                f"cannot read {path} ({exc.strerror}); grant this user read and write permission on it",
                backend="sqlite",
            ) from exc
        # A 0-byte file is a valid, empty SQLite database.
        if header and header != _SQLITE_MAGIC:
            raise ConfigError(
                f"{path} is not a SQLite database; point sqlite:/// at a new file or a leaderlib one",
                field="path",
            )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise AccessDenied(
            f"cannot write to the directory {directory}; SQLite creates {os.path.basename(path)}, "
            "its -wal and its -shm file there: grant this user write permission on it",
            backend="sqlite",
        )


#: sqlite3 errors after which the connection is dropped and the file opened again.
_REOPEN = re.compile(r"not a database|malformed|no such table")


def _sqlite_text(exc: BaseException) -> str:
    return str(exc).lower()


def _is_unwritable(exc: BaseException, backend: SQLiteBackend) -> bool:
    text = _sqlite_text(exc)
    return ("readonly" in text or "unable to open" in text) and backend._why_unwritable() is not None


#: sqlite3's errors as leaderlib's, messages naming the file and table.
_ERRORS: ErrorMap[SQLiteBackend] = error_map(
    [
        Row(
            sqlite3.OperationalError,
            BackendUnavailable,
            lambda exc, db: (
                f"{db.path} stayed locked by another process longer than busy_timeout={db.busy_timeout}s"
            ),
            when=lambda exc, db: "locked" in _sqlite_text(exc) or "busy" in _sqlite_text(exc),
        ),
        Row(sqlite3.Error, AccessDenied, lambda exc, db: db._why_unwritable() or "", when=_is_unwritable),
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
                f"{db.path} (table {db.table}) does not have leaderlib's columns ({exc}); "
                "choose another table= option"
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


@dataclasses.dataclass(frozen=True)
class _Row:
    """One row as stored, checked for types."""

    election: str
    holder: str
    lease_duration: float
    fencing_token: int
    version: int
    transitions: int
    acquire_time: dt.datetime | None
    renew_time: dt.datetime | None
    expires_at: float

    def is_live(self, now: float) -> bool:
        """True if the row names a holder whose lease has not run out on the store's clock.

        A deadline further ahead than ``lease_duration`` can only come from a
        clock that restarted (a reboot: CLOCK_BOOTTIME starts again near 0);
        every process that wrote it is gone, so the lease is free.
        """
        remaining = self.expires_at - now
        return bool(self.holder) and 0 < remaining <= self.lease_duration + 1e-3

    def record(self, now: float) -> LeaseRecord:
        """The record as the store sees it now: an expired lease reads as released."""
        live = self.is_live(now)
        return LeaseRecord(
            election=self.election,
            holder=self.holder if live else "",
            lease_duration=self.lease_duration,
            fencing_token=self.fencing_token,
            version=str(self.version),
            transitions=self.transitions,
            acquire_time=self.acquire_time,
            renew_time=self.renew_time,
            expires_in=(self.expires_at - now) if live else 0.0,
        )


class SQLiteBackend:
    """Leases in a SQLite file; see the module docstring for the URL and options.

    Each instance owns one connection, used only by its own worker thread, so
    no call ever blocks the event loop and the instance can be shared by
    several event loops (the sync facade).
    """

    scheme = "sqlite"
    observation_granularity = 0.0  # the store expires leases itself
    path: str
    table: str
    busy_timeout: float
    _notifiers: ClassVar[dict[str, ChangeNotifier]] = {}
    _notifiers_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, path: str, *, busy_timeout: float = _DEFAULT_BUSY_TIMEOUT, table: str = _DEFAULT_TABLE
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigError(
                f"table must be a plain SQL identifier (letters, digits, _), got {table!r}", field="table"
            )
        if not (math.isfinite(busy_timeout) and busy_timeout >= 0):
            raise ConfigError(
                f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}", field="busy_timeout"
            )
        path = os.path.abspath(path)
        _check_path(path)
        self.path = path
        self.table = table
        self.busy_timeout = busy_timeout
        with self._notifiers_lock:
            # Backends on one file in one process wake each other's watches at
            # once; other processes are seen by polling PRAGMA data_version.
            self._changes = self._notifiers.setdefault(os.path.realpath(path), ChangeNotifier())
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="leaderlib-sqlite"
        )
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False
        # One thread polls the file for other processes' commits, for all watches.
        self._poller = Poller(path, table, busy_timeout, self._changes)
        self._leases: dict[str, SQLiteLease] = {}
        self._leases_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteBackend:
        parts = split_url(url)
        if parts.scheme != "sqlite":
            raise ConfigError(f"not a sqlite:// URL: {url!r}", field="backend")
        values = parse_options(parts, {"busy_timeout": float, "table": str}, options)
        return cls(_parse_path(parts), **values)

    # -- the worker thread -------------------------------------------------

    async def _run(self, election: str | None, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` on the worker thread, with sqlite3 errors translated there."""
        if self._closed:
            raise BackendUnavailable("the backend was closed", election=election, backend=self.scheme)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(self._translated, election, func, *args)
            )
        except RuntimeError as exc:  # the executor was shut down by aclose()
            if not self._closed:
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
                    # An unreadable file, or someone dropped the table: open
                    # again (which recreates the table) on the next call.
                    self._reset()
                raise

    def _connection(self) -> sqlite3.Connection:
        """This instance's connection, opened (and the table created) on first use."""
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
        except BaseException:
            conn.close()
            raise
        logger.debug("opened sqlite lease file", extra={"path": self.path, "table": self.table})
        self._conn = conn
        return conn

    def _why_unwritable(self) -> str | None:
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

    def _row(self, raw: tuple[Any, ...] | None, election: str) -> _Row | None:
        """Check a raw row's types; raise CorruptLeaseRecord naming the file, table and column."""
        if raw is None:
            return None

        def bad(column: str, expected: str) -> CorruptLeaseRecord:
            value = raw[_COLUMNS.index(column)]
            return CorruptLeaseRecord(
                f"the row for this election in table {self.table} of {self.path} has "
                f"{column}={value!r}, expected {expected}",
                election=election,
                backend=self.scheme,
            )

        values = dict(zip(_COLUMNS, raw, strict=True))
        for column in ("election", "holder"):
            if not isinstance(values[column], str):
                raise bad(column, "text")
        for column in ("fencing_token", "version", "transitions"):
            value = values[column]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(column, "an integer >= 0")
        for column in ("lease_duration", "expires_at"):
            value = values[column]
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise bad(column, "a number")
        if values["lease_duration"] <= 0:
            raise bad("lease_duration", "a number of seconds > 0")
        times: dict[str, dt.datetime | None] = {}
        for column in ("acquire_time", "renew_time"):
            value = values[column]
            if value is None:
                times[column] = None
                continue
            try:
                times[column] = dt.datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise bad(column, "an ISO 8601 time") from None
        return _Row(
            election=values["election"],
            holder=values["holder"],
            lease_duration=float(values["lease_duration"]),
            fencing_token=values["fencing_token"],
            version=values["version"],
            transitions=values["transitions"],
            acquire_time=times["acquire_time"],
            renew_time=times["renew_time"],
            expires_at=float(values["expires_at"]),
        )

    def _write(self, func: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``func`` in a ``BEGIN IMMEDIATE`` transaction; commit unless it raises."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = func(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _select(self, conn: sqlite3.Connection, election: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = conn.execute(
            f"SELECT {_SELECT_COLUMNS} FROM {self.table} WHERE election = ?", (election,)
        ).fetchone()
        return row

    def _get_sync(self, election: str) -> LeaseRecord | None:
        row = self._row(self._select(self._connection(), election), election)
        return row.record(boottime()) if row else None

    def _acquire_sync(
        self, election: str, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        """One acquisition attempt: :func:`decide` on the row, in one write transaction."""

        def attempt(conn: sqlite3.Connection) -> Acquisition:
            row = self._row(self._select(conn, election), election)
            now = boottime()
            # The row as the store sees it now (an expired lease reads as released).
            decision = decide(row.record(now) if row is not None else None, takeover)
            if not decision.new_term:
                assert row is not None
                return Acquisition(acquired=False, record=row.record(now))
            wall = _wall()
            expires_at = now + lease_duration
            if row is not None:
                # Released, expired, or exactly the version the elector judged
                # ended: a new term, so a new fencing token.
                sql = (
                    f"UPDATE {self.table} SET holder = ?, lease_duration = ?,"
                    " fencing_token = ?, version = version + 1,"
                    " transitions = transitions + 1, acquire_time = ?, renew_time = ?, expires_at = ?"
                    " WHERE election = ? AND version = ?"
                )
                params: tuple[Any, ...] = (
                    identity,
                    lease_duration,
                    decision.fencing_token,
                    wall,
                    wall,
                    expires_at,
                    election,
                    row.version,
                )
            else:
                sql = f"INSERT INTO {self.table} ({_SELECT_COLUMNS}) VALUES (?, ?, ?, ?, 1, 0, ?, ?, ?)"
                params = (election, identity, lease_duration, decision.fencing_token, wall, wall, expires_at)
            written = self._row(self._returning(conn, sql, params), election)
            if written is None:
                raise self._cas_failed(election)
            return Acquisition(acquired=True, record=written.record(now))

        return self._write(attempt)

    def _returning(
        self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
    ) -> tuple[Any, ...] | None:
        """Run a write with ``RETURNING`` the row; fetchall so the statement ends before COMMIT."""
        rows = conn.execute(f"{sql} RETURNING {_SELECT_COLUMNS}", params).fetchall()
        return rows[0] if rows else None

    def _cas_failed(self, election: str) -> BackendUnavailable:
        # Under BEGIN IMMEDIATE nobody can change the row between our SELECT
        # and UPDATE; if they did, the file's locks do not work.
        return BackendUnavailable(
            f"the row changed inside a write transaction on {self.path}; SQLite locking is "
            "not working (is the file on a network filesystem?)",
            election=election,
            backend=self.scheme,
        )

    def _renew_sync(self, record: LeaseRecord) -> LeaseRecord | None:
        def attempt(conn: sqlite3.Connection) -> LeaseRecord | None:
            now = boottime()
            raw = self._returning(
                conn,
                f"UPDATE {self.table} SET renew_time = ?, expires_at = ?, version = version + 1"
                " WHERE election = ? AND version = ? AND holder = ? AND holder <> ''"
                " AND expires_at > ? AND expires_at <= ? + lease_duration + 0.001",
                (
                    _wall(),
                    now + record.lease_duration,
                    record.election,
                    _version(record),
                    record.holder,
                    now,
                    now,
                ),
            )
            row = self._row(raw, record.election)
            return row.record(now) if row else None

        return self._write(attempt)

    def _release_sync(self, record: LeaseRecord) -> bool:
        def attempt(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"UPDATE {self.table} SET holder = '', renew_time = ?, expires_at = ?,"
                " version = version + 1 WHERE election = ? AND version = ? AND holder = ?"
                " AND holder <> ''",
                (_wall(), boottime(), record.election, _version(record), record.holder),
            )
            return cursor.rowcount > 0

        return self._write(attempt)

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- the Backend Protocol ----------------------------------------------

    def lease(self, election: str) -> SQLiteLease:
        """The election's handle (the same one each time); any non-empty name will do."""
        check_election(election)
        with self._leases_lock:
            handle = self._leases.get(election)
            if handle is None:
                handle = self._leases[election] = SQLiteLease(self, election)
            return handle

    async def aclose(self) -> None:
        if self._closed:
            return
        self._poller.close()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error, RuntimeError):
            await loop.run_in_executor(self._executor, self._close_sync)
        self._closed = True
        self._executor.shutdown(wait=False)


class SQLiteLease:
    """One election's row in a SQLite lease file."""

    def __init__(self, backend: SQLiteBackend, election: str) -> None:
        self.election = election
        self._backend = backend

    async def get(self) -> LeaseRecord | None:
        backend = self._backend
        return await backend._run(self.election, backend._get_sync, self.election)

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        # The store expires leases itself (expires_at on CLOCK_BOOTTIME);
        # ``takeover`` only matters for a term the elector itself ended.
        if not (math.isfinite(lease_duration) and lease_duration > 0):
            raise ConfigError(
                f"lease_duration must be > 0 seconds, got {lease_duration!r}", field="lease_duration"
            )
        backend = self._backend
        acquisition = await backend._run(
            self.election, backend._acquire_sync, self.election, identity, lease_duration, takeover
        )
        if acquisition.acquired:
            backend._changes.notify(self.election)
        return acquisition

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        backend = self._backend
        renewed = await backend._run(self.election, backend._renew_sync, record)
        if renewed is None:
            raise LeaseLost(
                "the lease is no longer ours (expired, released or taken over)",
                election=self.election,
                backend=backend.scheme,
            )
        backend._changes.notify(self.election)
        return renewed

    async def release(self, record: LeaseRecord) -> None:
        backend = self._backend
        if await backend._run(self.election, backend._release_sync, record):
            backend._changes.notify(self.election)

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        # Subscribed before the first read, so no write after it goes unseen:
        # this process's writes notify at once, other processes' through the
        # backend's one poller (PRAGMA data_version, see _sqlite_poller).
        backend, election = self._backend, self.election
        waiter = backend._changes.subscribe(election)
        event = waiter[1]
        backend._poller.add(election)
        last: tuple[str, str] | bool | None = False  # False: nothing yielded yet
        try:
            while True:
                event.clear()
                record = await self.get()
                key = (record.version, record.holder) if record else None
                if key != last:
                    last = key
                    yield record
                # When the lease runs out the record reads as released, with no
                # write to wake us: wake at its deadline too.
                timeout = (
                    record.expires_in
                    if record is not None and record.is_held and record.expires_in is not None
                    else None
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await event.wait()
        finally:
            backend._poller.remove(election)
            backend._changes.unsubscribe(election, waiter)


def _version(record: LeaseRecord) -> int:
    """The row version a record carries; -1 (matches nothing) if it is not ours."""
    try:
        return int(record.version)
    except ValueError:
        return -1

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
    Job run records live in the table of the same name with ``_leases``
    replaced by (or, without that ending, followed by) ``_runs``:
    ``leaderlib_runs``.

How it works: the file is in WAL mode; each write runs in ``BEGIN IMMEDIATE``
(the write lock is taken before the row is read, so two processes never both
decide the lease is free) and is a compare-and-swap
``UPDATE ... WHERE election = ? AND version = ?``. The row is never deleted:
a release empties ``holder`` and keeps ``fencing_token``, so the fencing token
of an election never goes back.

Job run records (:meth:`SQLiteLease.record_run`) are rows ``(election, job,
record JSON)`` of the runs table, written by one upsert whose own ``SELECT``
checks the lease row's holder, fencing token and deadline, in one ``BEGIN
IMMEDIATE`` transaction.

Expiry is the store's decision, as Redis's PX is: ``expires_at`` is a reading
of the host's ``CLOCK_BOOTTIME``, which every process on the host shares and
which never jumps when the wall clock is set. Because the store is local, this
is the *server's* clock, not a timestamp from another machine.

Only for processes on one host, with the file on a local filesystem: SQLite's
locking is not reliable over NFS/SMB, and ``CLOCK_BOOTTIME`` is not comparable
across hosts.

Calls run inline, on the calling thread, whenever that cannot block: never
waiting for another process's lock, never checkpointing, and writing only
commits that append to the WAL without an fsync; anything else runs on the
backend's worker thread (see ``_connection``).

Modules: ``_connection`` (the inline and the worker's connection, the worker
thread, pragmas, tables, checkpoints, the error table), ``_walindex`` (whether
a commit would fsync, from the WAL index), ``_rows`` (a lease row's columns and
type checks), ``_lease`` (:class:`SQLiteLease` and its SQL), ``_watch`` (the
poller that sees other processes' commits), ``_inotify`` (the kernel's notice
that the file was written, which wakes the poller).
"""

from __future__ import annotations

import math
import os
import re
import threading
from typing import Any, ClassVar
from urllib.parse import SplitResult, unquote

from ..._errors import AccessDenied, ConfigError
from .. import check_election, parse_options, split_url
from .._shared import ChangeNotifier
from ._connection import Database
from ._lease import SQLiteLease
from ._watch import Poller

__all__ = ["SQLiteBackend", "SQLiteLease"]

_DEFAULT_TABLE = "leaderlib_leases"
_DEFAULT_BUSY_TIMEOUT = 2.0
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SQLITE_MAGIC = b"SQLite format 3\x00"


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


class SQLiteBackend:
    """Leases in a SQLite file; see the module docstring for the URL and options.

    Each instance owns a connection used inline, one used by its own worker
    thread for whatever could block (so no call ever blocks the event loop),
    and one for its poller; it can be shared by several event loops (the sync
    facade).
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
        self._db = Database(path, table, busy_timeout)
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
        self._poller.close()
        await self._db.aclose()

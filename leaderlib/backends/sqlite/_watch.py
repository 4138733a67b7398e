"""One poller per SQLite backend object: sees other processes' commits for every watch.

SQLite has no change feed across processes. ``PRAGMA data_version`` changes
whenever another connection commits to the file (it reads a counter in the
shared WAL index), so one thread asks it for all the backend's watches, backs
off while nothing changes, and on a change reads ``(election, version,
holder)`` once to wake only the watches whose row changed. Writes made
through this process's backends wake their watches at once (ChangeNotifier)
without waiting for a poll.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading

from ..._logging import get_logger
from .._shared import ChangeNotifier

__all__ = ["Poller"]

logger = get_logger("leaderlib.backends.sqlite")

#: The poll interval right after a change: a release by another process is
#: seen within this long while elections are busy.
POLL_MIN = 0.05
#: The longest interval, reached by doubling while nothing changes: what an
#: idle follower costs (4 tiny statements/s) against the handover latency
#: after a quiet spell (at most this long).
POLL_MAX = 0.25

_UNSEEN = object()


class Poller:
    """Polls one file for the elections watched through one backend object.

    The thread starts with the first watch and ends when the last one
    closes, or at :meth:`close`; it owns its own connection.
    """

    def __init__(self, path: str, table: str, busy_timeout: float, changes: ChangeNotifier) -> None:
        self._path = path
        self._table = table
        self._busy_timeout = busy_timeout
        self._changes = changes
        self._lock = threading.Lock()
        self._watched: dict[str, int] = {}  # election -> open watches
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def add(self, election: str) -> None:
        """A watch of ``election`` opened: poll for it (starting the thread if needed)."""
        with self._lock:
            self._watched[election] = self._watched.get(election, 0) + 1
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, name="leaderlib-sqlite-poll", daemon=True)
                self._thread.start()

    def remove(self, election: str) -> None:
        """A watch of ``election`` closed."""
        with self._lock:
            left = self._watched.get(election, 0) - 1
            if left > 0:
                self._watched[election] = left
            else:
                self._watched.pop(election, None)

    def close(self) -> None:
        """Stop the thread within one poll interval."""
        self._closed.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        interval = POLL_MIN
        data_version: int | None = None
        seen: dict[str, object] = {}
        try:
            while not self._closed.wait(interval):
                with self._lock:
                    elections = set(self._watched)
                    if not elections:
                        self._thread = None
                        return
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
                    current: int = conn.execute("PRAGMA data_version").fetchone()[0]
                    if current == data_version and elections <= seen.keys():
                        interval = min(interval * 2, POLL_MAX)
                        continue
                    data_version, interval = current, POLL_MIN
                    rows = conn.execute(f"SELECT election, version, holder FROM {self._table}").fetchall()
                except sqlite3.Error as exc:
                    # The watches read the file themselves and raise what is wrong
                    # with it; here a failure only means polling again, afresh.
                    logger.debug("sqlite poll failed", extra={"path": self._path, "error": str(exc)})
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                    conn, data_version, interval = None, None, POLL_MAX
                    continue
                rows_now = {row[0]: (row[1], row[2]) for row in rows if row[0] in elections}
                for election in elections:
                    if seen.get(election, _UNSEEN) != rows_now.get(election):
                        self._changes.notify(election)
                seen = {election: rows_now.get(election) for election in elections}
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

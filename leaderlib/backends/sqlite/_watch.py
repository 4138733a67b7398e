"""One poller per SQLite backend object: sees other processes' commits for every watch.

SQLite has no change feed across processes. ``PRAGMA data_version`` changes
whenever another connection commits to the file (it reads a counter in the
shared WAL index), so one thread asks it for all the backend's watches, and
on a change reads ``(election, version, holder)`` once to wake only the
watches whose row changed. It asks when the kernel reports a write to the
file (inotify, :mod:`._inotify`): a release by another process is heard within
a few milliseconds, and an idle file costs one look a second. Without
inotify it polls, backing off while nothing changes. Writes made through this
process's backends wake their watches at once (ChangeNotifier) without
waiting for either.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time

from ..._logging import get_logger
from .._shared import ChangeNotifier
from ._inotify import FileWrites

__all__ = ["Poller"]

logger = get_logger("leaderlib.backends.sqlite")

#: With inotify: how often the file is looked at with no write reported, in
#: case a write that woke the poller was not yet visible and no later one came.
POLL_LIVE = 1.0
#: After a reported write, the time given to the commit to finish before
#: looking: its last step (the WAL index's header) is a memory write that
#: inotify does not report.
SETTLE = 0.001
#: The least time between two looks, and at least GAP_FACTOR times as long as
#: the last look took (a table of many elections): a file written all the time
#: costs the poller at most a fifth of a core (200 looks/s on a small table),
#: and a release that comes right after another write waits this long.
MIN_GAP = 0.005
GAP_FACTOR = 4
#: Without inotify, the poll interval right after a change: a release by
#: another process is seen within this long while elections are busy.
POLL_MIN = 0.05
#: Without inotify, the longest interval, reached by doubling while nothing
#: changes: what an idle follower costs (4 tiny statements/s) against the
#: handover latency after a quiet spell (at most this long).
POLL_MAX = 0.25

_UNSEEN = object()


class Poller:
    """Polls one file for the elections watched through one backend object.

    The thread starts with the first watch and ends when the last one
    closes, or at :meth:`close`; it owns its own connection and inotify
    descriptor.
    """

    def __init__(self, path: str, table: str, busy_timeout: float, changes: ChangeNotifier) -> None:
        self._path = path
        self._table = table
        self._busy_timeout = busy_timeout
        self._changes = changes
        self._lock = threading.Lock()
        self._watched: dict[str, int] = {}  # election -> open watches
        self._thread: threading.Thread | None = None
        self._writes: FileWrites | None = None  # the running thread's, under _lock
        self._closed = threading.Event()

    def add(self, election: str) -> None:
        """A watch of ``election`` opened: poll for it (starting the thread if needed)."""
        with self._lock:
            self._watched[election] = self._watched.get(election, 0) + 1
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, name="leaderlib-sqlite-poll", daemon=True)
                self._thread.start()

    def remove(self, election: str) -> None:
        """A watch of ``election`` closed (the thread ends now if it was the last)."""
        with self._lock:
            left = self._watched.get(election, 0) - 1
            if left > 0:
                self._watched[election] = left
            else:
                self._watched.pop(election, None)
            if not self._watched and self._writes is not None:
                self._writes.wake()

    def close(self) -> None:
        """Stop the thread now."""
        self._closed.set()
        with self._lock:
            if self._writes is not None:
                self._writes.wake()

    def _run(self) -> None:
        writes = FileWrites(self._path)
        with self._lock:
            self._writes = writes
        conn: sqlite3.Connection | None = None
        data_version: int | None = None
        seen: dict[str, object] = {}
        interval = POLL_MIN  # without inotify
        timeout = 0.0  # the first look sets what later ones compare with
        next_look = 0.0
        try:
            while True:
                gap = next_look - time.monotonic()
                if gap > 0:
                    self._closed.wait(gap)  # writes meanwhile wait in the inotify queue
                written = writes.wait(timeout)
                if written and writes.live:
                    time.sleep(SETTLE)
                    writes.drain()  # the rest of the same commit's writes
                if self._closed.is_set():
                    return
                with self._lock:
                    elections = set(self._watched)
                    if not elections:
                        self._thread = None
                        return
                started = time.monotonic()
                changed = False
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
                    current: int = conn.execute("PRAGMA data_version").fetchone()[0]
                    if current != data_version or not elections <= seen.keys():
                        changed, data_version = True, current
                        rows = conn.execute(f"SELECT election, version, holder FROM {self._table}").fetchall()
                        rows_now = {row[0]: (row[1], row[2]) for row in rows if row[0] in elections}
                        for election in elections:
                            if seen.get(election, _UNSEEN) != rows_now.get(election):
                                self._changes.notify(election)
                        seen = {election: rows_now.get(election) for election in elections}
                except sqlite3.Error as exc:
                    # The watches read the file themselves and raise what is wrong
                    # with it; here a failure only means polling again, afresh.
                    logger.debug("sqlite poll failed", extra={"path": self._path, "error": str(exc)})
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                    conn, data_version, changed = None, None, False
                now = time.monotonic()
                next_look = now + max(MIN_GAP, GAP_FACTOR * (now - started))
                interval = POLL_MIN if changed else min(interval * 2, POLL_MAX)
                if not writes.live:
                    timeout = interval
                elif written and not changed:
                    timeout = 0.0  # the commit that wrote may not be visible yet: look again after the gap
                else:
                    timeout = POLL_LIVE
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                if self._writes is writes:
                    self._writes = None
            writes.close()
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

"""The kernel's word that a lease file was written: inotify on Linux, nothing elsewhere.

A commit by any process writes the ``-wal`` file (or, in rollback-journal
mode, the database file) with ``write(2)``, which inotify reports on the
directory. The poller waits on that instead of sleeping, so a release by
another process is heard within a millisecond or so, not at the next poll.
Python has no inotify binding, so the three libc calls go through ctypes.
Where they are missing (not Linux, or the per-user limit of inotify
instances is reached) :attr:`FileWrites.live` is False and waiting is a
plain sleep that only :meth:`FileWrites.wake` cuts short.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import struct
import sys
import time

from ..._logging import get_logger

__all__ = ["FileWrites"]

logger = get_logger("leaderlib.backends.sqlite")

_IN_MODIFY = 0x00000002
_IN_Q_OVERFLOW = 0x00004000  # events were lost: count it as a write
_IN_IGNORED = 0x00008000  # the directory's watch is gone (deleted, unmounted)
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


def _inotify(directory: str) -> int | None:
    """An inotify descriptor watching ``directory`` for writes to its files, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        logger.debug("no inotify; polling only", extra={"error": os.strerror(ctypes.get_errno())})
        return None
    if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_MODIFY) < 0:
        logger.debug("no inotify watch; polling only", extra={"error": os.strerror(ctypes.get_errno())})
        os.close(fd)
        return None
    return fd


class FileWrites:
    """Waits for writes to one database's files; owned by one thread, woken from any."""

    def __init__(self, path: str) -> None:
        path = os.path.realpath(path)  # SQLite writes beside the file that symlinks lead to
        name = os.path.basename(path)
        self._names = {os.fsencode(name + suffix) for suffix in ("", "-wal", "-journal")}
        self._fd = _inotify(os.path.dirname(path))
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)

    @property
    def live(self) -> bool:
        """True while the kernel reports the writes (otherwise :meth:`wait` only sleeps)."""
        return self._fd is not None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True if the file was written meanwhile (or :meth:`wake` was called).

        Writes to other files in the directory do not end the wait.
        """
        deadline = time.monotonic() + timeout
        while True:
            readable = [fd for fd in (self._fd, self._wake_read) if fd is not None]
            ready, _, _ = select.select(readable, [], [], max(0.0, deadline - time.monotonic()))
            if self._wake_read in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)
                return True
            if self.drain():
                return True
            if not ready or time.monotonic() >= deadline:
                return False

    def drain(self) -> bool:
        """Take the events that have arrived; True if one was a write to the file."""
        if self._fd is None:
            return False
        written = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return written
            offset = 0
            while offset < len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if mask & _IN_IGNORED:
                    self._stop_events()
                    return True
                written = written or bool(mask & _IN_Q_OVERFLOW) or name in self._names

    def wake(self) -> None:
        """End the current or next :meth:`wait` now (from any thread)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\0")

    def _stop_events(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._stop_events()
        for fd in (self._wake_read, self._wake_write):
            os.close(fd)

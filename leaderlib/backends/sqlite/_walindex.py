"""Whether a commit would fsync: two counters of the file's WAL index (the ``-shm`` file).

In WAL mode with ``synchronous=NORMAL`` a commit only writes frames to the
``-wal`` file, with no fsync, except in two cases: a checkpoint run by the
committing connection (``wal_autocheckpoint``, turned off on the inline
connection), and the first frames written after the WAL was completely
checkpointed, or into an empty one. Those rewind the log and write its header,
and SQLite fsyncs that header. It does so exactly when the WAL was completely
backfilled as the transaction's snapshot began (``wal.c``: ``walRestartLog``
and the ``iFrame==0`` case of ``sqlite3WalFrames``).

A writer holding the write lock can tell from the WAL index: ``mxFrame`` (the
frames in the log) cannot change while it holds the lock and ``nBackfill``
(the frames checkpointed) only grows until the next rewind, which needs the
lock. So ``nBackfill < mxFrame`` seen under the lock means the snapshot began
on a log that was not completely backfilled: this commit appends, without
fsync. The layout is SQLite's file format (https://sqlite.org/walformat.html,
the same for every SQLite since 3.7.0 because processes of different versions
share it): native byte order, the header's version at byte 0, ``mxFrame`` at
byte 16, ``nBackfill`` at byte 96.
"""

from __future__ import annotations

import os
import struct
import threading

__all__ = ["WalIndex", "wal_index"]

#: Bytes read: the header's first copy and the checkpoint information's nBackfill.
_READ = 100
_VERSION = 3007000
_FIELD = struct.Struct("=I")

# Every descriptor ever opened, kept for the life of the process (one per file).
# Closing a descriptor of the -shm file would drop every POSIX lock this
# process holds on it, SQLite's included (the "dead man switch" that keeps
# other processes from resetting the file, and its readers' marks): another
# process would then truncate it under our connections (SIGBUS where SQLite
# has it mapped) or checkpoint over pages a reader still uses.
_opened_lock = threading.Lock()
_opened: dict[str, WalIndex] = {}
_retired: list[WalIndex] = []


def wal_index(path: str) -> WalIndex:
    """The WAL index of the database file ``path``, opened once per process and never closed.

    Call it while a connection of this process has the file open (so the
    ``-shm`` file exists and nobody may truncate it). Raises OSError or
    ValueError if there is no WAL index we know.
    """
    # SQLite keeps the -shm file beside the database file that symlinks lead to.
    shm = os.path.realpath(path) + "-shm"
    identity = os.stat(shm)
    with _opened_lock:
        index = _opened.get(shm)
        if index is None or index.inode != (identity.st_dev, identity.st_ino):
            if index is not None:
                # The file was deleted (every connection to it closed) and made
                # again: a new file. The old descriptor is kept, never closed (see above).
                _retired.append(index)
            index = _opened[shm] = WalIndex(shm)
    if index.version != _VERSION:
        raise ValueError(f"unknown WAL-index version {index.version}")
    return index


class WalIndex:
    """One WAL-index header, read with ``pread`` (see :func:`wal_index`: one per file and process).

    ``pread`` sees what SQLite's shared mappings of the file hold (the same
    page cache), and past the end of a truncated file it reads nothing
    rather than faulting as a mapping would.
    """

    def __init__(self, shm: str) -> None:
        # Never closed, see _opened.
        self._fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC)
        stat = os.fstat(self._fd)
        self.inode = (stat.st_dev, stat.st_ino)
        self.version = self._frames()[0]

    def _frames(self) -> tuple[int, int, int]:
        """(version, mxFrame: frames in the log, nBackfill: frames checkpointed); zeros if unreadable."""
        header = os.pread(self._fd, _READ, 0)
        if len(header) < _READ:
            return 0, 0, 0
        return (
            _FIELD.unpack_from(header, 0)[0],
            _FIELD.unpack_from(header, 16)[0],
            _FIELD.unpack_from(header, 96)[0],
        )

    def appends(self) -> bool:
        """True if a commit by the current write-lock holder appends to the log (no fsync)."""
        _, frames, backfilled = self._frames()
        return backfilled < frames

    def unbackfilled(self) -> int:
        """Frames in the log not yet copied into the database file by a checkpoint."""
        _, frames, backfilled = self._frames()
        return max(0, frames - backfilled)

"""What keeps ``sqlite:///PATH`` calls at the file's own speed without stalling the loop,
and how a follower hears another process's release: inline calls that never wait or
fsync, checkpoints on the worker, SQLite's locks kept, the poller woken by inotify."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leaderlib.backends.sqlite import SQLiteBackend, _connection, _watch
from leaderlib.backends.sqlite._inotify import FileWrites

from . import test_sqlite
from .test_sqlite import HOLDER

# test_sqlite.py's fixtures: a fresh file, and a backend on it.
db = test_sqlite.db
backend = test_sqlite.backend

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


@pytest.fixture
def worker_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the calls that ran on a backend's worker thread (not inline)."""
    calls: list[str] = []
    original = _connection.Database._translated

    def counted(self: _connection.Database, election: str | None, func: Any, *args: Any) -> Any:
        calls.append(func.__name__)
        return original(self, election, func, *args)

    monkeypatch.setattr(_connection.Database, "_translated", counted)
    return calls


# -- inline calls -------------------------------------------------------------------


async def test_calls_run_inline_and_checkpoints_keep_the_wal_small(
    backend: SQLiteBackend, db: Path, worker_calls: list[str]
) -> None:
    """Thousands of writes: all but a few run on the calling thread; the worker
    checkpoints, takes the commit after each checkpoint (it rewinds the WAL and
    fsyncs its header), and the WAL stays near SQLite's 1000-frame size."""
    n = 3000
    for i in range(n):
        lease = backend.lease(f"e{i}")
        acquisition = await lease.try_acquire("me", 30.0, None)
        assert acquisition.acquired and acquisition.record is not None
        await lease.renew(acquisition.record)
    assert len(worker_calls) < n // 100, worker_calls[:20]
    assert "_get_sync" not in worker_calls and worker_calls.count("_acquire_sync") >= 2, (
        "the first call opens the file on the worker; each checkpoint sends one write there"
    )
    # 6,000 commits of 2-4 frames (4 KiB pages) each, with no checkpoint: 40-90 MB.
    assert os.path.getsize(f"{db}-wal") < 10 * 2**20


async def test_a_busy_file_never_blocks_the_event_loop(db: Path, worker_calls: list[str]) -> None:
    """While another process holds the write lock, the call waits on the worker thread
    (busy_timeout), not on the loop: the loop keeps running meanwhile."""
    backend = SQLiteBackend.from_url(f"sqlite://{db}", busy_timeout=2.0)
    try:
        await backend.lease("setup").get()
        blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(0.5, blocker.execute, ("ROLLBACK",)).start()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        acquisition = await backend.lease("e").try_acquire("a", 2.0, None)
        waited = time.monotonic() - started
        ticker.cancel()
        blocker.close()
        assert acquisition.acquired
        assert waited >= 0.4, "it waited for the lock"
        assert ticks >= 10, f"the loop ran only {ticks} times in {waited:.2f} s"
        assert "_acquire_sync" in worker_calls
    finally:
        await backend.aclose()


@linux_only
async def test_other_processes_still_see_the_file_in_use(backend: SQLiteBackend, db: Path) -> None:
    """SQLite marks the -shm file in use with a shared POSIX lock (byte 128): a process that
    can take it exclusively resets the file, under our connections' feet. Reading the WAL
    index must not drop it (closing any descriptor of the file would)."""
    lease = backend.lease("e")
    record = (await lease.try_acquire("a", 2.0, None)).record
    assert record is not None
    await lease.renew(record)  # inline: reads the WAL index
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n"
        "    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)\n"
        "except OSError:\n"
        "    print('held')\n"
        "else:\n"
        "    print('free')\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, f"{db}-shm", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert out.strip() == b"held"


# -- the poller -----------------------------------------------------------------------


@contextlib.contextmanager
def counted_looks() -> Iterator[list[str]]:
    """``PRAGMA data_version`` statements (the poller's looks) on connections opened meanwhile."""
    looks: list[str] = []
    original = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = original(*args, **kwargs)
        conn.set_trace_callback(lambda sql: looks.append(sql) if "data_version" in sql else None)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]
    try:
        yield looks
    finally:
        sqlite3.connect = original


@linux_only
async def test_an_idle_watch_looks_about_once_a_second(backend: SQLiteBackend, db: Path) -> None:
    """With inotify, an idle follower costs a look a second (it polled 4-20 times a second),
    however busy the other files of its directory are."""
    assert FileWrites(str(db)).live, "inotify works here"
    await backend.lease("watched").get()
    with counted_looks() as looks:
        watch = backend.lease("watched").watch()
        assert await anext(watch) is None
        other = db.parent / "busy.log"
        began = time.monotonic()
        while time.monotonic() - began < 2.0:
            with other.open("a") as file:
                file.write("x\n")
            await asyncio.sleep(0.01)
        await watch.aclose()
    # The first look, then one a second (and one when the watch closes).
    assert 1 <= len(looks) <= 4, len(looks)


@linux_only
async def test_a_release_by_another_process_wakes_the_watch_without_a_poll(
    backend: SQLiteBackend, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's notice of the write wakes the poller: with every poll interval set
    to a minute, the release is still heard at once."""
    for name in ("POLL_LIVE", "POLL_MIN", "POLL_MAX"):
        monkeypatch.setattr(_watch, name, 60.0, raising=False)
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), f"sqlite://{db}",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"held\n"
        watch = backend.lease("watched").watch()
        first = await anext(watch)
        assert first is not None and first.holder == "other-process"
        await asyncio.sleep(0.2)  # the poller has looked once and waits
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"released\n"
        # The lease would run out 5 s after it was taken: well after this.
        released = await asyncio.wait_for(anext(watch), 2.0)
        assert released is not None and not released.is_held
        await watch.aclose()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def test_event_loops_on_threads_share_one_backend(db: Path) -> None:
    """The sync facade runs a loop per thread on one backend object: the inline connection
    serves one call at a time, the others go to the worker, every answer is right."""
    backend = SQLiteBackend.from_url(f"sqlite://{db}")
    errors: list[BaseException] = []

    async def churn(me: str) -> None:
        for i in range(300):
            lease = backend.lease(f"{me}-{i % 5}")
            acquisition = await lease.try_acquire(me, 5.0, None)
            assert acquisition.acquired and acquisition.record is not None
            renewed = await lease.renew(acquisition.record)
            assert renewed.holder == me and renewed.fencing_token == acquisition.record.fencing_token
            await lease.release(renewed)
            record = await lease.get()
            assert record is not None and not record.is_held

    def thread(me: str) -> None:
        try:
            asyncio.run(churn(me))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(f"t{n}",)) for n in range(3)]
    for each in threads:
        each.start()
    for each in threads:
        each.join(60)
    asyncio.run(backend.aclose())
    assert not errors, errors

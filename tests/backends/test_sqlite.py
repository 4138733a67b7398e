"""What only ``sqlite:///PATH`` has to prove: several processes on one file, expiry
on the host's boot clock (not the wall clock), the file's mode and clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leaderlib import AccessDenied, BackendUnavailable, ConfigError, CorruptLeaseRecord, LeaseLost
from leaderlib.backends import JobRun, LeaseRecord, backend_from_url
from leaderlib.backends.sqlite import SQLiteBackend

TABLE = "leaderlib_leases"
RUNS_TABLE = "leaderlib_runs"


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "leases.db"


@pytest.fixture
async def backend(db: Path) -> AsyncIterator[SQLiteBackend]:
    made = SQLiteBackend.from_url(f"sqlite://{db}")
    yield made
    await made.aclose()


def raw(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement with the plain sqlite3 module, as another program would."""
    conn = sqlite3.connect(db, timeout=5, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def put_row(
    db: Path,
    election: str,
    holder: str,
    *,
    expires_at: float,
    lease_duration: float = 2.0,
    wall: str = "2026-01-01T00:00:00+00:00",
    token: int = 5,
) -> None:
    raw(
        db,
        f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, 10, 4, ?, ?, ?)",
        (election, holder, lease_duration, token, wall, wall, expires_at),
    )


# -- several processes on one file ----------------------------------------------

CONTENDER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from leaderlib.backends.sqlite import SQLiteBackend

    async def main(url, me, start, rounds):
        backend = SQLiteBackend.from_url(url)
        tokens = []
        first = {}
        await backend.lease("warm-up").get()  # open the file before the race starts
        while time.time() < start:
            await asyncio.sleep(0.001)
        record = (await backend.lease("race").try_acquire(me, 5.0, None)).record
        first = {"holder": record.holder, "token": record.fencing_token}
        # Then churn: acquire and release as fast as possible on another election.
        for _ in range(rounds):
            record = (await backend.lease("churn").try_acquire(me, 5.0, None)).record
            if record is not None and record.holder == me:
                tokens.append(record.fencing_token)
                await backend.lease(record.election).release(record)
        await backend.aclose()
        print(json.dumps({"first": first, "tokens": tokens}))

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
    """
)


async def test_processes_contend_and_exactly_one_wins(db: Path, tmp_path: Path) -> None:
    """Six processes try at the same instant: one wins; under churn every fencing token
    is handed to exactly one process, and none is skipped."""
    script = tmp_path / "contender.py"
    script.write_text(CONTENDER)
    url = f"sqlite://{db}"
    start = time.time() + 1.0
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            url,
            f"proc-{i}",
            str(start),
            "40",
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(6)
    ]
    results = []
    for i, proc in enumerate(procs):
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, f"proc-{i} failed"
        results.append((f"proc-{i}", json.loads(out)))

    winners = [me for me, result in results if result["first"]["holder"] == me]
    assert len(winners) == 1, f"winners of one race: {winners}"
    assert {result["first"]["holder"] for _, result in results} == set(winners)
    assert {result["first"]["token"] for _, result in results} == {1}

    tokens = [token for _, result in results for token in result["tokens"]]
    assert sorted(tokens) == list(range(1, len(tokens) + 1)), "each leadership gets its own token"
    assert len({me for me, result in results if result["tokens"]}) > 1, "churn had no contention"


OPENER = textwrap.dedent(
    """
    import asyncio, sys, time
    from leaderlib.backends.sqlite import SQLiteBackend

    async def main(start, paths):
        for i, path in enumerate(paths):
            while time.time() < start + 0.3 * i:
                await asyncio.sleep(0.001)
            backend = SQLiteBackend.from_url(f"sqlite://{path}")
            await backend.lease("race").get()
            await backend.aclose()

    asyncio.run(main(float(sys.argv[1]), sys.argv[2:]))
    """
)


async def test_processes_opening_a_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    """Six processes open the same new file at the same instant, eight times over: every
    open succeeds (turning a new file to WAL takes the file's exclusive lock, and SQLite
    answers "database is locked" at once, without its busy timeout, to all but one of
    several connections that each read the file first)."""
    script = tmp_path / "opener.py"
    script.write_text(OPENER)
    paths = [str(tmp_path / f"new-{i}.db") for i in range(8)]
    start = time.time() + 1.0
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(script), str(start), *paths, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(6)
    ]
    for i, proc in enumerate(procs):
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, f"opener {i} failed:\n{err.decode()[-2000:]}"
    for path in paths:
        assert raw(Path(path), "PRAGMA journal_mode") == [("wal",)]


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from leaderlib.backends.sqlite import SQLiteBackend

    async def main(url):
        backend = SQLiteBackend.from_url(url)
        record = (await backend.lease("watched").try_acquire("other-process", 5.0, None)).record
        print("held", flush=True)
        sys.stdin.readline()
        await backend.lease(record.election).release(record)
        print("released", flush=True)
        await backend.aclose()

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_watch_sees_another_process_release(backend: SQLiteBackend, db: Path, tmp_path: Path) -> None:
    """No in-process notification crosses processes: the watch must notice by polling."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        f"sqlite://{db}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"held\n"
        seen: list[str] = []
        released = asyncio.Event()

        async def follow() -> None:
            async for record in backend.lease("watched").watch():
                seen.append(record.holder if record else "<none>")
                if record is not None and not record.is_held:
                    released.set()

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.3)
        assert seen == ["other-process"], "an idle watch yields once"
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"released\n"
        noticed = time.monotonic()
        await asyncio.wait_for(released.wait(), 2)
        assert time.monotonic() - noticed < 0.5
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# -- expiry is on CLOCK_BOOTTIME, not the wall clock ------------------------------


async def test_expiry_follows_the_boot_clock_not_the_wall_times(backend: SQLiteBackend, db: Path) -> None:
    await backend.lease("setup").get()
    # Wall times far in the past, deadline ahead on the boot clock: held.
    put_row(db, "old-wall", "a", expires_at=boottime() + 1.5, wall="2001-01-01T00:00:00+00:00")
    record = (await backend.lease("old-wall").try_acquire("b", 2.0, None)).record
    assert record is not None and record.holder == "a"
    assert record.expires_in is not None and 1.0 < record.expires_in <= 1.5

    # Wall times a year ahead, deadline passed on the boot clock: free.
    put_row(db, "future-wall", "a", expires_at=boottime() - 0.01, wall="2099-01-01T00:00:00+00:00")
    seen = await backend.lease("future-wall").get()
    assert seen is not None and not seen.is_held and seen.expires_in == 0.0
    taken = (await backend.lease("future-wall").try_acquire("b", 2.0, None)).record
    assert taken is not None and taken.holder == "b" and taken.fencing_token == 6


async def test_deadline_from_before_a_reboot_is_ignored(backend: SQLiteBackend, db: Path) -> None:
    """CLOCK_BOOTTIME restarts at a reboot, so an old deadline may lie far ahead. No
    deadline can be more than lease_duration away; such a row is from another boot."""
    await backend.lease("setup").get()
    put_row(db, "rebooted", "a", expires_at=boottime() + 100_000, lease_duration=2.0)
    taken = (await backend.lease("rebooted").try_acquire("b", 2.0, None)).record
    assert taken is not None and taken.holder == "b"


async def test_renewing_an_expired_lease_is_lost(backend: SQLiteBackend, db: Path) -> None:
    record = (await backend.lease("lapsed").try_acquire("a", 2.0, None)).record
    assert record is not None
    raw(db, f"UPDATE {TABLE} SET expires_at = ? WHERE election = 'lapsed'", (boottime() - 0.01,))
    with pytest.raises(LeaseLost):
        await backend.lease(record.election).renew(record)


async def test_watch_wakes_when_the_lease_runs_out(backend: SQLiteBackend) -> None:
    """Expiry writes nothing, so the watch wakes at the deadline on its own."""
    await backend.lease("short").try_acquire("a", 0.4, None)
    holders: list[str] = []

    async def follow() -> None:
        async for record in backend.lease("short").watch():
            holders.append(record.holder if record else "<none>")
            if record is not None and not record.is_held:
                return

    started = time.monotonic()
    await asyncio.wait_for(follow(), 3)
    assert holders == ["a", ""]
    assert 0.2 < time.monotonic() - started < 1.0


# -- the record's life -----------------------------------------------------------


async def test_release_keeps_the_fencing_counter(backend: SQLiteBackend, db: Path) -> None:
    first = (await backend.lease("e").try_acquire("a", 2.0, None)).record
    assert first is not None and first.fencing_token == 1
    await backend.lease(first.election).release(first)
    assert raw(db, f"SELECT holder, fencing_token FROM {TABLE} WHERE election = 'e'") == [("", 1)]
    released = await backend.lease("e").get()
    assert released is not None and not released.is_held
    second = (await backend.lease("e").try_acquire("a", 2.0, None)).record
    assert second is not None and second.fencing_token == 2 and second.transitions == 1


async def test_release_of_a_stale_record_does_nothing(backend: SQLiteBackend) -> None:
    record = (await backend.lease("e").try_acquire("a", 2.0, None)).record
    assert record is not None
    renewed = await backend.lease(record.election).renew(record)
    await backend.lease(record.election).release(record)
    still = await backend.lease("e").get()
    assert still is not None and still.holder == "a" and still.version == renewed.version


async def test_wal_mode_and_table_option(db: Path) -> None:
    backend = backend_from_url(f"sqlite://{db}?table=my_leases&busy_timeout=0.5")
    try:
        assert isinstance(backend, SQLiteBackend)
        assert backend.busy_timeout == 0.5
        await backend.lease("e").try_acquire("a", 2.0, None)
    finally:
        await backend.aclose()
    assert raw(db, "PRAGMA journal_mode") == [("wal",)]
    assert raw(db, "SELECT holder FROM my_leases") == [("a",)]


async def test_locked_beyond_busy_timeout_is_unavailable(db: Path) -> None:
    backend = SQLiteBackend.from_url(f"sqlite://{db}", busy_timeout=0.2)
    await backend.lease("setup").get()
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="locked"):
            await backend.lease("e").try_acquire("a", 2.0, None)
        assert 0.15 < time.monotonic() - started < 2.0
        blocker.execute("ROLLBACK")
        record = (await backend.lease("e").try_acquire("a", 2.0, None)).record
        assert record is not None and record.holder == "a"
    finally:
        blocker.close()
        await backend.aclose()


async def test_closed_backend_is_unavailable(db: Path) -> None:
    backend = SQLiteBackend.from_url(f"sqlite://{db}")
    await backend.lease("e").get()
    await backend.aclose()
    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.lease("e").get()


# -- job run records -------------------------------------------------------------


def run_of(record: LeaseRecord, job: str = "report") -> JobRun:
    tick = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    return JobRun(
        job=job, tick=tick, fencing_token=record.fencing_token, identity=record.holder, started_at=tick
    )


async def test_a_file_from_an_older_version_gets_the_runs_table(db: Path) -> None:
    """A file with only the lease table (and a live lease in it): the runs table appears on
    first use, and the lease's holder records into it."""
    raw(
        db,
        f"CREATE TABLE {TABLE} (election TEXT PRIMARY KEY, holder TEXT, lease_duration REAL,"
        " fencing_token INTEGER, version INTEGER, transitions INTEGER, acquire_time TEXT,"
        " renew_time TEXT, expires_at REAL)",
    )
    put_row(db, "old", "a", expires_at=boottime() + 2, token=5)
    backend = SQLiteBackend.from_url(f"sqlite://{db}")
    try:
        record = await backend.lease("old").get()
        assert record is not None and record.holder == "a" and record.fencing_token == 5
        assert await backend.lease("old").last_runs() == {}
        await backend.lease("old").record_run(run_of(record))
        assert list(await backend.lease("old").last_runs()) == ["report"]
    finally:
        await backend.aclose()
    assert raw(db, f"SELECT election, job FROM {RUNS_TABLE}") == [("old", "report")]


async def test_a_lease_the_store_expired_cannot_record(backend: SQLiteBackend, db: Path) -> None:
    """The fence is the store's own deadline, not only holder and token: a term nobody took
    over yet, but whose expires_at has passed (or lies beyond a reboot), writes nothing."""
    record = (await backend.lease("lapsed").try_acquire("a", 2.0, None)).record
    assert record is not None
    for expires_at in (boottime() - 0.01, boottime() + 100_000):
        raw(db, f"UPDATE {TABLE} SET expires_at = ? WHERE election = 'lapsed'", (expires_at,))
        with pytest.raises(LeaseLost, match="released or expired"):
            await backend.lease("lapsed").record_run(run_of(record))
    assert raw(db, f"SELECT count(*) FROM {RUNS_TABLE}") == [(0,)]


async def test_runs_follow_the_table_option(db: Path) -> None:
    """table=my_leases keeps its runs in my_runs: the same election name in two lease
    tables of one file is two elections, with records of their own."""
    mine = SQLiteBackend.from_url(f"sqlite://{db}?table=my_leases")
    default = SQLiteBackend.from_url(f"sqlite://{db}")
    try:
        record = (await mine.lease("e").try_acquire("a", 2.0, None)).record
        assert record is not None
        await mine.lease("e").record_run(run_of(record))
        assert list(await mine.lease("e").last_runs()) == ["report"]
        assert await default.lease("e").last_runs() == {}
        with pytest.raises(LeaseLost):  # the same holder and token, but not this table's term
            await default.lease("e").record_run(run_of(record))
    finally:
        await mine.aclose()
        await default.aclose()
    assert raw(db, "SELECT election, job FROM my_runs") == [("e", "report")]
    assert raw(db, f"SELECT count(*) FROM {RUNS_TABLE}") == [(0,)]


@pytest.mark.parametrize("stored", [None, '{"job": "report", "tick": "at eight'])
async def test_a_corrupt_run_record_names_its_row(
    backend: SQLiteBackend, db: Path, stored: str | None
) -> None:
    await backend.lease("setup").get()
    raw(db, f"INSERT INTO {RUNS_TABLE} VALUES ('e', 'nightly', ?)", (stored,))
    with pytest.raises(CorruptLeaseRecord) as caught:
        await backend.lease("e").last_runs()
    message = str(caught.value)
    assert "job 'nightly'" in message and RUNS_TABLE in message and str(db) in message
    assert message.count("election 'e'") == 1


# -- clear errors ----------------------------------------------------------------


async def test_corrupt_row_names_file_table_and_column(backend: SQLiteBackend, db: Path) -> None:
    await backend.lease("setup").get()
    put_row(db, "bad", "a", expires_at=boottime() + 2)
    raw(db, f"UPDATE {TABLE} SET fencing_token = 'seven' WHERE election = 'bad'")
    with pytest.raises(CorruptLeaseRecord) as caught:
        await backend.lease("bad").try_acquire("b", 2.0, None)
    message = str(caught.value)
    assert str(db) in message and TABLE in message and "'bad'" in message
    assert "fencing_token='seven'" in message


async def test_foreign_table_without_our_columns(db: Path) -> None:
    raw(db, "CREATE TABLE leaderlib_leases (election TEXT PRIMARY KEY, owner TEXT)")
    backend = SQLiteBackend.from_url(f"sqlite://{db}")
    try:
        with pytest.raises(CorruptLeaseRecord, match="columns"):
            await backend.lease("e").get()
    finally:
        await backend.aclose()


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        SQLiteBackend.from_url(f"sqlite://{tmp_path}/nowhere/leases.db")
    assert f"{tmp_path}/nowhere" in str(caught.value)


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a database, and it is long enough\n")
    with pytest.raises(ConfigError, match="not a SQLite database"):
        SQLiteBackend.from_url(f"sqlite://{path}")


async def test_file_replaced_by_garbage_after_start(db: Path) -> None:
    backend = SQLiteBackend.from_url(f"sqlite://{db}")
    try:
        db.write_bytes(b"garbage " * 512)
        with pytest.raises(CorruptLeaseRecord, match="not a readable SQLite database"):
            await backend.lease("e").get()
    finally:
        await backend.aclose()


async def test_unwritable_directory_says_what_to_grant() -> None:
    # /proc refuses new files even to root, for whom permission bits mean nothing.
    backend = SQLiteBackend.from_url("sqlite:///proc/leaderlib-test.db")
    try:
        with pytest.raises(AccessDenied, match="write permission"):
            await backend.lease("e").get()
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("sqlite://", "path"),
        ("sqlite:///", "path"),
        ("sqlite://somehost/tmp/x.db", "path"),
        ("sqlite:///tmp/x.db?table=x;drop", "table"),
        ("sqlite:///tmp/x.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///tmp/x.db?busy_timeout=-1", "busy_timeout"),
        ("sqlite:///tmp/x.db?colour=red", "colour"),
        ("sqlite:///tmp", "path"),
    ],
)
def test_bad_urls_name_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SQLiteBackend.from_url(url)
    assert caught.value.field == field


def test_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SQLiteBackend.from_url("sqlite:///tmp/x.db").path == "/tmp/x.db"
    assert SQLiteBackend.from_url("sqlite:////tmp/x.db").path == "/tmp/x.db"
    monkeypatch.chdir(tmp_path)
    assert SQLiteBackend.from_url("sqlite://./sub/../x.db").path == str(tmp_path / "x.db")
    assert SQLiteBackend.from_url(f"sqlite://{tmp_path}/a%20b.db").path == str(tmp_path / "a b.db")

"""One election's row in the lease file: :class:`SQLiteLease` and its SQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import sqlite3
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..._clock import boottime
from ..._errors import BackendUnavailable, ConfigError, CorruptLeaseRecord, LeaseLost
from .. import Acquisition, JobRun, LeaseRecord, decide
from .._runs import decode_run, encode_run, fenced_out
from ._rows import LIVE, SELECT_COLUMNS, LeaseRow, parse_row

if TYPE_CHECKING:
    from . import SQLiteBackend

__all__ = ["SQLiteLease"]


def _wall() -> str:
    """UTC wall time for the human-readable columns; never used for expiry."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class SQLiteLease:
    """One election's row in a SQLite lease file."""

    def __init__(self, backend: SQLiteBackend, election: str) -> None:
        self.election = election
        self._backend = backend
        self._db = backend._db

    # -- on a connection of the file (see Database.run: inline or the worker's) --

    def _row(self, raw: tuple[Any, ...] | None) -> LeaseRow | None:
        return parse_row(raw, self.election, table=self._db.table, path=self._db.path)

    def _select(self, conn: sqlite3.Connection) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = conn.execute(
            f"SELECT {SELECT_COLUMNS} FROM {self._db.table} WHERE election = ?", (self.election,)
        ).fetchone()
        return row

    def _get_sync(self, conn: sqlite3.Connection) -> LeaseRecord | None:
        row = self._row(self._select(conn))
        return row.record(boottime()) if row else None

    def _acquire_sync(
        self, conn: sqlite3.Connection, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        """One acquisition attempt: :func:`decide` on the row, in one write transaction."""
        election, table = self.election, self._db.table

        def attempt(conn: sqlite3.Connection) -> Acquisition:
            row = self._row(self._select(conn))
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
                    f"UPDATE {table} SET holder = ?, lease_duration = ?,"
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
                sql = f"INSERT INTO {table} ({SELECT_COLUMNS}) VALUES (?, ?, ?, ?, 1, 0, ?, ?, ?)"
                params = (election, identity, lease_duration, decision.fencing_token, wall, wall, expires_at)
            written = self._row(self._returning(conn, sql, params))
            if written is None:
                raise self._cas_failed()
            return Acquisition(acquired=True, record=written.record(now))

        return self._db.write(conn, attempt)

    def _returning(
        self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
    ) -> tuple[Any, ...] | None:
        """Run a write with ``RETURNING`` the row; fetchall so the statement ends before COMMIT."""
        rows = conn.execute(f"{sql} RETURNING {SELECT_COLUMNS}", params).fetchall()
        return rows[0] if rows else None

    def _cas_failed(self) -> BackendUnavailable:
        # Under BEGIN IMMEDIATE nobody can change the row between our SELECT
        # and UPDATE; if they did, the file's locks do not work.
        return BackendUnavailable(
            f"the row changed inside a write transaction on {self._db.path}; SQLite locking is "
            "not working (is the file on a network filesystem?)",
            election=self.election,
            backend=self._db.scheme,
        )

    def _renew_sync(self, conn: sqlite3.Connection, record: LeaseRecord) -> LeaseRecord | None:
        def attempt(conn: sqlite3.Connection) -> LeaseRecord | None:
            now = boottime()
            raw = self._returning(
                conn,
                f"UPDATE {self._db.table} SET renew_time = ?, expires_at = ?, version = version + 1"
                f" WHERE election = ? AND version = ? AND holder = ? AND {LIVE}",
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
            row = self._row(raw)
            return row.record(now) if row else None

        return self._db.write(conn, attempt)

    def _release_sync(self, conn: sqlite3.Connection, record: LeaseRecord) -> bool:
        def attempt(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"UPDATE {self._db.table} SET holder = '', renew_time = ?, expires_at = ?,"
                " version = version + 1 WHERE election = ? AND version = ? AND holder = ?"
                " AND holder <> ''",
                (_wall(), boottime(), record.election, _version(record), record.holder),
            )
            return cursor.rowcount > 0

        return self._db.write(conn, attempt)

    def _record_run_sync(self, conn: sqlite3.Connection, run: JobRun) -> None:
        """Upsert the job's row only if the lease row is ``run``'s term, live; one write transaction.

        The check is the INSERT's own SELECT of the lease row, so check and
        write are one statement under the write lock. Only when it wrote
        nothing is the lease row read, to say who holds the lease now.
        """
        election, db = self.election, self._db

        def attempt(conn: sqlite3.Connection) -> None:
            now = boottime()
            cursor = conn.execute(
                f"INSERT INTO {db.runs_table} (election, job, record)"
                f" SELECT election, ?, ? FROM {db.table}"
                f" WHERE election = ? AND holder = ? AND fencing_token = ? AND {LIVE}"
                " ON CONFLICT (election, job) DO UPDATE SET record = excluded.record",
                (run.job, encode_run(run), election, run.identity, run.fencing_token, now, now),
            )
            if cursor.rowcount > 0:
                return
            row = self._row(self._select(conn))
            current = row.record(now) if row is not None else None
            raise fenced_out(
                run,
                holder=current.holder if current else None,
                token=current.fencing_token if current else None,
                backend=db.scheme,
                election=election,
            )

        db.write(conn, attempt)

    def _last_runs_sync(self, conn: sqlite3.Connection) -> dict[str, JobRun]:
        db = self._db
        rows = conn.execute(
            f"SELECT job, record FROM {db.runs_table} WHERE election = ?", (self.election,)
        ).fetchall()
        runs: dict[str, JobRun] = {}
        for job, raw in rows:
            try:
                if raw is None:
                    raise CorruptLeaseRecord("a job's run record is NULL")
                # No election or backend here: they are added once, below.
                runs[job] = decode_run(raw, election="", backend="")
            except CorruptLeaseRecord as exc:
                # Say which row to delete or fix.
                raise CorruptLeaseRecord(
                    f"job {job!r} in table {db.runs_table} of {db.path}: {exc}",
                    election=self.election,
                    backend=db.scheme,
                ) from None
        return runs

    # -- the Lease Protocol ------------------------------------------------

    async def get(self) -> LeaseRecord | None:
        return await self._db.run(self.election, self._get_sync)

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        # The store expires leases itself (expires_at on CLOCK_BOOTTIME);
        # ``takeover`` only matters for a term the elector itself ended.
        if not (math.isfinite(lease_duration) and lease_duration > 0):
            raise ConfigError(
                f"lease_duration must be > 0 seconds, got {lease_duration!r}", field="lease_duration"
            )
        acquisition = await self._db.run(
            self.election, self._acquire_sync, identity, lease_duration, takeover
        )
        if acquisition.acquired:
            self._backend._changes.notify(self.election)
        return acquisition

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        renewed = await self._db.run(self.election, self._renew_sync, record)
        if renewed is None:
            raise LeaseLost(
                "the lease is no longer ours (expired, released or taken over)",
                election=self.election,
                backend=self._db.scheme,
            )
        self._backend._changes.notify(self.election)
        return renewed

    async def release(self, record: LeaseRecord) -> None:
        if await self._db.run(self.election, self._release_sync, record):
            self._backend._changes.notify(self.election)

    async def record_run(self, run: JobRun) -> None:
        await self._db.run(self.election, self._record_run_sync, run)

    async def last_runs(self) -> dict[str, JobRun]:
        return await self._db.run(self.election, self._last_runs_sync)

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        # Subscribed before the first read, so no write after it goes unseen:
        # this process's writes notify at once, other processes' through the
        # backend's one poller (PRAGMA data_version, see _watch).
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

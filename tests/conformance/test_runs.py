"""Job run records (``Lease.record_run`` / ``last_runs``), on every store.

A run record is written only while its term is the election's current one:
these tests check the fence (a replaced, released or foreign term is refused
and writes nothing), that records are per job and survive the lease's end,
and that writing them does not disturb the lease itself (renewals, watches
and takeovers go on as before).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time

import pytest

from leaderlib import LeaseLost
from leaderlib._errors import CorruptLeaseRecord
from leaderlib.backends import JobRun, LeaseRecord

from .stores import Harness
from .test_conformance import LEASE, Backends, election_name

UTC = dt.UTC
TICK = dt.datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)


def started(record: LeaseRecord, job: str = "report", tick: dt.datetime = TICK) -> JobRun:
    return JobRun(
        job=job,
        tick=tick,
        fencing_token=record.fencing_token,
        identity=record.holder,
        started_at=tick + dt.timedelta(microseconds=4211),
        next_tick=tick + dt.timedelta(days=1),
    )


def finished(run: JobRun, outcome: str = "ok", duration: float = 0.012) -> JobRun:
    return dataclasses.replace(run, outcome=outcome, duration=duration)


async def acquire(backends: Backends, election: str, identity: str) -> LeaseRecord:
    record = (await backends().lease(election).try_acquire(identity, LEASE, None)).record
    assert record is not None and record.holder == identity
    return record


async def test_a_run_round_trips_and_is_replaced_by_its_end(backends: Backends) -> None:
    election = election_name()
    record = await acquire(backends, election, "holder-a")
    lease = backends().lease(election)
    assert await lease.last_runs() == {}
    run = started(record)
    await lease.record_run(run)
    assert await backends().lease(election).last_runs() == {"report": run}
    done = finished(run)
    await lease.record_run(done)
    assert await backends().lease(election).last_runs() == {"report": done}


async def test_records_are_per_job(backends: Backends) -> None:
    """Jobs keep their own records; names with dots, dashes and underscores are fine."""
    election = election_name()
    record = await acquire(backends, election, "holder-a")
    lease = backends().lease(election)
    runs = {job: started(record, job) for job in ("report", "poll_invoices", "nightly.cleanup-2")}
    for run in runs.values():
        await lease.record_run(run)
    later = started(record, "report", TICK + dt.timedelta(seconds=1))
    await lease.record_run(later)
    assert await backends().lease(election).last_runs() == {**runs, "report": later}
    assert await backends().lease(election_name()).last_runs() == {}, "records belong to their election"


async def test_a_foreign_holder_cannot_record(backends: Backends) -> None:
    election = election_name()
    record = await acquire(backends, election, "holder-a")
    other = dataclasses.replace(record, holder="holder-b")
    with pytest.raises(LeaseLost):
        await backends().lease(election).record_run(started(other))
    later_term = dataclasses.replace(record, fencing_token=record.fencing_token + 1)
    with pytest.raises(LeaseLost):
        await backends().lease(election).record_run(started(later_term))
    assert await backends().lease(election).last_runs() == {}


async def test_a_replaced_leader_cannot_overwrite_its_successor(backends: Backends) -> None:
    """The paused ex-leader: it wakes after a takeover and tries to record its run."""
    election = election_name()
    old = await acquire(backends, election, "paused")
    old_lease = backends().lease(election)
    await old_lease.record_run(started(old))

    successor = backends().lease(election)
    seen = await successor.get()
    taken: LeaseRecord | None = None
    deadline = time.monotonic() + LEASE + 5
    while time.monotonic() < deadline:
        await asyncio.sleep(LEASE + 0.2)  # the old term ran out by the successor's count
        attempt = await successor.try_acquire("successor", LEASE, seen)
        if attempt.acquired:
            taken = attempt.record
            break
        seen = attempt.record
    assert taken is not None and taken.fencing_token > old.fencing_token
    theirs = started(taken, tick=TICK + dt.timedelta(seconds=5))
    await successor.record_run(theirs)

    with pytest.raises(LeaseLost):
        await old_lease.record_run(finished(started(old)))
    with pytest.raises(LeaseLost):
        await old_lease.record_run(started(old, tick=TICK + dt.timedelta(seconds=9)))
    assert await backends().lease(election).last_runs() == {"report": theirs}


async def test_records_outlive_a_release_which_ends_the_term(backends: Backends) -> None:
    election = election_name()
    record = await acquire(backends, election, "holder-a")
    lease = backends().lease(election)
    run = finished(started(record))
    await lease.record_run(run)
    await lease.release(record)
    with pytest.raises(LeaseLost):
        await lease.record_run(started(record, tick=TICK + dt.timedelta(seconds=1)))
    assert await backends().lease(election).last_runs() == {"report": run}
    # The next term can record over it.
    nxt = (await backends().lease(election).try_acquire("holder-b", LEASE, await lease.get())).record
    assert nxt is not None and nxt.holder == "holder-b"
    later = started(nxt, tick=TICK + dt.timedelta(seconds=2))
    await backends().lease(election).record_run(later)
    assert await lease.last_runs() == {"report": later}


async def test_recording_does_not_disturb_the_lease(backends: Backends) -> None:
    """Renewals keep working between run records (the same term), the token stays, and a
    stranger still cannot take the lease."""
    election = election_name()
    lease = backends().lease(election)
    record = (await lease.try_acquire("holder-a", LEASE, None)).record
    assert record is not None
    for second in range(4):  # 4 x 0.7 s > LEASE: alive only through renewals
        run = started(record, tick=TICK + dt.timedelta(seconds=second))
        await lease.record_run(run)
        await asyncio.sleep(0.7)
        record = await lease.renew(record)
        await lease.record_run(finished(run))
        assert record.holder == "holder-a"
    attempt = await backends().lease(election).try_acquire("holder-b", LEASE, None)
    assert not attempt.acquired and attempt.record is not None and attempt.record.holder == "holder-a"
    current = await backends().lease(election).get()
    assert current is not None and current.fencing_token == record.fencing_token


@pytest.mark.corruptible
async def test_a_corrupt_run_record_gives_a_clear_error(harness: Harness, backends: Backends) -> None:
    election = election_name()
    record = await acquire(backends, election, "holder-a")
    await harness.write_corrupt_run(election, "report")
    with pytest.raises(CorruptLeaseRecord) as caught:
        await backends().lease(election).last_runs()
    assert "report" in str(caught.value) or "run record" in str(caught.value)
    # The lease itself is untouched: the same term (on Kubernetes the records are an
    # annotation of the Lease, so its version moves with them).
    current = await backends().lease(election).get()
    assert current is not None
    assert (current.holder, current.fencing_token) == (record.holder, record.fencing_token)

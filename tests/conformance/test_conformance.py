"""The one suite every backend must pass, on its real store.

Tests run real electors on the real clock with short leases, so each takes a
few seconds. Bounds on times are generous (several times what a healthy
loopback store needs): they tell a watch from a poll, not fast from slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

import pytest

from leaderlib import BackendUnavailable, ConfigError, LeaderElector, LeaseLost, LeaseRecord
from leaderlib._errors import CorruptLeaseRecord
from leaderlib.backends import FIRST_TOKEN, Backend, Lease
from tests.electing import LEASE, config, running, until

from .stores import Harness

Backends = Callable[[], Backend]


def election_name() -> str:
    return f"conf-{uuid.uuid4().hex[:10]}"


async def test_one_leader_among_contenders(backends: Backends) -> None:
    """Mutual exclusion: three electors start together; at every sample at most one leads,
    and the one that leads keeps leading (renewals work) for several lease durations."""
    election = election_name()
    electors = [LeaderElector(election, backends(), config(f"replica-{i}")) for i in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for elector in electors:
            await stack.enter_async_context(running(elector))
        await until(lambda: any(e.is_leader for e in electors), timeout=10)
        leader = next(e for e in electors if e.is_leader)
        token = leader.leadership.fencing_token if leader.leadership else None
        deadline = time.monotonic() + 2.5 * LEASE
        while time.monotonic() < deadline:
            leaders = [e.identity for e in electors if e.is_leader]
            assert leaders == [leader.identity], f"leaders at one instant: {leaders}"
            await asyncio.sleep(0.01)
        assert leader.leadership is not None
        assert leader.leadership.fencing_token == token, "renewals must not start a new term"


async def test_get_reports_the_holder(backends: Backends) -> None:
    election = election_name()
    lease = backends().lease(election)
    assert lease.election == election
    assert await lease.get() is None
    record = (await lease.try_acquire("holder-a", LEASE, None)).record
    assert record is not None and record.holder == "holder-a"
    seen = await backends().lease(election).get()
    assert seen is not None
    assert seen.holder == "holder-a"
    assert seen.election == election
    assert seen.fencing_token == record.fencing_token
    assert seen.lease_duration == pytest.approx(LEASE)


async def test_second_acquirer_sees_the_holder(backends: Backends) -> None:
    election = election_name()
    first = (await backends().lease(election).try_acquire("holder-a", LEASE, None)).record
    assert first is not None and first.holder == "holder-a"
    second = (await backends().lease(election).try_acquire("holder-b", LEASE, None)).record
    assert second is not None, "a failed attempt must report the current holder"
    assert second.holder == "holder-a"


async def test_renew_extends_and_stale_record_is_lost(backends: Backends) -> None:
    """Renewal keeps a lease past its duration; once another holds it, renewing the old
    record raises LeaseLost and releasing it changes nothing."""
    election = election_name()
    a, b = backends().lease(election), backends().lease(election)
    record = (await a.try_acquire("holder-a", LEASE, None)).record
    assert record is not None and record.holder == "holder-a"
    for _ in range(4):  # 4 x 0.7 s > LEASE: alive only through renewals
        await asyncio.sleep(0.7)
        renewed = await a.renew(record)
        assert renewed.holder == "holder-a"
        assert renewed.fencing_token == record.fencing_token
        record = renewed
    stolen = (await b.try_acquire("holder-b", LEASE, None)).record
    assert stolen is not None and stolen.holder == "holder-a", "a renewed lease must still be held"

    # Let A's lease expire; B takes over (by the store's expiry or by its own count).
    taken = None
    deadline = time.monotonic() + LEASE + 5
    seen = await b.get()
    while time.monotonic() < deadline:
        await asyncio.sleep(LEASE + 0.2)
        taken = (await b.try_acquire("holder-b", LEASE, seen)).record
        if taken is not None and taken.holder == "holder-b":
            break
        seen = taken
    assert taken is not None and taken.holder == "holder-b"
    assert taken.fencing_token > record.fencing_token

    with pytest.raises(LeaseLost):
        await a.renew(record)
    await a.release(record)
    still = await b.get()
    assert still is not None and still.holder == "holder-b", (
        "releasing a stale record must not free B's lease"
    )


async def test_expired_leader_is_replaced(backends: Backends) -> None:
    """A leader that stops renewing (a crash) is replaced after the lease, not before."""
    election = election_name()
    crashed = (await backends().lease(election).try_acquire("crashed", LEASE, None)).record
    assert crashed is not None and crashed.holder == "crashed"
    started = time.monotonic()
    follower = LeaderElector(election, backends(), config("follower"))
    async with running(follower):
        took = await until(lambda: follower.is_leader, timeout=LEASE + 6)
        elapsed = time.monotonic() - started
        assert elapsed >= LEASE * 0.9, f"took over after {elapsed:.2f}s, before the {LEASE}s lease ran out"
        assert follower.leadership is not None
        assert follower.leadership.fencing_token > crashed.fencing_token
        assert took > 0


async def test_release_hands_over_at_once(backends: Backends) -> None:
    """A graceful stop releases the lease and a watching follower takes it well before
    either the lease would expire or its own retry period would come round."""
    election = election_name()
    slow = {"lease_duration": 6.0, "renew_deadline": 4.0, "renew_interval": 1.0, "retry_period": 30.0}
    leader = LeaderElector(election, backends(), config("leader", **slow))
    follower = LeaderElector(election, backends(), config("follower", **slow))
    async with running(leader) as leader_task:
        await until(lambda: leader.is_leader, timeout=10)
        first_token = leader.leadership.fencing_token if leader.leadership else 0
        async with running(follower):
            await until(lambda: follower.leader == "leader", timeout=10)
            await asyncio.sleep(0.5)  # the follower is now waiting on its watch
            leader.stop()
            stopped = time.monotonic()
            await asyncio.wait_for(leader_task, timeout=10)
            await until(lambda: follower.is_leader, timeout=5)
            handover = time.monotonic() - stopped
            assert handover < 3.0, f"handover took {handover:.2f}s: the follower did not hear of the release"
            assert follower.leadership is not None
            assert follower.leadership.fencing_token > first_token


async def test_fencing_tokens_strictly_increase(backends: Backends) -> None:
    """Each new leadership, by release or by expiry, gets a larger token."""
    election = election_name()
    tokens: list[int] = []
    for i in range(3):
        elector = LeaderElector(election, backends(), config(f"term-{i}"))
        async with running(elector):
            await until(lambda e=elector: e.is_leader, timeout=10)  # type: ignore[misc]
            assert elector.leadership is not None
            tokens.append(elector.leadership.fencing_token)
    crashed = (await backends().lease(election).try_acquire("crashed", LEASE, None)).record
    assert crashed is not None and crashed.holder == "crashed"
    tokens.append(crashed.fencing_token)
    after = LeaderElector(election, backends(), config("after-crash"))
    async with running(after):
        await until(lambda: after.is_leader, timeout=LEASE + 6)
        assert after.leadership is not None
        tokens.append(after.leadership.fencing_token)
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens


async def test_watch_reports_changes(backends: Backends) -> None:
    election = election_name()
    watcher = backends().lease(election)
    seen: list[str | None] = []
    changed = asyncio.Event()

    async def follow() -> None:
        async for record in watcher.watch():
            seen.append(record.holder if record is not None and record.is_held else None)
            changed.set()

    task = asyncio.create_task(follow())
    try:
        await asyncio.sleep(0.3)  # let the watch start
        actor = backends().lease(election)
        record = (await actor.try_acquire("holder-a", LEASE, None)).record
        assert record is not None
        await until(lambda: "holder-a" in seen, timeout=3)
        await actor.release(record)
        await until(lambda: seen[-1] is None, timeout=3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_foreign_record_is_respected_until_it_expires(harness: Harness, backends: Backends) -> None:
    election = election_name()
    await harness.write_foreign(election, "someone-else", LEASE)
    written = time.monotonic()
    seen = await backends().lease(election).get()
    assert seen is not None and seen.holder == "someone-else"
    elector = LeaderElector(election, backends(), config("newcomer"))
    async with running(elector):
        await until(lambda: elector.leader == "someone-else", timeout=5)
        await until(lambda: elector.is_leader, timeout=LEASE + 6)
        elapsed = time.monotonic() - written
        assert elapsed >= LEASE * 0.9, f"took a foreign lease after {elapsed:.2f}s, before it expired"


@pytest.mark.corruptible
async def test_corrupt_record_gives_clear_error_and_is_kept(harness: Harness, backends: Backends) -> None:
    election = election_name()
    await harness.write_corrupt(election)
    lease = backends().lease(election)
    with pytest.raises(CorruptLeaseRecord) as caught:
        await lease.get()
    assert election in str(caught.value)
    elector = LeaderElector(election, backends(), config("careful"))
    async with running(elector):
        await asyncio.sleep(1.0)
        assert not elector.is_leader, "an unreadable record must not be overwritten"
    with pytest.raises(CorruptLeaseRecord):
        await lease.get()


class _RenewalsFail:
    """A real backend whose renewals fail while ``failing`` is set: a store outage as the
    leader sees it, while the record it wrote stays in the store."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.scheme = backend.scheme
        self.observation_granularity = backend.observation_granularity
        self.failing = False

    def lease(self, election: str) -> Lease:
        return _RenewalsFailLease(self, self._backend.lease(election))

    async def aclose(self) -> None:
        await self._backend.aclose()


class _RenewalsFailLease:
    def __init__(self, backend: _RenewalsFail, inner: Lease) -> None:
        self._backend = backend
        self._inner = inner
        self.election = inner.election

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        if self._backend.failing:
            raise BackendUnavailable("renewals fail for this test", election=record.election, backend=None)
        return await self._inner.renew(record)


async def test_a_new_term_after_a_lost_one_gets_a_higher_token(backends: Backends) -> None:
    """Regression (issue 9, item 8): a leader whose renewals fail steps down while its
    record is still in the store; when the store answers again it leads again, and that
    new term has a higher fencing token than the lost one, so a run left over from the
    lost term cannot pass for the new term's."""
    election = election_name()
    backend = _RenewalsFail(backends())
    elector = LeaderElector(election, backend, config("comeback"))
    async with running(elector):
        await until(lambda: elector.is_leader, timeout=10)
        lost = elector.leadership
        assert lost is not None
        lost_token = lost.fencing_token
        backend.failing = True
        await until(lambda: elector.leadership is not lost, timeout=LEASE + 2, what="stepping down")
        assert not lost.is_valid()
        backend.failing = False
        await until(lambda: elector.is_leader, timeout=LEASE + 6, what="leading again")
        assert elector.leadership is not None
        assert elector.leadership.fencing_token > lost_token, "a new term reused the lost term's token"


async def test_a_record_naming_us_is_not_adopted(backends: Backends) -> None:
    """The acquire decision goes by the candidacy, not the identity string: a live record
    whose holder is our identity is taken over only as exactly the version we ended, and
    that is a new term with a new token."""
    election = election_name()
    first = await backends().lease(election).try_acquire("same-name", LEASE, None)
    assert first.acquired and first.record is not None
    other = await backends().lease(election).try_acquire("same-name", LEASE, None)
    assert not other.acquired, "another candidacy with the same identity adopted a live lease"
    assert other.record is not None and other.record.fencing_token == first.record.fencing_token


async def test_first_token_and_each_new_term_adds_one(harness: Harness, backends: Backends) -> None:
    """Tokens start at FIRST_TOKEN on every store, and each new term (a takeover of exactly
    the version we ended, or a release) gets the previous token + 1. etcd's token is the
    candidate key's create revision, etcd's own counter: it only strictly increases."""
    election = election_name()
    lease = backends().lease(election)
    first = await lease.try_acquire("term-1", LEASE, None)
    assert first.acquired and first.record is not None
    again = await lease.try_acquire("term-2", LEASE, first.record)
    assert again.acquired and again.record is not None, "an exact takeover is a new term"
    assert again.record.holder == "term-2"
    await lease.release(again.record)
    last = await backends().lease(election).try_acquire("term-3", LEASE, None)
    assert last.acquired and last.record is not None, "a released lease is free"
    tokens = [first.record.fencing_token, again.record.fencing_token, last.record.fencing_token]
    if getattr(harness, "consecutive_tokens", True):
        assert tokens == [FIRST_TOKEN, FIRST_TOKEN + 1, FIRST_TOKEN + 2]
    else:
        assert FIRST_TOKEN <= tokens[0] < tokens[1] < tokens[2], tokens


async def test_elections_on_one_backend_are_independent(backends: Backends) -> None:
    """Two handles of one backend object: each acquires, renews, releases and watches its
    own election, and nothing one does shows in the other."""
    backend = backends()
    one, two = backend.lease(election_name()), backend.lease(election_name())
    assert one.election != two.election
    assert backend.lease(one.election) is one, "lease() returns the election's one handle"
    seen: dict[str, list[str | None]] = {one.election: [], two.election: []}

    async def follow(lease: Lease) -> None:
        async for record in lease.watch():
            assert record is None or record.election == lease.election
            seen[lease.election].append(record.holder if record is not None and record.is_held else None)

    watches = [asyncio.create_task(follow(one)), asyncio.create_task(follow(two))]
    try:
        await asyncio.sleep(0.3)  # let the watches start
        a = (await one.try_acquire("holder-a", LEASE, None)).record
        assert a is not None and a.holder == "holder-a" and a.election == one.election
        await until(lambda: "holder-a" in seen[one.election], timeout=3)
        b = (await two.try_acquire("holder-b", LEASE, None)).record
        assert b is not None and b.holder == "holder-b" and b.election == two.election
        await until(lambda: "holder-b" in seen[two.election], timeout=3)
        a = await one.renew(a)
        b = await two.renew(b)
        await one.release(a)
        await until(lambda: seen[one.election][-1] is None, timeout=3)
        held = await two.get()
        assert held is not None and held.holder == "holder-b", "releasing one election freed the other"
        assert "holder-b" not in seen[one.election] and "holder-a" not in seen[two.election]
        b = await two.renew(b)
        assert b.holder == "holder-b"
        await two.release(b)
        await until(lambda: seen[two.election][-1] is None, timeout=3)
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)


async def test_a_bad_election_name_is_refused_at_construction(harness: Harness, backends: Backends) -> None:
    """Every store refuses an empty name, and each its own bad names, when the handle (and
    so the elector) is made, before any request."""
    backend = backends()
    for name in ("", *harness.bad_election_names):
        with pytest.raises(ConfigError) as caught:
            backend.lease(name)
        assert caught.value.field == "election", name
        with pytest.raises(ConfigError):
            LeaderElector(name, backend, config("careful"))

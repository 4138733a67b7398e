"""``redis+sentinel://`` on real Sentinels: a master failover while leaderlib leads (issue 14).

Each test gets a master, a replica and three Sentinels (quorum 2, down after
1 s: ``redis_sentinel``) and runs real electors on ``redis+sentinel://`` URLs
in this process. Terms are judged from the electors' own CLOCK_BOOTTIME
stamps: a term runs from its work's start to its work's cancellation (the
elector cancels it the moment the term ends, at the latest at its renew
deadline). No two terms may overlap.

The fencing token must grow across the failover: here the new master had
received the last acquisition's ``INCR`` before the old one died. When it has
not (replication is asynchronous), a token is issued twice unless
``wait_replicas`` is set: ``test_a_failover_that_loses_an_acquisition`` cuts
replication before an acquisition and measures both (docs/backends/redis.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from leaderlib import LeaderElector, Leadership, backend_from_url
from leaderlib._errors import BackendUnavailable, LeaseLost
from leaderlib.backends import JobRun, LeaseRecord
from leaderlib.backends.redis import RedisLease
from leaderlib.testing.sentinel import RedisSentinelGroup
from tests.electing import LEASE, config, until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ELECTION = "sentinel-cron"
TICK = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class Term:
    who: str
    token: int
    start: float
    end: float = float("inf")


@dataclass
class Ledger:
    """Every term of every elector, stamped by the elector's own work."""

    terms: list[Term] = field(default_factory=list)

    def work(self, who: str) -> Callable[[Leadership], Coroutine[Any, Any, None]]:
        async def lead(leadership: Leadership) -> None:
            term = Term(who, leadership.fencing_token, now())
            self.terms.append(term)
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                term.end = now()

        return lead

    def leading(self) -> list[Term]:
        return [t for t in self.terms if t.end == float("inf")]

    def started_after(self, when: float) -> list[Term]:
        return [t for t in self.terms if t.start > when]

    def assert_no_overlap(self) -> None:
        ordered = sorted(self.terms, key=lambda t: t.start)
        for before, after in itertools.pairwise(ordered):
            assert before.end <= after.start, f"terms overlap by {before.end - after.start:.3f} s: {ordered}"


@contextlib.asynccontextmanager
async def electors(
    group: RedisSentinelGroup, ledger: Ledger, count: int, **options: object
) -> AsyncIterator[list[LeaderElector]]:
    """``count`` electors, each with its own backend (its own Sentinel and master connections)."""
    backends = [backend_from_url(group.url, **options) for _ in range(count)]
    made = [
        LeaderElector(ELECTION, backend, config(f"e{i}"), on_started_leading=ledger.work(f"e{i}"))
        for i, backend in enumerate(backends)
    ]
    tasks = [asyncio.create_task(elector.run()) for elector in made]
    try:
        yield made
    finally:
        for elector in made:
            elector.stop()
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        for backend in backends:
            await backend.aclose()


@pytest.mark.parametrize("fault", ["kill", "pause"])
async def test_electors_follow_a_master_failover(redis_sentinel: RedisSentinelGroup, fault: str) -> None:
    """SIGKILL (a crash) or SIGSTOP (a hung host: connections stay open) the master while a
    leader holds the lease; the Sentinels promote the replica and the electors follow it."""
    ledger = Ledger()
    async with electors(redis_sentinel, ledger, 3):
        await until(lambda: len(ledger.leading()) == 1, 15, "a first leader")
        await asyncio.sleep(1.0)
        assert len(ledger.terms) == 1, ledger.terms
        before = ledger.terms[0]

        # SIGKILL the master while it holds the lease; the Sentinels promote the replica.
        killed_at = now()
        fail = redis_sentinel.kill_master if fault == "kill" else redis_sentinel.pause_master
        old = await asyncio.to_thread(fail)
        new = await asyncio.to_thread(redis_sentinel.wait_for_failover, old, 20)
        promoted_at = now()
        await until(lambda: bool(ledger.started_after(killed_at)), 20, "a leader after the failover")
        after = ledger.started_after(killed_at)[0]
        if fault == "pause":
            # The old master wakes up believing it is master, until the Sentinels demote it.
            redis_sentinel.resume(old)
        await asyncio.sleep(2.0)  # the new leader keeps renewing on the new master
        assert ledger.leading() == [after], ledger.terms
        assert new.cli("GET", f"leaderlib:{ELECTION}:fencing").strip() == str(after.token)
    if fault == "pause":
        # The Sentinels turn the woken ex-master into a replica of the new one (resetting
        # its clients as they do: polled, not asked once).
        await asyncio.to_thread(old.wait_for_info, "role:slave", timeout=15)

    ledger.assert_no_overlap()
    tokens = [t.token for t in sorted(ledger.terms, key=lambda t: t.start)]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), ledger.terms
    print(
        f"\n{fault}: sentinel failover {promoted_at - killed_at:.2f} s after the fault; "
        f"old term ended {before.end - killed_at:+.2f} s; "
        f"no leader for {after.start - before.end:.2f} s; "
        f"new leader {after.start - killed_at:.2f} s after the fault; tokens {tokens}"
    )


async def acquire_within(lease: RedisLease, identity: str, timeout: float) -> LeaseRecord:
    """Attempt until ``identity`` acquires (the Sentinels may still be switching); fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    errors: list[str] = []
    while time.monotonic() < deadline:
        try:
            attempt = await lease.try_acquire(identity, LEASE, None)
            if attempt.acquired and attempt.record is not None:
                return attempt.record
        except BackendUnavailable as exc:
            errors.append(str(exc))
        await asyncio.sleep(0.1)
    pytest.fail(f"{identity} did not acquire within {timeout} s; last errors: {errors[-3:]}")


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_failover_that_loses_an_acquisition(
    redis_sentinel: RedisSentinelGroup, wait_replicas: int
) -> None:
    """The promoted replica never saw the last acquisition (replication cut just before it).

    Measured, wait_replicas=0: that term held token 2 on the old master; the new master's
    counter is still 1, and C never saw token 2 (it read only A's record), so C is handed
    token 2 again while the lease it replaces was never there: terms 1, 2, 2. With wait_replicas=1 the unconfirmed attempt is
    refused and given back, so nobody acts on it; the next term on the new master (once a
    replica is back to confirm it) is the first to act on a token above 1: terms 1, 2 (or
    1, 3 and so on if its own first attempts were refused too, under load). A run record
    that was confirmed survives the failover.
    """
    group = redis_sentinel
    url = f"{group.url}?wait_replicas={wait_replicas}&wait_timeout=0.3"
    backends = {who: backend_from_url(url) for who in ("a", "b", "c")}
    leases = {who: backend.lease(ELECTION) for who, backend in backends.items()}
    assert all(isinstance(lease, RedisLease) for lease in leases.values())
    terms: list[LeaseRecord] = []  # every term a candidate was told it holds
    try:
        first = await acquire_within(leases["a"], "a", 5)
        terms.append(first)
        run = JobRun(job="report", tick=TICK, fencing_token=1, identity="a", started_at=TICK, outcome="ok")
        await leases["a"].record_run(run)
        assert not (await leases["c"].try_acquire("c", LEASE, None)).acquired  # c's pool knows the old master
        await leases["a"].release(first)
        replica = group.replicas()[0]
        await until(
            lambda: replica.cli("GET", f"leaderlib:{ELECTION}").strip() == "", 5, "the release replicated"
        )

        old = await asyncio.to_thread(group.cut_replication)
        try:
            terms.append((await leases["b"].try_acquire("b", LEASE, None)).record)  # type: ignore[arg-type]
            refused = ""
        except BackendUnavailable as exc:
            refused = str(exc)
        assert old.cli("GET", f"leaderlib:{ELECTION}:fencing").strip() == "2"
        assert replica.cli("GET", f"leaderlib:{ELECTION}:fencing").strip() == "1"

        await asyncio.to_thread(group.kill_master)
        new = await asyncio.to_thread(group.wait_for_failover, old, 20)
        if wait_replicas:
            await asyncio.to_thread(group.restart, old)  # a replica again, to confirm the next term
        promoted_at = time.monotonic()
        terms.append(await acquire_within(leases["c"], "c", 20))
        acquired_after = time.monotonic() - promoted_at
        runs = await leases["c"].last_runs()
        if not refused:
            # b's term is not on the new master: b learns it at its next renewal.
            with pytest.raises(LeaseLost):
                await leases["b"].renew(terms[1])
    finally:
        for backend in backends.values():
            await backend.aclose()

    tokens = [term.fencing_token for term in terms]
    print(
        f"\nwait_replicas={wait_replicas}: terms {[(t.holder, t.fencing_token) for t in terms]}; "
        f"c acquired {acquired_after:.2f} s after the promotion; refused: {refused!r}"
    )
    assert new.cli("GET", f"leaderlib:{ELECTION}:fencing").strip() == str(tokens[-1])
    assert runs == {"report": run}
    if wait_replicas:
        assert "reached 0 of the 1 replicas" in refused
        # Every term anyone acted on has its own token. c's first attempts on the new master
        # may be refused too (its replica not yet caught up to confirm them): each burns a
        # token that nobody acts on, so c's token is 2 or higher, never a repeat.
        assert len(tokens) == 2 and tokens[0] == 1 and tokens[1] >= 2, tokens
    else:
        assert not refused
        assert tokens == [1, 2, 2], "the promoted replica's counter was behind: token 2 issued twice"

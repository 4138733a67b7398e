"""``redis+sentinel://`` on real Sentinels: a master failover while leaderlib leads (issue 14).

Each test gets a master, a replica and three Sentinels (quorum 2, down after
1 s: ``redis_sentinel``) and runs real electors on ``redis+sentinel://`` URLs
in this process. Terms are judged from the electors' own CLOCK_BOOTTIME
stamps: a term runs from its work's start to its work's cancellation (the
elector cancels it the moment the term ends, at the latest at its renew
deadline). No two terms may overlap.

The fencing token must grow across the failover: here the new master had
received the last acquisition's ``INCR`` before the old one died. When it has
not (replication is asynchronous), a token is issued twice: see
docs/backends/redis.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from leaderlib import LeaderElector, Leadership, backend_from_url
from leaderlib.testing.sentinel import RedisSentinelGroup
from tests.electing import config, until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ELECTION = "sentinel-cron"


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
        # The Sentinels turn the woken ex-master into a replica of the new one.
        deadline = time.monotonic() + 15
        while "role:slave" not in old.cli("INFO", "replication"):
            assert time.monotonic() < deadline, "the woken ex-master was never demoted"
            await asyncio.sleep(0.2)

    ledger.assert_no_overlap()
    tokens = [t.token for t in sorted(ledger.terms, key=lambda t: t.start)]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), ledger.terms
    print(
        f"\n{fault}: sentinel failover {promoted_at - killed_at:.2f} s after the fault; "
        f"old term ended {before.end - killed_at:+.2f} s; "
        f"no leader for {after.start - before.end:.2f} s; "
        f"new leader {after.start - killed_at:.2f} s after the fault; tokens {tokens}"
    )

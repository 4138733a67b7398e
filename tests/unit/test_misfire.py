"""Ticks that survive a failover: ``misfire_grace``, ``coalesce`` and the run record.

The planning rule (``plan_tick``) is checked on its own; the runtime on a fake
clock, with two replicas on one memory store: a leader is cut off from the
store (its handle's calls fail, as through a dead network), so the standby
takes over only once the lease has run out, and the ticks between were missed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter
from typing import Any

import pytest

from leaderlib import BackendUnavailable, ConfigError, JobContext, LeaseLost, Service
from leaderlib._ticks import plan_tick
from leaderlib._triggers import IntervalTrigger
from leaderlib.backends import Lease
from leaderlib.backends.memory import MemoryBackend

from .scripted import PausingClock, Raise, ScriptedBackend
from .test_runtime import W0, config, make_service, memory, serving, wall

EVERY_SECOND = IntervalTrigger(1.0)


# -- the plan -------------------------------------------------------------------------


def test_without_a_record_nothing_counts_as_missed() -> None:
    plan = plan_tick(EVERY_SECOND, None, wall(10.5), 5, coalesce=False)
    assert plan == dataclasses.replace(plan, tick=wall(11), late=False, misfired=0)


def test_missed_ticks_within_the_grace_run_late_in_order() -> None:
    plan = plan_tick(EVERY_SECOND, wall(10), wall(13.5), 5, coalesce=False)
    assert (plan.tick, plan.late, plan.misfired) == (wall(11), True, 0)


def test_coalesce_runs_only_the_latest_missed_tick() -> None:
    plan = plan_tick(EVERY_SECOND, wall(10), wall(13.5), 5, coalesce=True)
    assert (plan.tick, plan.late, plan.misfired, plan.latest_misfire) == (wall(13), True, 2, wall(12))


def test_ticks_beyond_the_grace_are_misfires() -> None:
    plan = plan_tick(EVERY_SECOND, wall(10), wall(20.5), 5, coalesce=False)
    # 11..15 are more than 5 s late; 16 is the oldest still within the grace.
    assert (plan.tick, plan.late, plan.misfired, plan.latest_misfire) == (wall(16), True, 5, wall(15))
    plan = plan_tick(EVERY_SECOND, wall(10), wall(20.5), 0, coalesce=False)
    assert (plan.tick, plan.late, plan.misfired) == (wall(21), False, 10)


def test_a_record_ahead_of_the_clock_is_planned_from() -> None:
    """A leader whose clock ran ahead ran up to tick 40: this replica waits for 41."""
    plan = plan_tick(EVERY_SECOND, wall(40), wall(12.5), 5, coalesce=False)
    assert (plan.tick, plan.late, plan.misfired) == (wall(41), False, 0)


def test_a_long_outage_is_counted_without_walking_every_tick() -> None:
    plan = plan_tick(EVERY_SECOND, wall(0), wall(86_400.5), 5, coalesce=False)
    assert plan.tick == wall(86_396) and plan.late
    assert plan.misfired == 10_000  # the count stops at MAX_COUNTED


# -- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"coalesce": True}, "coalesce=True needs misfire_grace"),
        ({"misfire_grace": -1}, "misfire_grace must be a finite number"),
        ({"misfire_grace": float("nan")}, "misfire_grace must be a finite number"),
        ({"misfire_grace": "5"}, "misfire_grace must be a finite number"),
        ({"misfire_grace": 5, "coalesce": "yes"}, "coalesce must be True or False"),
    ],
)
def test_bad_misfire_options_name_the_job(clock: PausingClock, options: dict[str, Any], message: str) -> None:
    service = make_service(clock, ScriptedBackend(clock))
    with pytest.raises(ConfigError, match=message) as caught:
        service.add_job(lambda: None, every=1, name="report", **options)
    assert "report" in str(caught.value)


# -- the runtime ----------------------------------------------------------------------


class SkewedClock:
    """The shared fake clock, with this replica's wall clock ``offset`` seconds off."""

    def __init__(self, clock: PausingClock) -> None:
        self._clock = clock
        self.offset = 0.0

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def wall(self) -> dt.datetime:
        return self._clock.wall() + dt.timedelta(seconds=self.offset)

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)


def cut_off(lease: Lease) -> None:
    """Every call of this replica's handle fails from now on, as through a dead network."""

    async def unavailable(*args: Any) -> Any:
        raise BackendUnavailable("cut off by the test", election=lease.election, backend="memory")

    for method in ("get", "try_acquire", "renew", "release", "record_run", "last_runs"):
        setattr(lease, method, unavailable)


Ledger = list[tuple[dt.datetime, str, int]]


def replica(clock: Any, backend: MemoryBackend, identity: str, ledger: Ledger, **job: Any) -> Service:
    service = Service("svc", backend=backend, config=config(identity), clock=clock)

    async def tick(context: JobContext) -> None:
        ledger.append((context.scheduled_at, context.identity, context.fencing_token))

    service.add_job(tick, every=1, **job)
    return service


def seconds_of(ledger: Ledger) -> list[float]:
    return [(tick - W0).total_seconds() for tick, _, _ in ledger]


async def test_ticks_missed_in_a_failover_run_late_once_with_the_new_token(clock: PausingClock) -> None:
    stores = memory(clock)
    ledger: Ledger = []
    a_backend = stores()
    a = replica(clock, a_backend, "a", ledger, misfire_grace=5)
    b = replica(clock, stores(), "b", ledger, misfire_grace=5)
    async with serving(a, clock), serving(b, clock):
        await clock.advance(10.5)
        assert a.is_leader
        cut_off(a_backend.lease("svc"))
        await clock.advance(10)
        assert b.is_leader and not a.is_leader
    ticks = seconds_of(ledger)
    assert sorted(ticks) == ticks, "late ticks run in order"
    assert Counter(ticks) == Counter(range(1, 21)), f"every tick exactly once: {ledger}"
    by_tick = {(tick - W0).total_seconds(): (who, token) for tick, who, token in ledger}
    assert by_tick[10] == ("a", 1) and by_tick[11] == ("b", 2), "the missed ticks carry b's token"
    runs = await stores().lease("svc").last_runs()
    assert runs["tick"].identity == "b" and runs["tick"].outcome == "ok"
    assert runs["tick"].next_tick == runs["tick"].tick + dt.timedelta(seconds=1)


async def test_without_misfire_grace_a_failover_loses_ticks_and_writes_nothing(clock: PausingClock) -> None:
    stores = memory(clock)
    ledger: Ledger = []
    a_backend = stores()
    a = replica(clock, a_backend, "a", ledger)
    b = replica(clock, stores(), "b", ledger)
    async with serving(a, clock), serving(b, clock):
        await clock.advance(10.5)
        cut_off(a_backend.lease("svc"))
        await clock.advance(10)
        assert b.is_leader
    ticks = seconds_of(ledger)
    assert len(ticks) == len(set(ticks)) and set(range(1, 21)) - set(ticks), "today's behaviour: ticks lost"
    assert await stores().lease("svc").last_runs() == {}


async def test_coalesce_runs_the_missed_ticks_once(clock: PausingClock) -> None:
    stores = memory(clock)
    ledger: Ledger = []
    a_backend = stores()
    a = replica(clock, a_backend, "a", ledger, misfire_grace=5, coalesce=True)
    b = replica(clock, stores(), "b", ledger, misfire_grace=5, coalesce=True)
    async with serving(a, clock), serving(b, clock):
        await clock.advance(10.5)
        cut_off(a_backend.lease("svc"))
        await clock.advance(10)
        assert b.is_leader
    ticks = seconds_of(ledger)
    first_of_b = next(i for i, (_, who, _) in enumerate(ledger) if who == "b")
    assert ticks[first_of_b - 1] == 10
    assert ticks[first_of_b] > 11, "the missed ticks were coalesced into the latest"
    assert len(ticks) == len(set(ticks))


async def test_a_leader_whose_clock_ran_ahead_is_never_doubled_by_the_next(clock: PausingClock) -> None:
    """Leader a's wall clock steps 20 s ahead; it runs those ticks early; after its failover,
    b (right clock) skips every tick a already ran."""
    stores = memory(clock)
    ledger: Ledger = []
    a_clock = SkewedClock(clock)
    a_backend = stores()
    a = replica(a_clock, a_backend, "a", ledger, misfire_grace=5)
    b = replica(clock, stores(), "b", ledger, misfire_grace=5)
    async with serving(a, clock), serving(b, clock):
        await clock.advance(10.5)
        a_clock.offset = 20.0
        await clock.advance(5)
        cut_off(a_backend.lease("svc"))
        await clock.advance(30)
        assert b.is_leader
    ticks = seconds_of(ledger)
    assert len(ticks) == len(set(ticks)), f"a tick ran twice: {Counter(ticks).most_common(3)}"
    last_of_a = max(t for t, (_, who, _) in zip(ticks, ledger, strict=True) if who == "a")
    first_of_b = min(t for t, (_, who, _) in zip(ticks, ledger, strict=True) if who == "b")
    assert last_of_a >= 30 and first_of_b == last_of_a + 1


async def test_a_run_is_recorded_at_its_start_and_its_end(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend)
    seen: list[dict[str, Any]] = []

    def report() -> None:  # a sync job, in its thread
        seen.append(dict(backend.runs["svc"]))

    service.add_job(report, every=10, misfire_grace=5)
    async with serving(service, clock):
        await clock.advance(10)
        for _ in range(200):
            if backend.runs["svc"]["report"].outcome is not None:
                break
            await asyncio.sleep(0.005)
    (during,) = seen
    assert during["report"].outcome is None and during["report"].tick == wall(10)
    done = backend.runs["svc"]["report"]
    assert done.outcome == "ok" and done.duration is not None and done.fencing_token == 1
    writes = backend.calls_to("record_run")
    assert [call.args[0].outcome for call in writes] == [None, "ok"]


async def test_a_tick_whose_start_cannot_be_recorded_is_not_run(clock: PausingClock) -> None:
    """The store refuses the start (another term is current): the job is not called."""
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend)
    ran: list[dt.datetime] = []

    async def report(context: JobContext) -> None:
        ran.append(context.scheduled_at)

    service.add_job(report, every=10, misfire_grace=5)
    async with serving(service, clock):
        await clock.advance(5)
        assert service.is_leader
        # A new term the elector has not seen yet, as the store judges it.
        backend.script("record_run", Raise(LeaseLost), times=None)
        await clock.advance(5.1)
    assert ran == []
    assert len(backend.calls_to("record_run")) == 1, "a refusal is not retried"
    assert "report" not in backend.runs.get("svc", {})


async def test_a_store_blip_delays_the_start_but_the_tick_runs(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend)
    ran: list[float] = []

    async def report(context: JobContext) -> None:
        ran.append(clock.monotonic())

    service.add_job(report, every=10, misfire_grace=5)
    backend.script("record_run", Raise(BackendUnavailable), times=2)
    async with serving(service, clock):
        start = clock.monotonic()
        await clock.advance(11)
    assert len(ran) == 1 and 10 < ran[0] - start < 10.5
    assert backend.runs["svc"]["report"].tick == wall(10)


async def test_the_tick_that_comes_due_during_the_catch_up_is_not_skipped(clock: PausingClock) -> None:
    """Late runs back to back make the next on-time tick find the job busy; that tick is
    part of the catch-up, not an overlap to skip (overlap="skip", the default)."""
    stores = memory(clock)
    ledger: Ledger = []
    a_backend = stores()
    services = []
    for identity, backend in (("a", a_backend), ("b", stores())):
        service = Service("svc", backend=backend, config=config(identity), clock=clock)

        async def tick(context: JobContext) -> None:
            ledger.append((context.scheduled_at, context.identity, context.fencing_token))
            await clock.sleep(0.4)  # late runs one after another spill past the next tick

        service.add_job(tick, every=1, misfire_grace=5)
        services.append(service)
    a, b = services
    async with serving(a, clock), serving(b, clock):
        await clock.advance(10.5)
        cut_off(a_backend.lease("svc"))
        await clock.advance(12)
        assert b.is_leader
    ticks = seconds_of(ledger)
    assert Counter(ticks) == Counter(range(1, 23)), f"every tick exactly once: {ticks}"

"""The system clock counts the time a host spends suspended (issue 9, item 2).

A suspend is simulated as the kernel shows it to a process: the boot-time
clock (CLOCK_BOOTTIME) jumps ahead while CLOCK_MONOTONIC, and so every
asyncio timer, stands still.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import leaderlib._clock as clock_module
from leaderlib import Clock, FakeClock, LeaseRecord, NotLeader, SystemClock
from leaderlib._clock import sleep_until_woken, wait_for
from leaderlib._elector import Leadership


class Suspends:
    """The real boot-time clock plus the time spent in simulated suspends."""

    def __init__(self) -> None:
        self.suspended = 0.0
        self._real = clock_module.boottime

    def __call__(self) -> float:
        return self._real() + self.suspended

    def suspend(self, seconds: float) -> None:
        """The host sleeps ``seconds``: only the boot-time clock moves."""
        self.suspended += seconds


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Suspends:
    suspends = Suspends()
    monkeypatch.setattr(clock_module, "boottime", suspends)
    return suspends


def test_boottime_is_clock_boottime_where_linux_has_it() -> None:
    # Where the OS has no CLOCK_BOOTTIME, boottime() is time.monotonic().
    source = getattr(time, "CLOCK_BOOTTIME", None)

    def read() -> float:
        return time.clock_gettime(source) if source is not None else time.monotonic()

    before = read()
    reading = clock_module.boottime()
    assert before <= reading <= read()


def test_system_clock_counts_a_suspend_that_time_monotonic_does_not(host: Suspends) -> None:
    clock = SystemClock()
    before, monotonic_before = clock.monotonic(), time.monotonic()
    host.suspend(30.0)
    assert clock.monotonic() - before >= 30.0
    assert time.monotonic() - monotonic_before < 1.0, "CLOCK_MONOTONIC stood still"


def test_a_term_is_over_when_the_host_wakes_from_a_suspend_past_its_deadline(host: Suspends) -> None:
    """The regression: after a suspend longer than the lease, the woken ex-leader's
    leadership must read as ended before it acts on it again."""
    clock = SystemClock()
    record = LeaseRecord(election="e", holder="me", lease_duration=2.0, fencing_token=7, version="1")
    leadership = Leadership(record=record, valid_until=clock.monotonic() + 1.5, clock=clock)
    assert leadership.is_valid()
    host.suspend(10.0)
    assert not leadership.is_valid(), "a woken ex-leader believed its term still valid"
    with pytest.raises(NotLeader):
        leadership.check()


async def test_a_sleep_ends_soon_after_a_suspend_passes_its_end(host: Suspends) -> None:
    """asyncio sleeps on CLOCK_MONOTONIC; SystemClock.sleep re-reads the boot-time clock
    at least once a second, so a sleep past which the host was suspended ends within
    about a second of waking, not a whole sleep later."""
    clock = SystemClock()
    sleeping = asyncio.create_task(clock.sleep(5.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    host.suspend(10.0)
    await asyncio.wait_for(sleeping, timeout=3.0)
    assert time.monotonic() - started < 1.5


async def test_a_wait_for_deadline_passed_during_a_suspend_ends_soon_after_waking(host: Suspends) -> None:
    """wait_for arms loop timers (CLOCK_MONOTONIC) but keeps its deadline on the boot-time
    clock: a deadline that a suspend passed ends within about a slice of waking."""
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(wait_for(SystemClock(), never, 5.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    host.suspend(10.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting, timeout=3.0)
    assert time.monotonic() - started < 1.5
    assert never.cancelled()


@pytest.mark.parametrize("clock", [SystemClock(), FakeClock()], ids=["system", "fake"])
async def test_wait_for_awaits_in_the_calling_task(clock: Clock) -> None:
    """No task per call: the awaitable runs in the caller's task (and context)."""
    caller = asyncio.current_task()

    async def which_task() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    assert await wait_for(clock, which_task(), 1.0) is caller


async def test_wait_for_times_out_on_the_system_clock_even_if_the_work_turns_cancellation_into_an_error() -> (
    None
):
    async def driver() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed") from None  # as some drivers do

    with pytest.raises(TimeoutError):
        await wait_for(SystemClock(), driver(), 0.01)
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_wait_for_passes_on_a_cancellation_from_outside() -> None:
    waiting = asyncio.create_task(wait_for(SystemClock(), asyncio.sleep(10), 5.0))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_wait_for_on_a_fake_clock_ends_when_the_clock_passes_the_deadline() -> None:
    clock = FakeClock()
    waiting = asyncio.create_task(wait_for(clock, asyncio.Event().wait(), 2.0))
    await clock.advance(1.999)
    assert not waiting.done()
    await clock.advance(0.001)
    with pytest.raises(TimeoutError):
        await waiting


@pytest.mark.parametrize("clock", [SystemClock(), FakeClock()], ids=["system", "fake"])
async def test_sleep_until_woken_ends_early_when_woken_and_on_time_otherwise(clock: Clock) -> None:
    """The renew loop's wait: woken (the elector stops) it returns at once; else after ``seconds``."""
    loop = asyncio.get_running_loop()
    wakeup: asyncio.Future[None] = loop.create_future()
    sleeping = asyncio.create_task(sleep_until_woken(clock, 30.0, wakeup))
    await asyncio.sleep(0)
    wakeup.set_result(None)
    await asyncio.wait_for(sleeping, 1.0)
    started = clock.monotonic()
    sleeping = asyncio.create_task(sleep_until_woken(clock, 0.05, loop.create_future()))
    if isinstance(clock, FakeClock):
        await clock.advance(0.049)
        assert not sleeping.done()
        await clock.advance(0.001)
    await asyncio.wait_for(sleeping, 1.0)
    assert clock.monotonic() - started >= 0.05 - 1e-9

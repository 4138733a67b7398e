"""The system clock counts the time a host spends suspended (issue 9, item 2).

A suspend is simulated as the kernel shows it to a process: the boot-time
clock (CLOCK_BOOTTIME) jumps ahead while CLOCK_MONOTONIC, and so every
asyncio timer, stands still.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import leaderlib._clock as clock_module
from leaderlib import LeaseRecord, NotLeader, SystemClock
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

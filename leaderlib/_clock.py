"""Time, passed in so the election algorithm can be tested deterministically.

The elector reads only ``monotonic()`` to make safety decisions; ``wall()`` is
for the human-readable times written into lease records and for naming
scheduled ticks.

"Monotonic" here means a clock that also counts the time a host spends
suspended: ``CLOCK_BOOTTIME`` on Linux. Python's ``time.monotonic()`` is
``CLOCK_MONOTONIC``, which stands still while a Linux host (or, depending on
the hypervisor, a VM) is suspended, so a leader woken after a suspend longer
than its lease would believe its term still valid while another replica
leads. Where ``CLOCK_BOOTTIME`` is missing, ``time.monotonic()`` is used:
on Windows it counts suspended time; on macOS it does not, and there a
woken ex-leader's late actions are stopped only by fencing tokens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

__all__ = ["Clock", "FakeClock", "SystemClock", "boottime", "wait_for"]

T = TypeVar("T")


class Clock(Protocol):
    """What the elector needs to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards and counts suspended time
        (not comparable across hosts)."""
        ...

    def wall(self) -> dt.datetime:
        """The current UTC time, for records that humans and client-go read."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep on this clock."""
        ...


_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def boottime() -> float:
    """Seconds on the host-wide clock that counts suspended time (``CLOCK_BOOTTIME``).

    Shared by every process on the host and never stepped with the wall
    clock; ``time.monotonic()`` where the OS has no ``CLOCK_BOOTTIME``.
    """
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


#: The longest one asyncio sleep lasts inside :meth:`SystemClock.sleep`. asyncio
#: sleeps on CLOCK_MONOTONIC, which stands still during a host suspend: a
#: sleep is cut into slices and the boot-time clock read after each, so a
#: woken host overshoots a deadline by at most one slice.
_SLEEP_SLICE = 1.0


class SystemClock:
    """The real clocks: :func:`boottime` for deadlines, UTC for the wall."""

    def monotonic(self) -> float:
        return boottime()

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep until ``seconds`` have passed on the boot-time clock."""
        until = boottime() + seconds
        while (remaining := until - boottime()) > 0:
            await asyncio.sleep(min(remaining, _SLEEP_SLICE))
        if seconds <= 0:
            await asyncio.sleep(0)


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers wake in deadline order as time passes them; between wake-ups the
    event loop runs so that woken tasks act before time moves on.
    """

    def __init__(self, start: float = 1000.0, wall_start: dt.datetime | None = None) -> None:
        self._now = start
        self._start = start
        self._wall_start = wall_start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> dt.datetime:
        return self._wall_start + dt.timedelta(seconds=self._now - self._start)

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (negative: back), as NTP or ``date -s`` does.

        Monotonic time and its sleepers are untouched: only ``wall()`` jumps.
        """
        self._wall_start += dt.timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def settle(self) -> None:
        """Let every runnable task run until all are blocked (on this clock or I/O)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in order and letting them run."""
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not future.done():
                future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()


async def wait_for(clock: Clock, awaitable: Awaitable[T], timeout: float) -> T:
    """Await ``awaitable``, cancelling it when ``timeout`` passes on ``clock``.

    Raises ``TimeoutError`` like ``asyncio.wait_for``; unlike it, the deadline
    is measured on the given clock, so a fake clock drives it in tests.
    """
    work = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(timeout))
    try:
        done, _ = await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        timer.cancel()
        raise
    timer.cancel()
    if work in done:
        return work.result()
    work.cancel()
    try:
        await work
    except asyncio.CancelledError:
        pass
    except Exception:
        pass
    raise TimeoutError(f"no answer within {timeout:.3f}s")

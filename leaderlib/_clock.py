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

__all__ = ["Clock", "FakeClock", "SystemClock", "boottime", "sleep_until_woken", "wait_for"]

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


#: The longest one loop timer lasts inside a boot-time deadline (see :class:`_Alarm`).
#: asyncio's timers run on CLOCK_MONOTONIC, which stands still during a host
#: suspend: a deadline is cut into slices and the boot-time clock read after
#: each, so a woken host overshoots a deadline by at most one slice.
_SLEEP_SLICE = 1.0


class SystemClock:
    """The real clocks: :func:`boottime` for deadlines, UTC for the wall."""

    def monotonic(self) -> float:
        return boottime()

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep until ``seconds`` have passed on the boot-time clock."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await sleep_until_woken(self, seconds, asyncio.get_running_loop().create_future())


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
    """Await ``awaitable`` in the calling task, cancelling it when ``timeout`` passes on ``clock``.

    Raises ``TimeoutError`` like ``asyncio.wait_for``, also when the cancelled
    awaitable turned its cancellation into another error (some drivers do);
    unlike it, the deadline is measured on ``clock``, so a fake clock drives it
    in tests. No task is made per call: the awaitable runs inline under an
    ``asyncio.timeout`` scope that an :class:`_Expiry` expires.
    """
    scope = asyncio.timeout(None)
    try:
        async with scope:
            expiry = _Expiry(clock, timeout, scope)
            try:
                return await awaitable
            finally:
                expiry.cancel()
    except Exception as exc:
        if scope.expired():
            raise TimeoutError(f"no answer within {timeout:.3f}s") from exc
        raise


async def sleep_until_woken(clock: Clock, seconds: float, wakeup: asyncio.Future[None]) -> None:
    """Sleep ``seconds`` on ``clock``, or until ``wakeup`` is done (by whoever holds it), if sooner.

    The sleep completes ``wakeup`` itself when it ends: no task, no
    cancellation and no exception when it ends by time, which is how a
    term's renew loop sleeps between renewals (thousands of elections in one
    process each do, every renew interval).
    """
    alarm = _Wakeup(clock, seconds, wakeup)
    try:
        await wakeup
    finally:
        alarm.cancel()


class _Alarm:
    """Calls :meth:`ring` once ``seconds`` pass on ``clock``, unless cancelled first.

    On :class:`SystemClock` the deadline is kept on the boot-time clock with
    loop timers alone: the loop's clock (CLOCK_MONOTONIC) runs at the boot-time
    clock's rate while the host is awake and stands still while it is
    suspended, so the last slice (at most :data:`_SLEEP_SLICE`) is one loop
    timer and, before that, the boot-time clock is re-read every slice. A
    deadline overshoots by at most one slice after a suspend, and one of a few
    milliseconds costs one loop timer. Any other clock (a test's) rings from a
    task sleeping on that clock. A subclass says what ringing does (few
    objects per alarm: thousands of elections each keep one or two).
    """

    __slots__ = ("_handle", "_loop", "_sleeper", "_until")

    def __init__(self, clock: Clock, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._sleeper: asyncio.Task[None] | None = None
        if isinstance(clock, SystemClock):
            self._until = boottime() + seconds
            self._arm()
        else:
            self._sleeper = self._loop.create_task(clock.sleep(seconds))
            self._sleeper.add_done_callback(self._slept)

    def ring(self) -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        remaining = self._until - boottime()
        if remaining <= _SLEEP_SLICE:
            self._handle = self._loop.call_at(self._loop.time() + remaining, self._rang)
        else:
            self._handle = self._loop.call_at(self._loop.time() + _SLEEP_SLICE, self._arm)

    def _rang(self) -> None:
        self._handle = None
        self.ring()

    def _slept(self, sleeper: asyncio.Task[None]) -> None:
        # Scheduled when the sleep ended: the alarm may have been cancelled meanwhile.
        if self._sleeper is sleeper and not sleeper.cancelled():
            self._sleeper = None
            self.ring()

    def cancel(self) -> None:
        """The wait ended otherwise: stop watching the clock."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._sleeper is not None:
            self._sleeper.cancel()
            self._sleeper = None


class _Expiry(_Alarm):
    """Expires an entered ``asyncio.timeout`` scope (:func:`wait_for`'s deadline)."""

    __slots__ = ("_scope",)

    def __init__(self, clock: Clock, seconds: float, scope: asyncio.Timeout) -> None:
        self._scope = scope
        super().__init__(clock, seconds)

    def ring(self) -> None:
        self._scope.reschedule(self._loop.time())


class _Wakeup(_Alarm):
    """Completes a future (:func:`sleep_until_woken`'s wake-up)."""

    __slots__ = ("_future",)

    def __init__(self, clock: Clock, seconds: float, future: asyncio.Future[None]) -> None:
        self._future = future
        super().__init__(clock, seconds)

    def ring(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

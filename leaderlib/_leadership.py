"""One term as leader, as the leader's work sees it, and the elector's callbacks' types.

A :class:`Leadership` is what an elector hands its ``on_started_leading``
callback (and the runtime hands each job run, through its ``JobContext``):
the term's fencing token, a ``lost`` event set the moment the term ends, and
a validity check against this process's monotonic clock, which a paused
process fails on waking.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ._clock import Clock
from ._errors import NotLeader
from .backends import LeaseRecord

__all__ = ["Leadership", "LeadingCallback", "NewLeaderCallback", "StoppedCallback"]

#: Guards every term's ending against a thread making its wait_lost() event.
_FLAG_LOCK = threading.Lock()


class Leadership:
    """One term as leader, handed to the leader's work.

    ``lost`` is set the moment the term ends (renewal failed, deadline passed,
    lease taken, shutdown); async work is cancelled at the same moment. Sync
    work in threads checks :meth:`is_valid` or waits on :meth:`wait_lost`.
    """

    def __init__(self, *, record: LeaseRecord, valid_until: float, clock: Clock) -> None:
        self.election = record.election
        self.identity = record.holder
        self.fencing_token = record.fencing_token
        self.record = record
        self.valid_until = valid_until
        """Monotonic time at which this term ends unless renewed."""
        self.lost = asyncio.Event()
        self._ended = False
        # For threads that wait_lost(): made on first use, as few terms have one
        # and a process may hold thousands of terms (each object costs the
        # garbage collector on every full pass).
        self._lost_flag: threading.Event | None = None
        self._clock = clock

    def is_valid(self) -> bool:
        """True while the term lasts: not ended and its deadline not passed on this clock."""
        return not self._ended and self._clock.monotonic() < self.valid_until

    def check(self) -> None:
        """Raise :class:`NotLeader` unless the term is still valid.

        Call this before an action that must happen at most once per tick, in
        particular after anything that may have paused the process.
        """
        if not self.is_valid():
            raise NotLeader("leadership has ended; do not act on it", election=self.election, backend=None)

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block a thread until the term ends; True if it did within ``timeout``."""
        with _FLAG_LOCK:
            if self._lost_flag is None:
                self._lost_flag = threading.Event()
                if self._ended:
                    self._lost_flag.set()
            flag = self._lost_flag
        return flag.wait(timeout)

    def _renewed(self, record: LeaseRecord, valid_until: float) -> None:
        self.record = record
        self.valid_until = valid_until

    def _end(self) -> None:
        with _FLAG_LOCK:
            self._ended = True
            if self._lost_flag is not None:
                self._lost_flag.set()
        self.lost.set()


LeadingCallback = Callable[[Leadership], Coroutine[Any, Any, None]]
StoppedCallback = Callable[[Leadership], Awaitable[None] | None]
NewLeaderCallback = Callable[[str | None], Awaitable[None] | None]

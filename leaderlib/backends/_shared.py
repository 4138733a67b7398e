"""Pieces that several backends share."""

from __future__ import annotations

import asyncio
import threading


class ChangeNotifier:
    """Wakes every watcher of an election, from any thread and any event loop.

    The memory and SQLite backends can be used by several event loops at once
    (the sync facade runs one per thread), so a plain ``asyncio.Event`` would
    not do: each waiter registers its own loop's event.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def subscribe(self, election: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(election, set()).add(waiter)
        return waiter

    def unsubscribe(self, election: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.get(election, set()).discard(waiter)

    def notify(self, election: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(election, ()))
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

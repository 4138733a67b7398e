"""The blocking facade: the asyncio core in a background thread.

There is one election loop, the async one; this only gives it a thread and
an event loop of its own, for programs that are not written with asyncio
(a Flask app, a Celery worker, a script).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Protocol

from ._runtime import Service

__all__ = ["BackgroundService", "Runnable"]


class Runnable(Protocol):
    """Anything with the core's run/stop shape: :class:`Service` and :class:`LeaderElector`."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def is_leader(self) -> bool: ...


class BackgroundService:
    """Runs a :class:`Service` (or a :class:`LeaderElector`) in a daemon thread.

    ::

        runner = BackgroundService(service).start()
        ...
        runner.is_leader        # read from any thread
        runner.stop()           # graceful: waits for running jobs, releases the lease
    """

    def __init__(self, target: Runnable | Service) -> None:
        self.target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> BackgroundService:
        """Start the thread and return at once; the target campaigns in the background."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._main, name="leaderlib", daemon=True)
        self._thread.start()
        self._started.wait()
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        task = loop.create_task(self.target.run())
        self._started.set()
        try:
            loop.run_until_complete(task)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def is_leader(self) -> bool:
        """True while the target leads (a plain attribute read; safe from any thread)."""
        return self.target.is_leader

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully and wait for the thread (up to ``timeout`` seconds)."""
        if self._loop is None or self._thread is None:
            return
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.target.stop)
        self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the target's run ends (it raised, or was stopped)."""
        if self._thread is not None:
            self._thread.join(timeout)

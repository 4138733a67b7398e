"""The blocking facade: the asyncio core in a background thread.

There is one election loop, the async one; this only gives it a thread and
an event loop of its own, for programs that are not written with asyncio
(a Flask app, a Celery worker, a script).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
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

    What ended the target's run reaches the caller: an error on its first step
    (no jobs, a bad backend URL or option) is raised by :meth:`start`; one
    later, by :meth:`join` and :meth:`stop`.
    """

    def __init__(self, target: Runnable | Service) -> None:
        self.target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._ended_at_once = False

    def start(self) -> BackgroundService:
        """Start the thread; return once the target's run has taken its first step.

        Raises what that first step raised (a :class:`ConfigError`, say); after
        that the target campaigns in the background.
        """
        if self._thread is not None:
            raise RuntimeError("already started")
        self._future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name="leaderlib", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._ended_at_once:
            self._thread.join()  # the run is over: its error is in the future once the thread ends
            self._raise_if_failed()
        return self

    def _main(self) -> None:
        assert self._future is not None
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        task = loop.create_task(self.target.run())

        def first_step_ran() -> None:
            # Queued after the task's first step: start() learns whether that step failed.
            self._ended_at_once = task.done()
            self._started.set()

        loop.call_soon(first_step_ran)
        try:
            loop.run_until_complete(task)
        except BaseException as exc:  # handed to the caller by start(), join() or stop()
            self._future.set_exception(exc)
        else:
            self._future.set_result(None)
        finally:
            self._started.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _raise_if_failed(self) -> None:
        if self._future is not None and self._future.done():
            error = self._future.exception()
            if error is not None:
                raise error

    @property
    def is_leader(self) -> bool:
        """True while the target leads (a plain attribute read; safe from any thread)."""
        return self.target.is_leader

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully and wait for the thread (up to ``timeout`` seconds).

        Raises what ended the target's run, if it raised."""
        if self._loop is None or self._thread is None:
            return
        # The loop may close between the check and the call: then it has stopped anyway.
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.target.stop)
        self._thread.join(timeout)
        self._raise_if_failed()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the target's run ends (it raised, or was stopped); raise what it raised."""
        if self._thread is not None:
            self._thread.join(timeout)
        self._raise_if_failed()

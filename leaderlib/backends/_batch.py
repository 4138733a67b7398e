"""Requests of many elections that are due together, sent to the store together.

A backend object serving thousands of elections gets their renewals (and,
at start-up, their acquisitions) a few at a time or all at once. Sent one
request per round trip, each costs the client a round trip's worth of work
(and, with a pool of connections, a wait for one); sent together, a store
that takes several requests per round trip (a Redis pipeline, an etcd
transaction of transactions) answers them all for little more than one.

:class:`Batcher` keeps one batch in flight per backend object: while it is
out, new requests queue, and the next batch takes them all (up to
``limit``). An idle backend sends a lone request at once, in its caller's
task (:meth:`Batcher.call`): no task, no hop through the event loop, so a
single election's request costs what the driver's call costs; a busy one
sends bigger batches, which is what keeps it from falling behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclasses.dataclass(eq=False)
class _Queued(Generic[Request, Result]):
    request: Request
    future: asyncio.Future[Result]


class Batcher(Generic[Request, Result]):
    """Sends queued requests in batches of at most ``limit``, one batch at a time.

    ``send(requests)`` makes one round trip for the batch and returns one
    outcome per request, in order: a result, or the exception that request
    alone gets. If ``send`` raises, every request of the batch gets that
    exception. A caller that stops waiting (cancelled: its deadline passed)
    leaves the queue; one whose request went out already is not waited for.
    """

    def __init__(
        self, send: Callable[[Sequence[Request]], Awaitable[Sequence[Result | Exception]]], *, limit: int
    ) -> None:
        self._send = send
        self._limit = limit
        self._queue: list[_Queued[Request, Result]] = []
        self._sender: asyncio.Task[None] | None = None
        self._inline = False  # a lone request is out in its caller's task (call())

    async def call(self, request: Request) -> Result:
        """``request``'s result (or raise the error it got): sent at once, in the calling
        task, if no batch is out or queued; otherwise in the next batch (:meth:`submit`).

        Requests queued while the lone one is out go in a batch once it is
        answered. A caller cancelled while its lone request is out cancels
        the driver's call (as a direct call would be); a cancellation the
        driver lost (redis-py under Python 3.11's ``wait_for``) is raised
        here once the call returns.
        """
        if self._sender is not None or self._inline or self._queue:
            return await self.submit(request)
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        self._inline = True
        try:
            outcomes = await self._send([request])
        finally:
            self._inline = False
            if self._queue and self._sender is None:
                self._sender = asyncio.get_running_loop().create_task(self._drain(), name="leaderlib-batch")
        if task is not None and task.cancelling() > cancelling:
            raise asyncio.CancelledError()
        outcome = outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def submit(self, request: Request) -> asyncio.Future[Result]:
        """Queue ``request`` for the next batch; its future result (or the error it got).

        Cancelling the future (its caller's deadline passed) takes the request
        out of the queue if it has not gone out yet.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append(_Queued(request, future))
        if self._sender is None and not self._inline:
            self._sender = loop.create_task(self._drain(), name="leaderlib-batch")
        return future

    async def _drain(self) -> None:
        """Send batches until the queue is empty; if cancelled (aclose), fail what is left."""
        batch: list[_Queued[Request, Result]] = []
        try:
            while self._queue:
                taken, self._queue = self._queue[: self._limit], self._queue[self._limit :]
                batch = [queued for queued in taken if not queued.future.done()]
                if not batch:
                    continue
                outcomes: Sequence[Result | Exception]
                try:
                    outcomes = await self._send([queued.request for queued in batch])
                except Exception as exc:
                    outcomes = [exc] * len(batch)
                for queued, outcome in zip(batch, outcomes, strict=True):
                    if queued.future.done():
                        continue  # its caller stopped waiting
                    if isinstance(outcome, Exception):
                        queued.future.set_exception(outcome)
                    else:
                        queued.future.set_result(outcome)
                batch = []
        finally:
            self._sender = None
            left, self._queue = batch + self._queue, []
            for queued in left:
                if not queued.future.done():
                    queued.future.set_exception(ConnectionError("the backend was closed"))

    async def aclose(self) -> None:
        """Stop sending: requests still queued or in flight fail with ConnectionError."""
        sender = self._sender
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

"""One pub/sub connection per backend object, shared by every election's watches.

:class:`Subscriber` opens the connection on the first watch, runs one reader
task, SUBSCRIBEs a channel when its first watcher arrives and UNSUBSCRIBEs it
when its last one leaves, and hands each message to the watchers of its
channel. It never reconnects behind the watchers' backs: a dropped
subscription may have missed a release, so when the connection breaks every
live watcher gets the error (its elector falls back to polling) and the next
watch opens a new connection (with Sentinel, to the master of the moment:
the connection comes from the backend's Sentinel-managed pool).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from ..._logging import get_logger

__all__ = ["Subscriber", "Watcher"]

logger = get_logger(__name__)

#: What a watcher's queue holds: a message's data, or the error that ended the connection.
Item = bytes | BaseException


class Watcher:
    """One watch's share of the subscription: the messages of its channel, in order."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[Item] = asyncio.Queue()


class Subscriber:
    """The backend's one pub/sub connection and its reader task (see the module docstring)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchers: dict[str, set[Watcher]] = {}
        # Channels subscribed on the current connection, and the confirmations awaited.
        self._subscribed: set[str] = set()
        self._confirming: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()

    @property
    def channels(self) -> frozenset[str]:
        """The channels with at least one live watcher."""
        return frozenset(self._watchers)

    async def add(self, channel: str) -> Watcher:
        """Join ``channel``; return once Redis has confirmed the subscription.

        Confirmed, not just sent: a message published after this returns is
        heard, so a release between this and the watch's first read is not lost.
        """
        watcher = Watcher(channel)
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
                self._subscribed.clear()
            pubsub = self._pubsub
            self._watchers.setdefault(channel, set()).add(watcher)
            confirmed = self._confirming.get(channel)
            if channel not in self._subscribed:
                try:
                    confirmed = self._confirming[channel] = asyncio.get_running_loop().create_future()
                    await pubsub.subscribe(channel)
                except BaseException:
                    self._confirming.pop(channel, None)
                    self._leave(watcher)
                    if not self._subscribed and self._reader is None:
                        self._pubsub = None
                        await self._close(pubsub)
                    raise
                self._subscribed.add(channel)
                if self._reader is None:
                    self._reader = asyncio.create_task(self._read(pubsub), name="leaderlib-redis-pubsub")
        if confirmed is not None:
            try:
                await asyncio.shield(confirmed)
            except BaseException:
                await self.remove(watcher)
                raise
        return watcher

    async def remove(self, watcher: Watcher) -> None:
        """Leave; UNSUBSCRIBE the channel if that was its last watcher."""
        channel = watcher.channel
        if not self._leave(watcher):
            return
        async with self._lock:
            pubsub = self._pubsub
            if channel in self._watchers or channel not in self._subscribed or pubsub is None:
                return
            self._subscribed.discard(channel)
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe(channel)

    def _leave(self, watcher: Watcher) -> bool:
        """Forget ``watcher``; True if its channel has no watcher left."""
        watchers = self._watchers.get(watcher.channel)
        if watchers is None:
            return False
        watchers.discard(watcher)
        if watchers:
            return False
        del self._watchers[watcher.channel]
        return True

    async def _read(self, pubsub: PubSub) -> None:
        """Dispatch messages by channel until the connection breaks, then fail every watcher."""
        error: BaseException = ConnectionError("the pub/sub reader ended")
        try:
            while True:
                message: dict[str, Any] | None = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind, channel = message["type"], message["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                if kind == "message":
                    for watcher in self._watchers.get(name, ()):
                        watcher.queue.put_nowait(message["data"])
                elif kind == "subscribe":
                    confirmed = self._confirming.pop(name, None)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
        except asyncio.CancelledError as exc:
            error = exc
            raise
        except Exception as exc:  # the connection broke: every watcher must know
            error = exc
            logger.debug("redis pub/sub connection lost", extra={"error": str(exc)})
        finally:
            self._broken(pubsub, error)
            await self._close(pubsub)

    def _broken(self, pubsub: PubSub, error: BaseException) -> None:
        """Hand ``error`` to every watcher and pending confirmation; the next add() reconnects."""
        if self._pubsub is pubsub:
            self._pubsub = None
            self._reader = None
            self._subscribed.clear()
        for confirmed in self._confirming.values():
            if not confirmed.done():
                confirmed.set_exception(
                    error if isinstance(error, Exception) else ConnectionError(str(error))
                )
                confirmed.exception()  # mark retrieved: a waiter may have been cancelled
        self._confirming.clear()
        watchers, self._watchers = self._watchers, {}
        for group in watchers.values():
            for watcher in group:
                watcher.queue.put_nowait(error)

    async def _close(self, pubsub: PubSub) -> None:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        """Stop the reader and close the connection; live watchers get an error."""
        reader = self._reader
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        elif self._pubsub is not None:
            await self._close(self._pubsub)
            self._pubsub = None

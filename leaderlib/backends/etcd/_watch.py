"""One gRPC Watch stream per backend, shared by every election's waits.

etcd multiplexes watchers on a bidirectional stream: each create request
carries a ``watch_id`` chosen here, every response names the watcher it is
for. A wait subscribes its targets, a reader task hands each response to the
subscription whose watcher it names, and the subscription cancels its
watchers when it ends (renewals seen meanwhile cost no re-registration).
A broken stream fails every pending wait with :class:`BackendUnavailable`;
the next wait opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc  # type: ignore[import-untyped]  # no stubs in the venv; pyproject lists aetcd only
from aetcd import rpc

from ..._errors import AccessDenied, BackendError, BackendUnavailable
from ..._logging import get_logger
from ._channel import Channel
from ._client import Client
from ._grpc_errors import ERRORS, At

__all__ = ["SharedWatch", "Subscription", "Target"]

logger = get_logger("leaderlib.backends.etcd")

Target = tuple[bytes, bytes | None, int]
"""What one watcher watches: key, range end (None: the key alone), start revision."""


class Subscription:
    """One wait's watchers on the shared stream; their responses, in order."""

    def __init__(self, election: str | None) -> None:
        self.election = election
        self.stream: _Stream | None = None
        self.ids: list[int] = []
        self._responses: asyncio.Queue[list[Any] | BackendError] = asyncio.Queue()

    def put(self, item: list[Any] | BackendError) -> None:
        self._responses.put_nowait(item)

    async def next(self, queued: asyncio.Event) -> list[Any]:
        """The next events on any target, or [] once ``queued`` is set or history was compacted.

        Raises :class:`BackendUnavailable` if the stream broke.
        """
        if self._responses.empty():
            getting = asyncio.ensure_future(self._responses.get())
            waiting = asyncio.ensure_future(queued.wait())
            try:
                await asyncio.wait((getting, waiting), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                getting.cancel()
            if not getting.done() or getting.cancelled():
                return []
            item = getting.result()
        else:
            item = self._responses.get_nowait()
        if isinstance(item, BackendError):
            self.put(item)  # the stream stays broken for this subscription
            raise item
        return item


@dataclasses.dataclass(eq=False)
class _Stream:
    client: Client
    call: Any
    reader: asyncio.Task[None] | None = None
    broken: bool = False


class SharedWatch:
    """The backend's one Watch stream and the waits registered on it."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._stream: _Stream | None = None
        self._subs: dict[int, Subscription] = {}
        self._next_id = 1  # 0 asks etcd to choose
        self._lock = asyncio.Lock()  # one write at a time on the stream
        self._chores: set[asyncio.Task[None]] = set()
        self.streams_opened = 0
        """How many Watch streams this backend has opened (one, unless one broke)."""

    @contextlib.asynccontextmanager
    async def subscribe(self, election: str | None, targets: list[Target]) -> AsyncIterator[Subscription]:
        """Register a watcher per target on the shared stream; cancel them on exit."""
        sub = Subscription(election)
        try:
            async with self._lock:
                stream = sub.stream = await self._open(election)
                for key, range_end, start_revision in targets:
                    watch_id = self._next_id
                    self._next_id += 1
                    self._subs[watch_id] = sub
                    sub.ids.append(watch_id)
                    create = rpc.WatchCreateRequest(key=key, start_revision=start_revision, watch_id=watch_id)
                    if range_end is not None:
                        create.range_end = range_end
                    await self._write(stream, election, rpc.WatchRequest(create_request=create))
            yield sub
        finally:
            for watch_id in sub.ids:
                self._subs.pop(watch_id, None)
            if sub.ids and sub.stream is not None and not sub.stream.broken:
                self._chore(self._cancel(sub.stream, sub.ids))

    async def _open(self, election: str | None) -> _Stream:
        stream = self._stream
        if stream is not None and not stream.broken and stream.client is self._channel.current_client():
            return stream

        async def op(client: Client) -> _Stream:
            return _Stream(client=client, call=client.watchstub.Watch(metadata=client.metadata))

        stream = await self._channel.call(election, op)
        self.streams_opened += 1
        stream.reader = asyncio.create_task(self._read(stream), name="etcd-watch-reader")
        self._stream = stream
        return stream

    async def _write(self, stream: _Stream, election: str | None, request: Any) -> None:
        try:
            await stream.call.write(request)
        except Exception as exc:
            self._break(
                stream, BackendUnavailable, f"etcd watch stream to {stream.client.endpoint} broke: {exc!r}"
            )
            raise BackendUnavailable(
                f"etcd watch stream to {stream.client.endpoint} broke: {exc!r}",
                election=election,
                backend=self._channel.scheme,
            ) from None

    async def _cancel(self, stream: _Stream, ids: list[int]) -> None:
        async with self._lock:
            for watch_id in ids:
                if stream.broken:
                    return
                try:
                    await stream.call.write(
                        rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=watch_id))
                    )
                except Exception:  # the reader reports the broken stream
                    return

    def _chore(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _read(self, stream: _Stream) -> None:
        endpoint = stream.client.endpoint
        try:
            while True:
                response = await stream.call.read()
                if response is grpc.aio.EOF:
                    self._break(stream, BackendUnavailable, f"etcd at {endpoint} ended the watch stream")
                    return
                self._dispatch(response)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            self._break(stream, BackendUnavailable, f"etcd watch stream to {endpoint} closed")
            if current is not None and current.cancelling():
                raise
        except Exception as exc:
            at = At(endpoint=endpoint, user=None, prefix=self._channel.prefix)
            error = ERRORS.error_for(exc, at, election=None, backend=None)
            kind = type(error) if error is not None else BackendUnavailable
            self._break(stream, kind, str(error) if error is not None else f"etcd watch stream: {exc!r}")
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE:
                await self._channel.drop_client(stream.client, rotate=self._channel.several, error=str(exc))

    def _dispatch(self, response: Any) -> None:
        sub = self._subs.get(response.watch_id)
        if sub is None:
            return  # a watcher whose wait ended
        if response.compact_revision:
            sub.put([])  # history compacted: read the state afresh
        elif response.canceled:
            reason = response.cancel_reason or "no reason given"
            scheme = self._channel.scheme
            if "permission denied" in reason:
                sub.put(
                    AccessDenied(
                        f"etcd denied a watch on the election prefix ({reason}); grant the "
                        f"user's role read on {self._channel.prefix}",
                        election=sub.election,
                        backend=scheme,
                    )
                )
            else:
                sub.put(
                    BackendUnavailable(
                        f"etcd canceled the watch: {reason}", election=sub.election, backend=scheme
                    )
                )
        elif response.events:
            sub.put(list(response.events))

    def _break(self, stream: _Stream, kind: type[BackendError], message: str) -> None:
        """Fail every subscription on ``stream``; the next wait opens a new stream."""
        if stream.broken:
            return
        stream.broken = True
        stream.call.cancel()
        if self._stream is stream:
            self._stream = None
        for watch_id, sub in list(self._subs.items()):
            if sub.stream is stream:
                del self._subs[watch_id]
                sub.put(kind(message, election=sub.election, backend=self._channel.scheme))
        logger.debug("etcd watch stream ended", extra={"endpoint": stream.client.endpoint, "error": message})

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.broken = True
            stream.call.cancel()
            if stream.reader is not None:
                stream.reader.cancel()
                await asyncio.gather(stream.reader, return_exceptions=True)
        for task in list(self._chores):
            task.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)

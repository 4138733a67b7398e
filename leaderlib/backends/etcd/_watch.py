"""One gRPC Watch stream per backend, shared by every election's waits.

etcd multiplexes watchers on a bidirectional stream: each create request
carries a ``watch_id`` chosen here, every response names the watcher it is
for. A wait registers its targets, a reader task hands each response to the
wait whose watcher it names, and the wait cancels its watchers when it ends.
A broken stream fails every pending wait with :class:`BackendUnavailable`;
the next wait opens a new one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import grpc  # type: ignore[import-untyped]  # no stubs in the venv; pyproject lists aetcd only
from aetcd import rpc

from ..._errors import AccessDenied, BackendError, BackendUnavailable
from ..._logging import get_logger
from ._channel import ERRORS, At, Channel, Client

__all__ = ["SharedWatch", "Target"]

logger = get_logger("leaderlib.backends.etcd")

Target = tuple[bytes, bytes | None, int]
"""What one watcher watches: key, range end (None: the key alone), start revision."""


@dataclasses.dataclass(eq=False)
class _Wait:
    election: str | None
    done: asyncio.Future[list[Any]]
    """The first events on any of the wait's watchers ([]: read the state afresh)."""
    stream: _Stream | None = None


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
        self._waits: dict[int, _Wait] = {}
        self._next_id = 1  # 0 asks etcd to choose
        self._lock = asyncio.Lock()  # one write at a time on the stream
        self._chores: set[asyncio.Task[None]] = set()
        self.streams_opened = 0
        """How many Watch streams this backend has opened (one, unless one broke)."""

    async def wait(self, election: str | None, targets: list[Target], queued: asyncio.Event) -> list[Any]:
        """The first events on any target, or [] once ``queued`` is set or history was compacted.

        Raises :class:`BackendUnavailable` if the stream breaks meanwhile.
        """
        wait = _Wait(election, asyncio.get_running_loop().create_future())
        ids: list[int] = []
        stream: _Stream | None = None
        try:
            async with self._lock:
                stream = wait.stream = await self._open(election)
                for key, range_end, start_revision in targets:
                    watch_id = self._next_id
                    self._next_id += 1
                    self._waits[watch_id] = wait
                    ids.append(watch_id)
                    create = rpc.WatchCreateRequest(key=key, start_revision=start_revision, watch_id=watch_id)
                    if range_end is not None:
                        create.range_end = range_end
                    await self._write(stream, election, rpc.WatchRequest(create_request=create))
            waiting = asyncio.ensure_future(queued.wait())
            try:
                await asyncio.wait((wait.done, waiting), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            return wait.done.result() if wait.done.done() else []
        finally:
            for watch_id in ids:
                self._waits.pop(watch_id, None)
            if not wait.done.done():
                wait.done.cancel()
            if ids and stream is not None and not stream.broken:
                self._chore(self._cancel(stream, ids))

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
        wait = self._waits.get(response.watch_id)
        if wait is None or wait.done.done():
            return  # a watcher whose wait ended, or a creation's acknowledgement
        if response.compact_revision:
            wait.done.set_result([])  # history compacted: read the state afresh
        elif response.canceled:
            reason = response.cancel_reason or "no reason given"
            scheme = self._channel.scheme
            if "permission denied" in reason:
                wait.done.set_exception(
                    AccessDenied(
                        f"etcd denied a watch on the election prefix ({reason}); grant the "
                        f"user's role read on {self._channel.prefix}",
                        election=wait.election,
                        backend=scheme,
                    )
                )
            else:
                wait.done.set_exception(
                    BackendUnavailable(
                        f"etcd canceled the watch: {reason}", election=wait.election, backend=scheme
                    )
                )
        elif response.events:
            wait.done.set_result(list(response.events))

    def _break(self, stream: _Stream, kind: type[BackendError], message: str) -> None:
        """Fail every wait on ``stream``; the next wait opens a new one."""
        if stream.broken:
            return
        stream.broken = True
        stream.call.cancel()
        if self._stream is stream:
            self._stream = None
        for watch_id, wait in list(self._waits.items()):
            if wait.stream is stream:
                del self._waits[watch_id]
                if not wait.done.done():
                    wait.done.set_exception(
                        kind(message, election=wait.election, backend=self._channel.scheme)
                    )
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

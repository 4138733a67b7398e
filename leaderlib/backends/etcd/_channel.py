"""The connection to etcd: the member it talks to now, failover to the next, reconnect backoff.

:class:`Channel` runs every call on the current member (a :class:`Client`)
and moves to the next one when a member is down; every error it does not
retry is raised as :data:`ERRORS` translates it. Nothing here knows about
elections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]  # no stubs in the venv; pyproject lists aetcd only
from aetcd import rpc

from ..._errors import BackendUnavailable
from ..._logging import get_logger
from ._client import Client
from ._grpc_errors import ERRORS, At

__all__ = ["Channel"]

logger = get_logger("leaderlib.backends.etcd")

T = TypeVar("T")

#: gRPC codes after which another member may well answer: move on to it.
_FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


class Channel:
    """One backend's connection: the member it talks to now, and how it moves on."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        scheme: str,
        prefix: str,
        timeout: float,
        reconnect_backoff: float,
        user: str | None,
        password: str | None,
        credentials: grpc.ChannelCredentials | None,
    ) -> None:
        self.scheme = scheme
        self.prefix = prefix
        self.timeout = timeout
        self.reconnect_backoff = reconnect_backoff
        self._endpoints = list(endpoints)
        self._user = user
        self._password = password
        self._credentials = credentials
        self._index = 0
        self._client: Client | None = None
        self.closed = False
        # Connections given up on, each with the task that closes it: open for
        # ``timeout`` seconds more, then closed with that much grace, so calls
        # still running on them end by themselves (see drop_client).
        self._retired: dict[Client, asyncio.Task[None]] = {}
        self._closing: set[Client] = set()  # retired connections closing now: no new calls
        self._told_tasks: set[asyncio.Task[None]] = set()  # tell_retired's requests still out

    @property
    def several(self) -> bool:
        """True if there are other members to move on to."""
        return len(self._endpoints) > 1

    @property
    def endpoint(self) -> str:
        """The ``HOST:PORT`` of the member this backend talks to now."""
        return self._endpoints[self._index]

    async def call(self, election: str | None, op: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``op`` on the current member; on UNAVAILABLE move to the next one and run it again.

        Every op this module sends is safe to repeat: a guarded put or delete
        finds its guard changed, a keepalive or read is idempotent, a repeated
        grant only leaves a lease without keys to expire. Each member is tried
        once per call; nothing here sleeps.
        """
        if self.closed:
            raise BackendUnavailable("the etcd backend was closed", election=election, backend=self.scheme)
        attempts_left = len(self._endpoints)
        reauthenticated = False
        while True:
            client = self.current_client()
            # What is not retried here is raised as ERRORS translates it.
            at = At(endpoint=client.endpoint, user=self._user, prefix=self.prefix)
            with ERRORS.translating(at, election=election, backend=self.scheme):
                try:
                    await client.connect()
                    return await op(client)
                except grpc.aio.AioRpcError as exc:
                    code, details = exc.code(), exc.details() or ""
                    if client is not self._client and attempts_left > 1:
                        # Another call moved to the next member and closed this channel under us.
                        attempts_left -= 1
                        continue
                    expired_token = (
                        code == grpc.StatusCode.UNAUTHENTICATED and "invalid auth token" in details
                    )
                    if expired_token and not reauthenticated:
                        # The simple token expired (etcd's --auth-token-ttl): log in again, once.
                        reauthenticated = True
                        await self.drop_client(client, rotate=False)
                        continue
                    multi = len(self._endpoints) > 1
                    if multi and (code in _FAILOVER_CODES or code == grpc.StatusCode.DEADLINE_EXCEEDED):
                        # A dead or hung member: the next call (this one, if the member
                        # refused at once rather than timing out) goes to the next one.
                        await self.drop_client(client, rotate=True, error=f"{code.name}: {details}")
                        attempts_left -= 1
                        if code in _FAILOVER_CODES and attempts_left > 0:
                            continue
                    raise
                except TimeoutError:
                    # Only the keepalive stream times out this way (it has no gRPC deadline).
                    if len(self._endpoints) > 1:
                        await self.drop_client(client, rotate=True, error="keepalive timed out")
                    raise
                except (asyncio.CancelledError, grpc.aio.UsageError) as exc:
                    current = asyncio.current_task()
                    if (
                        isinstance(exc, asyncio.CancelledError)
                        and current is not None
                        and current.cancelling()
                    ):
                        raise  # our caller cancelled us
                    # The channel was closed under this call: by another call moving to
                    # the next member (UsageError), or by grpc.aio cancelling the calls
                    # of a retired channel whose grace ran out. Not our cancellation.
                    attempts_left -= 1
                    if attempts_left > 0 and client is not self._client:
                        continue
                    raise BackendUnavailable(
                        f"etcd channel to {client.endpoint} closed: {exc!r}",
                        election=election,
                        backend=self.scheme,
                    ) from None

    def current_client(self) -> Client:
        if self._client is None:
            self._client = Client(
                self._endpoints[self._index],
                username=self._user,
                password=self._password,
                timeout=self.timeout,
                credentials=self._credentials,
                reconnect_backoff=self.reconnect_backoff,
            )
        return self._client

    async def drop_client(self, client: Client, *, rotate: bool, error: str = "") -> None:
        """Forget a failed connection (once, however many calls saw it fail)."""
        if self._client is not client:
            return
        self._client = None
        if rotate:
            failed = self._endpoints[self._index]
            self._index = (self._index + 1) % len(self._endpoints)
            logger.warning(
                "etcd member failed; moving to the next endpoint",
                extra={"endpoint": failed, "next_endpoint": self._endpoints[self._index], "error": error},
            )
        # Not closed at once: grpc.aio would cancel the other calls running on
        # it (a renewal's keepalive, a watch), and a cancelled call looks to
        # the elector like being stopped. They fail or finish by themselves.
        # Until it closes, a resignation is sent there too (see tell_retired).
        task = asyncio.create_task(self._retire(client))
        self._retired[client] = task
        task.add_done_callback(lambda _: self._forget_retired(client))

    async def _retire(self, client: Client) -> None:
        await asyncio.sleep(self.timeout)
        self._closing.add(client)  # closed to new calls from now on: tell_retired skips it
        await client.close(grace=self.timeout)

    def _forget_retired(self, client: Client) -> None:
        self._retired.pop(client, None)
        self._closing.discard(client)

    def tell_retired(self, op: Callable[[Client], Awaitable[object]]) -> None:
        """Best effort: run ``op`` on each connection retired in the last ``timeout`` seconds
        too, without waiting for it; its answer and errors are ignored.

        For what must take effect even if the current member never hears it
        (a resignation): the member this backend left for not answering may
        still receive (a one-way partition loses the answers, not the
        requests), while the next member's connection may never finish its
        handshake through the same fault (its SETTINGS frame is held).
        """
        for client in [c for c in self._retired if c not in self._closing]:
            task = asyncio.create_task(self._told(client, op))
            self._told_tasks.add(task)
            task.add_done_callback(self._told_tasks.discard)

    async def _told(self, client: Client, op: Callable[[Client], Awaitable[object]]) -> None:
        try:
            await op(client)
        except (Exception, asyncio.CancelledError) as exc:  # best effort: nobody waits for it
            logger.debug(
                "a request to a retired etcd member failed",
                extra={"endpoint": client.endpoint, "error": repr(exc)},
            )

    async def range(self, election: str | None, request: Any) -> Any:
        return await self.call(
            election, lambda c: c.kvstub.Range(request, timeout=c._timeout, metadata=c.metadata)
        )

    async def txn(self, election: str | None, request: Any, timeout: float | None = None) -> Any:
        return await self.call(
            election, lambda c: c.kvstub.Txn(request, timeout=timeout or c._timeout, metadata=c.metadata)
        )

    def renew_timeout(self, lease_duration: float) -> float:
        """Per-RPC deadline inside ``renew``: a quarter of the lease (0.5 s at least).

        A write proposed while the cluster elects a new raft leader is dropped
        and only fails at the RPC deadline, even once the new leader is up; a
        short deadline leaves the elector time to retry (on the next member)
        before its renew deadline.
        """
        return min(self.timeout, max(0.5, lease_duration / 4))

    async def revoke(self, election: str | None, lease_id: int) -> None:
        """Revoke ``lease_id`` on the current member (and tell the retired ones: :meth:`tell_retired`)."""

        def revoking(c: Client) -> Awaitable[Any]:
            return c.leasestub.LeaseRevoke(  # type: ignore[no-any-return]
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=c._timeout, metadata=c.metadata
            )

        self.tell_retired(revoking)
        await self.call(election, revoking)

    async def aclose(self) -> None:
        """Close the connection and the channels still retiring."""
        self.closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        retired = list(self._retired)  # their tasks forget them when cancelled
        tasks = [*self._retired.values(), *self._told_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for old in retired:
            await old.close()

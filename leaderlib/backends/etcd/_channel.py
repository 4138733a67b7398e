"""The connection to etcd: endpoints and failover, auth, TLS, reconnect backoff, the error table.

:class:`Channel` runs every call on the current member and moves to the next
one when a member is down; :data:`ERRORS` is the one table from gRPC's
errors to leaderlib's. Nothing here knows about elections.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import grpc  # type: ignore[import-untyped]  # no stubs in the venv; pyproject lists aetcd only
from aetcd import rpc

from ..._errors import AccessDenied, BackendError, BackendUnavailable, ConfigError, LeaseLost
from ..._logging import get_logger
from .._errors import ErrorMap, Row, error_map

__all__ = ["ERRORS", "At", "Channel", "Client", "details", "tls_credentials"]

logger = get_logger("leaderlib.backends.etcd")

T = TypeVar("T")

#: gRPC codes after which another member may well answer: move on to it.
_FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
#: gRPC codes that say "try again later" rather than "you are wrong".
_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def details(exc: BaseException) -> str:
    return (exc.details() if isinstance(exc, grpc.aio.AioRpcError) else None) or ""


def _code(exc: BaseException) -> Any:
    return exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None


@dataclasses.dataclass(frozen=True)
class At:
    """The member a call failed on, and what the messages of :data:`ERRORS` name."""

    endpoint: str
    user: str | None
    prefix: str


#: gRPC's errors as leaderlib's, by status code (and, where etcd reuses a code, its details).
ERRORS: ErrorMap[At] = error_map(
    [
        Row(
            grpc.StatusCode.INVALID_ARGUMENT,
            AccessDenied,
            lambda exc, at: f"etcd at {at.endpoint} rejected user {at.user!r}: wrong user name or password",
            when=lambda exc, at: "authentication failed" in details(exc),
        ),
        Row(
            grpc.StatusCode.INVALID_ARGUMENT,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} has authentication enabled and no user was given "
                f"({details(exc)}); put USER:PASSWORD in the URL or pass user= and password="
            ),
            when=lambda exc, at: "user name is empty" in details(exc),
        ),
        Row(
            grpc.StatusCode.UNAUTHENTICATED,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} requires authentication ({details(exc)}); "
                "put USER:PASSWORD in the URL or pass user= and password="
            ),
        ),
        Row(
            grpc.StatusCode.PERMISSION_DENIED,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} denied user {at.user!r} ({details(exc)}); grant its role "
                f"readwrite on the election prefix: etcdctl role grant-permission ROLE "
                f"--prefix=true readwrite {at.prefix}"
            ),
        ),
        Row(
            grpc.StatusCode.FAILED_PRECONDITION,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} has authentication disabled but credentials were given; "
                "drop them from the URL or enable auth"
            ),
            when=lambda exc, at: "authentication is not enabled" in details(exc),
        ),
        Row(
            grpc.StatusCode.NOT_FOUND,
            LeaseLost,
            lambda exc, at: f"the etcd session lease is gone ({details(exc)})",
            when=lambda exc, at: "lease not found" in details(exc),
        ),
        Row(
            grpc.aio.AioRpcError,
            BackendUnavailable,
            lambda exc, at: f"etcd at {at.endpoint}: {exc.code().name}: {details(exc)}",
            when=lambda exc, at: exc.code() in _TRANSIENT_CODES,
        ),
        Row(
            grpc.aio.AioRpcError,
            BackendError,
            lambda exc, at: f"etcd at {at.endpoint}: {exc.code().name}: {details(exc)}",
        ),
        # Only the keepalive stream times out this way (it has no gRPC deadline).
        Row(
            TimeoutError,
            BackendUnavailable,
            lambda exc, at: f"etcd at {at.endpoint}: no keepalive answer within the deadline",
        ),
    ],
    code=_code,
)


class Client(aetcd.Client):  # type: ignore[misc]  # aetcd is untyped
    """aetcd's client, connected over TLS when given credentials (aetcd only dials plaintext).

    Everything else (auth token metadata, the generated stubs) is aetcd's.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        username: str | None,
        password: str | None,
        timeout: float,
        credentials: grpc.ChannelCredentials | None,
        reconnect_backoff: float,
    ) -> None:
        host, _, port = endpoint.rpartition(":")
        super().__init__(host=host, port=int(port), username=username, password=password, timeout=timeout)
        self.endpoint = endpoint
        self._credentials = credentials
        backoff_ms = max(1, round(reconnect_backoff * 1000))
        self._options = [
            # Reconnect at a steady pace, not gRPC's 1 s growing 1.6x to 120 s:
            # after a long outage a replica must hear that etcd is back within
            # about a retry period, as it would from any store without backoff.
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
            # C-core's minimum time given to one connection attempt (default
            # 20 s): never longer than a call may take.
            ("grpc.min_reconnect_backoff_ms", max(backoff_ms, round(timeout * 1000))),
        ]
        self._connect_lock = asyncio.Lock()
        self.watchstub: Any = None
        # One LeaseKeepAlive stream for every keepalive on this channel: opening
        # a stream per keepalive costs about as much as the keepalive itself.
        # etcd answers a stream's requests one at a time, in order.
        self._keepalive_call: Any = None
        self._keepalive_lock = asyncio.Lock()

    async def connect(self) -> None:
        """Open the channel and authenticate; raw ``grpc.aio.AioRpcError`` on failure."""
        if self._connected.is_set():
            return
        async with self._connect_lock:
            if self._connected.is_set():
                return
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(self.endpoint, self._credentials, options=self._options)
            else:
                channel = grpc.aio.insecure_channel(self.endpoint, options=self._options)
            try:
                metadata = None
                if self._username is not None:
                    auth = rpc.AuthStub(channel)
                    response = await auth.Authenticate(
                        rpc.AuthenticateRequest(name=self._username, password=self._password),
                        timeout=self._timeout,
                    )
                    metadata = (("token", response.token),)
            except BaseException:
                await channel.close()
                raise
            self.channel = channel
            self.metadata = metadata
            self.kvstub = rpc.KVStub(channel)
            self.leasestub = rpc.LeaseStub(channel)
            self.watchstub = rpc.WatchStub(channel)
            self._connected.set()

    async def keepalive(self, lease_id: int, timeout: float) -> Any:
        """One LeaseKeepAlive request and its answer on the channel's shared stream.

        Any failure or cancellation discards the stream, so an unread answer
        can never be taken for the next request's. Raises ``TimeoutError``
        after ``timeout`` (the stream itself has no deadline).
        """
        async with self._keepalive_lock:
            if self._keepalive_call is None or self._keepalive_call.done():
                self._keepalive_call = self.leasestub.LeaseKeepAlive(metadata=self.metadata)
            call = self._keepalive_call
            try:
                async with asyncio.timeout(timeout):
                    await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                    return await call.read()
            except BaseException:
                call.cancel()
                self._keepalive_call = None
                raise

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls still running on it get ``grace`` seconds to finish."""
        if self.channel is not None:
            await self.channel.close(grace)
        self._init_channel_attrs()
        self._connected.clear()


def tls_credentials(
    scheme: str, cacert: str | None, cert: str | None, key: str | None
) -> grpc.ChannelCredentials | None:
    """The credentials of an ``etcds://`` URL's options; None for ``etcd://`` (which refuses them)."""
    if scheme != "etcds":
        for name, value in (("cacert", cacert), ("cert", cert), ("key", key)):
            if value is not None:
                raise ConfigError(f"TLS option {name!r} needs an etcds:// URL", field=name)
        return None
    if (cert is None) != (key is None):
        raise ConfigError("a client certificate needs both 'cert' and 'key'", field="cert")

    def read(name: str, path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path!r}: {exc.strerror}", field=name) from exc

    return grpc.ssl_channel_credentials(
        root_certificates=read("cacert", cacert),
        private_key=read("key", key),
        certificate_chain=read("cert", cert),
    )


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
        # Channels given up on while other calls may still run on them; closed
        # with a grace period so those calls end by themselves (see drop_client).
        self._retiring: set[asyncio.Task[None]] = set()

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
        task = asyncio.create_task(client.close(grace=self.timeout))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

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
        await self.call(
            election,
            lambda c: c.leasestub.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=c._timeout, metadata=c.metadata
            ),
        )

    async def aclose(self) -> None:
        """Close the connection and the channels still retiring."""
        self.closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

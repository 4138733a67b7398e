"""``etcd://HOST:PORT[,HOST:PORT...]``: etcd v3, with etcd's own election recipe.

URL forms::

    etcd://127.0.0.1:2379
    etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379?prefix=/myapp/&timeout=3
    etcds://USER:PASSWORD@etcd.internal:2379?cacert=/etc/ssl/ca.pem&cert=/etc/ssl/c.pem&key=/etc/ssl/c.key

Options (query string, or keyword arguments, which win):

``prefix`` (str, default ``/leaderlib/``)
    Prepended to the election name. Election ``E`` lives under the key
    prefix ``PREFIX + E + "/"``, which is exactly where ``etcdctl elect
    PREFIX+E`` and Go's ``concurrency.NewElection(session, PREFIX+E)`` look.
``timeout`` (float seconds, default 5)
    Deadline of each gRPC call.
``reconnect_backoff`` (float seconds, default 0.25)
    Longest wait between attempts to reconnect to a member (gRPC's own
    default grows to 120 s, so replicas would learn minutes late that etcd is
    back). Keep it near the elections' ``retry_period``.
``user``, ``password`` (str)
    etcd credentials; also accepted as the URL's userinfo.
``cacert``, ``cert``, ``key`` (str paths; ``etcds://`` only)
    CA bundle to verify the server with (default: the system roots) and a
    client certificate and key, as ``etcdctl --cacert --cert --key``.

The recipe is etcd's Go ``client/v3/concurrency`` (``election.go``,
``session.go``) and so ``etcdctl elect``; both sides see each other's
candidates and leaders:

* A *session* is a lease with TTL = ``lease_duration`` rounded up to whole
  seconds (etcd raises it to its minimum TTL, 2 s with default raft timing).
  One session serves every election an identity takes part in with that
  TTL through this backend, as one Go ``Session`` serves many ``Election``\\ s.
* The candidate key is ``PREFIX + ELECTION + "/" + <lease id in lowercase
  hex>`` (Go: ``fmt.Sprintf("%s%x", pfx, leaseID)``), value = identity, put
  with the lease in a transaction guarded by ``create_revision == 0`` (else
  the key is read back).
* The leader is the key with the lowest create revision under the prefix;
  its create revision is the fencing token. A candidate waits on the key
  just before its own (the next lower create revision) only.
* Resigning deletes the key. Renewing is a lease keepalive plus Go's
  ``Proclaim`` (a put of the identity guarded by the key's create revision),
  so the key's mod revision -- the record's ``version`` -- changes on every
  renewal, as the Backend contract asks.

The elector owns all timing: this module starts no background task. A
follower's ``try_acquire`` (every retry period) sends the keepalive that
keeps its candidacy queued; ``renew`` sends the leader's. etcd expires leases
itself, so records carry ``expires_in`` (the lease's remaining TTL plus a
second for etcd's whole-second TTLs and its 500 ms expiry sweep).

A session none of whose keepalives was answered for its TTL is *abandoned*,
as Go's lessor does: no more keepalives for it (one that reaches etcd while
its answer is lost would keep the key alive and first in line, with nobody
running it), and the next campaign starts a new session. Its key is never
taken for ours again, and its lease is revoked as soon as etcd answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import aetcd
import grpc  # type: ignore[import-untyped]  # no stubs in the venv; pyproject lists aetcd only
from aetcd import rpc
from aetcd.utils import prefix_range_end

from .._clock import boottime
from .._errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    ConfigError,
    CorruptLeaseRecord,
    LeaseLost,
)
from .._logging import get_logger
from . import Acquisition, LeaseRecord, check_election, parse_options, split_url
from ._errors import ErrorMap, Row, error_map

__all__ = ["EtcdBackend", "EtcdLease"]

logger = get_logger("leaderlib.backends.etcd")

T = TypeVar("T")

DEFAULT_PREFIX = "/leaderlib/"
DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0
DEFAULT_RECONNECT_BACKOFF = 0.25

#: A candidate key's last segment: the lease id as Go's ``%x`` prints it.
_LEASE_HEX = re.compile(rb"[0-9a-f]{1,16}")

#: Slack added to a lease's remaining TTL in ``expires_in``: etcd reports TTLs
#: in whole seconds (rounded down) and revokes expired leases on a 500 ms sweep.
_EXPIRY_SLACK = 1.0

_OPTIONS: dict[str, type] = {
    "prefix": str,
    "timeout": float,
    "reconnect_backoff": float,
    "user": str,
    "password": str,
    "cacert": str,
    "cert": str,
    "key": str,
}

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


def _details(exc: BaseException) -> str:
    return (exc.details() if isinstance(exc, grpc.aio.AioRpcError) else None) or ""


def _code(exc: BaseException) -> Any:
    return exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None


@dataclasses.dataclass(frozen=True)
class _At:
    """The member a call failed on, and what the messages of :data:`_ERRORS` name."""

    endpoint: str
    user: str | None
    prefix: str


#: gRPC's errors as leaderlib's, by status code (and, where etcd reuses a code, its details).
_ERRORS: ErrorMap[_At] = error_map(
    [
        Row(
            grpc.StatusCode.INVALID_ARGUMENT,
            AccessDenied,
            lambda exc, at: f"etcd at {at.endpoint} rejected user {at.user!r}: wrong user name or password",
            when=lambda exc, at: "authentication failed" in _details(exc),
        ),
        Row(
            grpc.StatusCode.UNAUTHENTICATED,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} requires authentication ({_details(exc)}); "
                "put USER:PASSWORD in the URL or pass user= and password="
            ),
        ),
        Row(
            grpc.StatusCode.PERMISSION_DENIED,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} denied user {at.user!r} ({_details(exc)}); grant its role "
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
            when=lambda exc, at: "authentication is not enabled" in _details(exc),
        ),
        Row(
            grpc.StatusCode.NOT_FOUND,
            LeaseLost,
            lambda exc, at: f"the etcd session lease is gone ({_details(exc)})",
            when=lambda exc, at: "lease not found" in _details(exc),
        ),
        Row(
            grpc.aio.AioRpcError,
            BackendUnavailable,
            lambda exc, at: f"etcd at {at.endpoint}: {exc.code().name}: {_details(exc)}",
            when=lambda exc, at: exc.code() in _TRANSIENT_CODES,
        ),
        Row(
            grpc.aio.AioRpcError,
            BackendError,
            lambda exc, at: f"etcd at {at.endpoint}: {exc.code().name}: {_details(exc)}",
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


def lease_ttl(lease_duration: float) -> int:
    """The TTL (whole seconds) a session lease is granted for ``lease_duration``: rounded up."""
    return max(1, math.ceil(lease_duration))


def candidate_key(prefix: str, election: str, lease_id: int) -> bytes:
    """``PREFIX + ELECTION + "/" + <lease id hex>``: the key Go's ``Election.Campaign`` writes."""
    return f"{prefix}{election}/{lease_id:x}".encode()


class _Client(aetcd.Client):  # type: ignore[misc]  # aetcd is untyped
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


@dataclasses.dataclass
class _Candidacy:
    """This backend's candidate key in one election, under one session."""

    key: bytes
    create_revision: int
    leading: bool = False
    acquire_time: dt.datetime | None = None


@dataclasses.dataclass
class _Session:
    """A lease kept alive by the elector's calls (Go's ``concurrency.Session``)."""

    identity: str
    lease_id: int
    ttl: int
    """Granted TTL in seconds (etcd may raise the one asked for to its minimum)."""
    lease_duration: float
    """The lease duration the elector asked for, reported in our own records."""
    refreshed_at: float
    """:func:`boottime` at which the last grant or keepalive that etcd ANSWERED was sent."""
    alive: bool = True

    def expires_in(self) -> float:
        """Seconds the lease surely lives, by our clock: TTL from the last answered keepalive."""
        return max(0.0, self.ttl - (boottime() - self.refreshed_at))


def _range_first_created(prefix: bytes) -> Any:
    """Go's ``Get(pfx, WithFirstCreate()...)``: the key with the lowest create revision."""
    return rpc.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.CREATE,
        limit=1,
    )


def _range_predecessor(prefix: bytes, create_revision: int) -> Any:
    """Go's ``waitDeletes`` query: the newest key created before ``create_revision``."""
    return rpc.RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        sort_order=rpc.RangeRequest.DESCEND,
        sort_target=rpc.RangeRequest.CREATE,
        max_create_revision=create_revision - 1,
        limit=1,
    )


def _kvs(response: Any, index: int) -> list[Any]:
    return list(response.responses[index].response_range.kvs)


class EtcdBackend:
    """Leases as etcd election keys; see the module docstring for the URL and the recipe."""

    observation_granularity = 0.0  # the store expires leases itself (lease TTL)

    def __init__(
        self,
        endpoints: list[str],
        *,
        scheme: str = "etcd",
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect_backoff: float = DEFAULT_RECONNECT_BACKOFF,
        user: str | None = None,
        password: str | None = None,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        if not endpoints:
            raise ConfigError("an etcd URL needs at least one HOST:PORT", field="backend")
        if timeout <= 0:
            raise ConfigError(f"must be a positive number of seconds, got {timeout!r}", field="timeout")
        if reconnect_backoff <= 0:
            raise ConfigError(
                f"must be a positive number of seconds, got {reconnect_backoff!r}", field="reconnect_backoff"
            )
        if (user is None) != (password is None):
            raise ConfigError("etcd credentials need both a user and a password", field="user")
        self.scheme = scheme
        self.prefix = prefix
        self.timeout = timeout
        self.reconnect_backoff = reconnect_backoff
        self._endpoints = list(endpoints)
        self._user = user
        self._password = password
        self._credentials = self._tls_credentials(scheme, cacert, cert, key)
        self._index = 0
        self._client: _Client | None = None
        self._sessions: dict[tuple[str, int], _Session] = {}
        self._session_locks: dict[tuple[str, int], asyncio.Lock] = {}
        # Leases of abandoned sessions, revoked (best effort) once etcd answers
        # again: etcd does not expire leases while it is down, and after a
        # restart it gives each one a whole new TTL.
        self._abandoned: set[int] = set()
        self._closed = False
        # Channels given up on while other calls may still run on them; closed
        # with a grace period so those calls end by themselves (see _drop_client).
        self._retiring: set[asyncio.Task[None]] = set()
        self._leases: dict[str, EtcdLease] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EtcdBackend:
        parts = split_url(url)
        if parts.scheme not in ("etcd", "etcds"):
            raise ConfigError(f"{url!r} is not an etcd:// or etcds:// URL", field="backend")
        opts = parse_options(parts, _OPTIONS, options)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        if userinfo:
            user, _, password = userinfo.partition(":")
            opts.setdefault("user", unquote(user))
            opts.setdefault("password", unquote(password))
        if parts.path not in ("", "/"):
            raise ConfigError(
                f"an etcd URL has no path (got {parts.path!r}); set the key prefix with ?prefix=",
                field="backend",
            )
        endpoints = []
        for host in hosts.split(","):
            host = host.strip()
            if not host:
                raise ConfigError(f"empty HOST:PORT in {url!r}", field="backend")
            port_match = re.fullmatch(r"(.*):(\d+)", host)
            if port_match is None or port_match.group(1).endswith(":"):
                host = f"{host}:{DEFAULT_PORT}"
            endpoints.append(host)
        return cls(endpoints, scheme=parts.scheme, **opts)

    @staticmethod
    def _tls_credentials(
        scheme: str, cacert: str | None, cert: str | None, key: str | None
    ) -> grpc.ChannelCredentials | None:
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

    # ------------------------------------------------------------------ plumbing

    @property
    def endpoint(self) -> str:
        """The ``HOST:PORT`` of the member this backend talks to now."""
        return self._endpoints[self._index]

    async def _call(self, election: str | None, op: Callable[[_Client], Awaitable[T]]) -> T:
        """Run ``op`` on the current member; on UNAVAILABLE move to the next one and run it again.

        Every op this module sends is safe to repeat: a guarded put or delete
        finds its guard changed, a keepalive or read is idempotent, a repeated
        grant only leaves a lease without keys to expire. Each member is tried
        once per call; nothing here sleeps.
        """
        if self._closed:
            raise BackendUnavailable("the etcd backend was closed", election=election, backend=self.scheme)
        attempts_left = len(self._endpoints)
        reauthenticated = False
        while True:
            client = self._current_client()
            # What is not retried here is raised as _ERRORS translates it.
            at = _At(endpoint=client.endpoint, user=self._user, prefix=self.prefix)
            with _ERRORS.translating(at, election=election, backend=self.scheme):
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
                        await self._drop_client(client, rotate=False)
                        continue
                    multi = len(self._endpoints) > 1
                    if multi and (code in _FAILOVER_CODES or code == grpc.StatusCode.DEADLINE_EXCEEDED):
                        # A dead or hung member: the next call (this one, if the member
                        # refused at once rather than timing out) goes to the next one.
                        await self._drop_client(client, rotate=True, error=f"{code.name}: {details}")
                        attempts_left -= 1
                        if code in _FAILOVER_CODES and attempts_left > 0:
                            continue
                    raise
                except TimeoutError:
                    # Only the keepalive stream times out this way (it has no gRPC deadline).
                    if len(self._endpoints) > 1:
                        await self._drop_client(client, rotate=True, error="keepalive timed out")
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

    def _current_client(self) -> _Client:
        if self._client is None:
            self._client = _Client(
                self._endpoints[self._index],
                username=self._user,
                password=self._password,
                timeout=self.timeout,
                credentials=self._credentials,
                reconnect_backoff=self.reconnect_backoff,
            )
        return self._client

    async def _drop_client(self, client: _Client, *, rotate: bool, error: str = "") -> None:
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

    async def _txn(self, election: str | None, request: Any, timeout: float | None = None) -> Any:
        return await self._call(
            election, lambda c: c.kvstub.Txn(request, timeout=timeout or c._timeout, metadata=c.metadata)
        )

    def _renew_timeout(self, lease_duration: float) -> float:
        """Per-RPC deadline inside ``renew``: a quarter of the lease (0.5 s at least).

        A write proposed while the cluster elects a new raft leader is dropped
        and only fails at the RPC deadline, even once the new leader is up; a
        short deadline leaves the elector time to retry (on the next member)
        before its renew deadline.
        """
        return min(self.timeout, max(0.5, lease_duration / 4))

    async def _revoke(self, election: str | None, lease_id: int) -> None:
        await self._call(
            election,
            lambda c: c.leasestub.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=c._timeout, metadata=c.metadata
            ),
        )

    # ------------------------------------------------------------------ sessions

    async def _session(self, identity: str, lease_duration: float, election: str) -> tuple[_Session, bool]:
        """The live session for ``identity`` at this TTL, granting a lease if needed.

        Returns the session and whether it was granted by this call.
        """
        slot = (identity, lease_ttl(lease_duration))
        session = self._sessions.get(slot)
        if session is not None and self._live(session):
            return session, False
        lock = self._session_locks.setdefault(slot, asyncio.Lock())
        async with lock:
            session = self._sessions.get(slot)
            if session is not None and self._live(session):
                return session, False
            sent = boottime()
            response = await self._call(
                election,
                lambda c: c.leasestub.LeaseGrant(
                    rpc.LeaseGrantRequest(TTL=slot[1]), timeout=c._timeout, metadata=c.metadata
                ),
            )
            if response.error:
                raise BackendUnavailable(
                    f"etcd refused a lease: {response.error}", election=election, backend=self.scheme
                )
            session = _Session(
                identity=identity,
                lease_id=response.ID,
                ttl=response.TTL,
                lease_duration=lease_duration,
                refreshed_at=sent,
            )
            self._sessions[slot] = session
            logger.debug(
                "granted session lease",
                extra={"election": election, "lease_id": f"{response.ID:x}", "ttl": response.TTL},
            )
            return session, True

    def _end_session(self, session: _Session) -> None:
        """Forget a session whose lease is gone: every candidacy on it went with it."""
        session.alive = False
        slot = (session.identity, lease_ttl(session.lease_duration))
        if self._sessions.get(slot) is session:
            del self._sessions[slot]
        for lease in list(self._leases.values()):
            lease._candidacies.pop(session.lease_id, None)

    def _candidacies_on(self, session: _Session) -> list[tuple[EtcdLease, _Candidacy]]:
        """The elections ``session`` campaigns in, and its candidacy in each."""
        return [
            (lease, lease._candidacies[session.lease_id])
            for lease in list(self._leases.values())
            if session.lease_id in lease._candidacies
        ]

    def _live(self, session: _Session) -> bool:
        """True if ``session`` may still be kept alive; abandons it once no keepalive
        was answered for its TTL (Go's lessor drops such a lease the same way).

        From then on no keepalive is sent for it: one that reaches etcd while its
        answer is lost (a one-way partition) would keep the key alive and first
        in line, a leader nobody runs, for as long as the fault lasts.
        """
        if not session.alive:
            return False
        if session.expires_in() > 0:
            return True
        elections = sorted(lease.election for lease, _ in self._candidacies_on(session))
        self._end_session(session)
        unanswered = boottime() - session.refreshed_at
        self._abandoned.add(session.lease_id)
        logger.warning(
            "etcd session abandoned: no keepalive answered within its TTL",
            extra={
                "lease_id": f"{session.lease_id:x}",
                "ttl": session.ttl,
                "unanswered_for": round(unanswered, 3),
                "elections": elections,
            },
        )
        return False

    async def _revoke_abandoned(self, election: str | None) -> None:
        """Best effort: revoke the leases of abandoned sessions, so a key of theirs that
        keepalives kept first in line goes now, not when etcd expires it.

        Raises :class:`BackendUnavailable` while etcd does not answer (the lease
        stays listed for the next call); any other refusal is logged and the
        lease left to expire.
        """
        for lease_id in list(self._abandoned):
            try:
                await self._revoke(election, lease_id)
            except LeaseLost:
                pass  # already expired: its keys went with it
            except BackendUnavailable:
                raise
            except BackendError as exc:
                logger.warning(
                    "could not revoke an abandoned session lease; it will expire",
                    extra={"election": election, "lease_id": f"{lease_id:x}", "error": str(exc)},
                )
            else:
                logger.info(
                    "revoked abandoned session lease",
                    extra={"election": election, "lease_id": f"{lease_id:x}"},
                )
            self._abandoned.discard(lease_id)

    async def _keepalive(self, session: _Session, election: str, timeout: float | None = None) -> bool:
        """Refresh the session lease once; False if etcd no longer has it.

        Raises :class:`LeaseLost` instead of sending if the session was abandoned
        (see :meth:`_live`), or is abandoned while the keepalive is in flight.
        """
        if not self._live(session):
            raise LeaseLost("the etcd session was abandoned", election=election, backend=self.scheme)
        sent = boottime()
        response = await self._call(
            election, lambda c: c.keepalive(session.lease_id, timeout or self.timeout)
        )
        if response is grpc.aio.EOF:
            raise BackendUnavailable(
                "etcd closed the keepalive stream without an answer", election=election, backend=self.scheme
            )
        if not session.alive:
            raise LeaseLost("the etcd session was abandoned", election=election, backend=self.scheme)
        if response.TTL <= 0:
            return False
        session.ttl = response.TTL
        session.refreshed_at = max(session.refreshed_at, sent)
        return True

    def _own_session(self, lease_id: int) -> _Session | None:
        """Our live session with this lease; an abandoned one's key is never ours."""
        for session in list(self._sessions.values()):
            if session.lease_id == lease_id and self._live(session):
                return session
        return None

    # ------------------------------------------------------------------ records

    # ------------------------------------------------------------------ the Protocol

    def lease(self, election: str) -> EtcdLease:
        """The election's handle (the same one each time).

        ConfigError for a name with ``/``: election ``jobs/nightly``'s keys would
        lie under election ``jobs``'s prefix (``PREFIX + "jobs/"``), where
        ``jobs``'s electors would take them for a corrupt candidate key.
        """
        check_election(election)
        if "/" in election:
            raise ConfigError(
                f"election name {election!r} contains '/', which etcd elections cannot: its keys would "
                f"lie under the prefix of election {election.split('/', 1)[0]!r} "
                f"({self.prefix}{election.split('/', 1)[0]}/), which would read them as a corrupt record; "
                "use '.' or '-' instead, e.g. 'jobs.nightly'",
                field="election",
            )
        handle = self._leases.get(election)
        if handle is None:
            handle = self._leases[election] = EtcdLease(self, election)
        return handle

    async def aclose(self) -> None:
        """Revoke the sessions of candidacies that do not lead, then close the connection.

        A follower that leaves withdraws its key at once, so it cannot become
        a leader nobody runs; a lease still leading is left to expire unless
        the elector released it (``release_on_shutdown``).
        """
        if self._closed:
            return
        for session in list(self._sessions.values()):
            if not session.alive or any(c.leading for _, c in self._candidacies_on(session)):
                continue
            self._end_session(session)
            try:
                await asyncio.wait_for(self._revoke(None, session.lease_id), timeout=min(self.timeout, 2.0))
            except (BackendError, TimeoutError):
                logger.debug(
                    "could not revoke session lease on close", extra={"lease_id": f"{session.lease_id:x}"}
                )
        with contextlib.suppress(BackendError, TimeoutError):
            await asyncio.wait_for(self._revoke_abandoned(None), timeout=min(self.timeout, 2.0))
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)


class EtcdLease:
    """One election: its key prefix, this backend's candidacies in it, and its watch.

    The sessions (one per identity and TTL, shared by every election as Go's
    ``Session`` is) and the connection are the backend's.
    """

    def __init__(self, backend: EtcdBackend, election: str) -> None:
        self.election = election
        self._backend = backend
        self._prefix = f"{backend.prefix}{election}/".encode()
        # This backend's candidacy in the election, per session (by lease id).
        self._candidacies: dict[int, _Candidacy] = {}
        # Set when try_acquire queues a new candidacy, so a watch that started
        # before it (as the elector's does) moves from the leader's key to our
        # predecessor's: no thundering herd.
        self._queued = asyncio.Event()

    # ------------------------------------------------------------------ records

    def _holder(self, kv: Any) -> str:
        """The identity in a leader key, or :class:`CorruptLeaseRecord` if it is not a candidate key."""
        prefix = self._prefix
        suffix = bytes(kv.key)[len(prefix) :]
        key = bytes(kv.key).decode(errors="backslashreplace")
        if not _LEASE_HEX.fullmatch(suffix) or int(suffix, 16) != kv.lease:
            raise CorruptLeaseRecord(
                f"etcd key {key!r} holds the election (lowest create revision under "
                f"{prefix.decode(errors='backslashreplace')!r}) but is not a candidate key "
                "PREFIX/ELECTION/<lease id hex> attached to that lease (a nested election name, "
                f"or written by hand?); remove it with: etcdctl del {key!r}",
                election=self.election,
                backend=self._backend.scheme,
            )
        try:
            holder = bytes(kv.value).decode("utf-8")
        except UnicodeDecodeError:
            holder = ""
        if not holder:
            raise CorruptLeaseRecord(
                f"etcd key {key!r} holds the election but its value is not a UTF-8 identity "
                f"({bytes(kv.value)[:40]!r}); remove it with: etcdctl del {key!r}",
                election=self.election,
                backend=self._backend.scheme,
            )
        return holder

    async def _record(self, kv: Any) -> LeaseRecord:
        """The LeaseRecord of leader key ``kv``; asks etcd for the lease's TTL unless it is ours."""
        backend = self._backend
        holder = self._holder(kv)
        session = backend._own_session(kv.lease)
        candidacy = self._candidacies.get(session.lease_id) if session is not None else None
        if session is not None:
            lease_duration, expires_in = session.lease_duration, session.expires_in()
        else:
            response = await backend._call(
                self.election,
                lambda c: c.leasestub.LeaseTimeToLive(
                    rpc.LeaseTimeToLiveRequest(ID=kv.lease, keys=False),
                    timeout=c._timeout,
                    metadata=c.metadata,
                ),
            )
            lease_duration = float(response.grantedTTL)
            expires_in = response.TTL + _EXPIRY_SLACK if response.TTL >= 0 else 0.0
        return LeaseRecord(
            election=self.election,
            holder=holder,
            lease_duration=lease_duration,
            fencing_token=kv.create_revision,
            version=str(kv.mod_revision),
            acquire_time=candidacy.acquire_time if candidacy is not None else None,
            expires_in=expires_in,
        )

    # ------------------------------------------------------------------ the Protocol

    async def get(self) -> LeaseRecord | None:
        prefix = self._prefix
        response = await self._backend._call(
            self.election,
            lambda c: c.kvstub.Range(_range_first_created(prefix), timeout=c._timeout, metadata=c.metadata),
        )
        if not response.kvs:
            return None
        return await self._record(response.kvs[0])

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        # etcd expires leases itself; ``takeover`` matters only when it is a
        # term of ours that the elector ended: that candidacy resigns first, so
        # the new term is a new key with a new create revision (fencing token).
        backend, election = self._backend, self.election
        ended = self._held(takeover) if takeover is not None else None
        await backend._revoke_abandoned(election)
        if ended is not None:
            await self._resign(*ended)
        for attempt in range(2):
            session, granted = await backend._session(identity, lease_duration, election)
            try:
                record = await self._campaign(identity, lease_duration, session, granted)
            except LeaseLost:
                # The session lease expired or was revoked: start a new session,
                # as Go's callers do after Session.Done(). Once per call.
                backend._end_session(session)
                if attempt:
                    raise
                continue
            candidacy = self._candidacies.get(session.lease_id)
            return Acquisition(acquired=candidacy is not None and candidacy.leading, record=record)
        raise AssertionError("unreachable")

    async def _campaign(
        self, identity: str, lease_duration: float, session: _Session, granted: bool
    ) -> LeaseRecord | None:
        """One Campaign step: make sure our candidate key exists, report the leader.

        etcd's form of the acquire decision: the leader is the lowest create
        revision, so a free election is ours with a new create revision (the
        token), and a held one is reported, never adopted.
        """
        backend, election = self._backend, self.election
        prefix = self._prefix
        key = candidate_key(backend.prefix, election, session.lease_id)
        candidacy = self._candidacies.get(session.lease_id)
        leader_op = rpc.RequestOp(request_range=_range_first_created(prefix))
        if candidacy is not None and candidacy.key == key:
            # Already queued: a read-only transaction (a linearizable read, no raft write).
            request = rpc.TxnRequest(
                success=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key)), leader_op]
            )
        else:
            # Go's Campaign: put the key if it does not exist, else read it back.
            request = rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=key,
                        target=rpc.Compare.CREATE,
                        result=rpc.Compare.EQUAL,
                        create_revision=0,
                    )
                ],
                success=[
                    rpc.RequestOp(
                        request_put=rpc.PutRequest(key=key, value=identity.encode(), lease=session.lease_id)
                    ),
                    leader_op,
                ],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key)), leader_op],
            )

        if granted:
            response = await backend._txn(election, request)
        else:
            # The keepalive rides along with every attempt: it keeps a follower's
            # place in the queue, and a lease refreshed after the elector sent
            # this attempt outlives the term the elector counts from it.
            alive, response = await asyncio.gather(
                backend._keepalive(session, election), backend._txn(election, request)
            )
            if not alive:
                raise LeaseLost("the etcd session lease expired", election=election, backend=backend.scheme)

        if request.compare and response.succeeded:
            create_revision = response.header.revision
        else:
            own = _kvs(response, 0)
            if not own:
                # Our key is gone (deleted by someone else): queue again, now.
                self._candidacies.pop(session.lease_id, None)
                return await self._campaign(identity, lease_duration, session, granted=True)
            create_revision = own[0].create_revision
            if own[0].value != identity.encode():
                await self._proclaim(identity, session, key, create_revision)
        if candidacy is None or candidacy.create_revision != create_revision:
            candidacy = _Candidacy(key=key, create_revision=create_revision)
            self._candidacies[session.lease_id] = candidacy
            self._queued.set()

        leaders = _kvs(response, 1)
        if not leaders:
            # Nothing under the prefix although we just wrote: our lease died in between.
            raise LeaseLost("the etcd candidate key vanished", election=election, backend=backend.scheme)
        leader = leaders[0]
        if bytes(leader.key) != key:
            candidacy.leading = False
            return await self._record(leader)
        now = dt.datetime.now(dt.UTC)
        if not candidacy.leading:
            candidacy.leading = True
            candidacy.acquire_time = now
            logger.debug(
                "candidate key leads",
                extra={"election": election, "key": key.decode(), "fencing_token": create_revision},
            )
        return LeaseRecord(
            election=election,
            holder=identity,
            lease_duration=lease_duration,
            fencing_token=create_revision,
            version=str(leader.mod_revision),
            acquire_time=candidacy.acquire_time,
            renew_time=now,
            expires_in=session.expires_in(),
        )

    async def _proclaim(
        self,
        identity: str,
        session: _Session,
        key: bytes,
        create_revision: int,
        timeout: float | None = None,
    ) -> int:
        """Go's ``Election.Proclaim``: rewrite our key's value if it is still our key; returns
        the new mod revision. Raises :class:`LeaseLost` if the key is gone or was recreated."""
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=key,
                    target=rpc.Compare.CREATE,
                    result=rpc.Compare.EQUAL,
                    create_revision=create_revision,
                )
            ],
            success=[
                rpc.RequestOp(
                    request_put=rpc.PutRequest(key=key, value=identity.encode(), lease=session.lease_id)
                )
            ],
        )
        response = await self._backend._txn(self.election, request, timeout)
        if not response.succeeded:
            raise LeaseLost(
                "our etcd candidate key was deleted or replaced",
                election=self.election,
                backend=self._backend.scheme,
            )
        return int(response.header.revision)

    def _held(self, record: LeaseRecord) -> tuple[_Session, _Candidacy] | None:
        """The session and candidacy behind ``record``, if this backend still has them."""
        backend = self._backend
        session = backend._sessions.get((record.holder, lease_ttl(record.lease_duration)))
        if session is None or not backend._live(session):
            return None
        candidacy = self._candidacies.get(session.lease_id)
        if candidacy is None or candidacy.create_revision != record.fencing_token:
            return None
        return session, candidacy

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        backend, election = self._backend, self.election
        held = self._held(record)
        if held is None:
            raise LeaseLost(
                "this backend holds no such etcd candidacy", election=election, backend=backend.scheme
            )
        session, candidacy = held
        timeout = backend._renew_timeout(record.lease_duration)
        try:
            alive, mod_revision = await asyncio.gather(
                backend._keepalive(session, election, timeout),
                self._proclaim(record.holder, session, candidacy.key, candidacy.create_revision, timeout),
            )
        except LeaseLost:
            self._candidacies.pop(session.lease_id, None)
            raise
        if not alive:
            backend._end_session(session)
            raise LeaseLost("the etcd session lease expired", election=election, backend=backend.scheme)
        logger.debug("renewed lease", extra={"election": election, "version": mod_revision})
        return dataclasses.replace(
            record,
            version=str(mod_revision),
            renew_time=dt.datetime.now(dt.UTC),
            expires_in=session.expires_in(),
        )

    async def release(self, record: LeaseRecord) -> None:
        backend = self._backend
        held = self._held(record)
        if held is None:
            return
        session, candidacy = held
        del self._candidacies[session.lease_id]
        if not backend._candidacies_on(session):
            # Go's Resign + Session.Close in one raft entry: revoking the lease
            # deletes the key with it.
            backend._end_session(session)
            with contextlib.suppress(LeaseLost):  # already expired: the key went with it
                await backend._revoke(self.election, session.lease_id)
            return
        await self._resign(session, candidacy)

    async def _resign(self, session: _Session, candidacy: _Candidacy) -> None:
        """Go's ``Resign``: delete our key if it is still the one we created; forget the candidacy."""
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=candidacy.key,
                    target=rpc.Compare.CREATE,
                    result=rpc.Compare.EQUAL,
                    create_revision=candidacy.create_revision,
                )
            ],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=candidacy.key))],
        )
        await self._backend._txn(self.election, request)
        if self._candidacies.get(session.lease_id) is candidacy:
            del self._candidacies[session.lease_id]

    def _watch_candidacy(self) -> tuple[_Session, _Candidacy] | None:
        """Our queued candidacy in this election closest to the front, and its session, if any."""
        backend = self._backend
        found = [
            (s, self._candidacies[s.lease_id])
            for s in list(backend._sessions.values())
            if s.lease_id in self._candidacies and backend._live(s)
        ]
        return min(found, key=lambda pair: pair[1].create_revision) if found else None

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        """Yield the leader's record, then again whenever the key we wait on changes.

        A candidate waits on the key just before its own (and on its own key,
        which vanishes if its lease does), as Go's ``waitDeletes`` does; when
        that predecessor was the leader, the record read and yielded next is our
        own key's, as etcd holds it (the elector then campaigns: only
        ``try_acquire`` says whether we lead).
        A backend that is not a candidate waits on the leader's key, or on the
        whole prefix while the election is empty (Go's ``Observe``).
        """
        prefix = self._prefix
        queued = self._queued
        while True:
            queued.clear()
            ours = self._watch_candidacy()
            candidacy = ours[1] if ours is not None else None
            ops = [rpc.RequestOp(request_range=_range_first_created(prefix))]
            if candidacy is not None:
                ops.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=candidacy.key)))
                ops.append(rpc.RequestOp(request_range=_range_predecessor(prefix, candidacy.create_revision)))
            response = await self._backend._txn(self.election, rpc.TxnRequest(success=ops))
            leaders = _kvs(response, 0)
            targets: list[tuple[bytes, bytes | None]]
            if candidacy is not None and _kvs(response, 1):
                predecessor = _kvs(response, 2)
                targets = [(candidacy.key, None)]
                if predecessor:
                    targets.append((bytes(predecessor[0].key), None))
            elif leaders:
                targets = [(bytes(leaders[0].key), None)]
            else:
                targets = [(prefix, prefix_range_end(prefix))]
            yield await self._record(leaders[0]) if leaders else None
            await self._wait_for_change(targets, response.header.revision + 1, queued)

    async def _wait_for_change(
        self,
        targets: list[tuple[bytes, bytes | None]],
        start_revision: int,
        queued: asyncio.Event,
    ) -> None:
        """Wait for the first events on any target from ``start_revision`` on, or for ``queued``.

        The next phase's multiplexed watch hooks in here: one shared Watch
        stream per backend, this handle's targets registered on it.
        """
        backend, election = self._backend, self.election

        async def op(client: _Client) -> None:
            call = client.watchstub.Watch(metadata=client.metadata)
            try:
                for key, range_end in targets:
                    create = rpc.WatchCreateRequest(key=key, start_revision=start_revision)
                    if range_end is not None:
                        create.range_end = range_end
                    await call.write(rpc.WatchRequest(create_request=create))
                while True:
                    reading = asyncio.ensure_future(call.read())
                    waiting = asyncio.ensure_future(queued.wait())
                    try:
                        await asyncio.wait((reading, waiting), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiting.cancel()
                        if not reading.done():
                            reading.cancel()
                    if not reading.done() or reading.cancelled():
                        return  # a new candidacy of ours: wait on its predecessor instead
                    response = reading.result()
                    if response is grpc.aio.EOF:
                        raise BackendUnavailable(
                            "etcd ended the watch stream", election=election, backend=backend.scheme
                        )
                    if response.compact_revision:
                        return  # history compacted: read the state afresh
                    if response.canceled:
                        reason = response.cancel_reason or "no reason given"
                        if "permission denied" in reason:
                            raise AccessDenied(
                                f"etcd denied a watch on the election prefix ({reason}); grant the "
                                f"user's role read on {backend.prefix}",
                                election=election,
                                backend=backend.scheme,
                            )
                        raise BackendUnavailable(
                            f"etcd canceled the watch: {reason}", election=election, backend=backend.scheme
                        )
                    if response.events:
                        return
            finally:
                call.cancel()

        await backend._call(election, op)

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

The elector owns all timing of the election. As Go's ``Session`` does, each
session keeps its own lease alive: a keepalive every TTL/3 (``_session``), so
a follower the elector does not poll keeps its place in the queue; ``renew``
also sends one with its ``Proclaim``, in the same round trip. etcd expires
leases itself, so records carry ``expires_in`` (the lease's remaining TTL plus
a second for etcd's whole-second TTLs and its 500 ms expiry sweep).

Job run records (``Lease.record_run``) are one key per job,
``PREFIX + ELECTION + "~runs/" + JOB``: beside the campaign prefix, never
under it, where ``etcdctl elect`` and Go's recipe would take them for
candidates. Each is written by one ``Txn`` guarded by the term's leader key
(its create revision and value) and read back by one range read.

Every election's watch shares the backend's one Watch stream (``_watch``). A
follower waits on its predecessor's key and its own; the leader's renewals
on that key are yielded as records built from the event, without a read.

Modules: ``_channel`` (endpoints, failover, reconnect backoff), ``_client``
(one member's connection: TLS, auth, the keepalive stream),
``_grpc_errors`` (the error table), ``_session`` (sessions, keepalive loop,
abandonment), ``_keys`` (the key layout and the recipe's requests),
``_election`` (the campaign, :class:`EtcdLease`), ``_txns`` (every
election's transactions, batched into one), ``_observe`` (what a wait
watches), ``_watch`` (the shared Watch stream).

A session none of whose keepalives was answered for its TTL is *abandoned*,
as Go's lessor does: no more keepalives for it (one that reaches etcd while
its answer is lost would keep the key alive and first in line, with nobody
running it), and the next campaign starts a new session. Its key is never
taken for ours again, and its lease is revoked as soon as etcd answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import unquote

from ..._errors import BackendError, ConfigError
from ..._logging import get_logger
from .. import check_election, parse_options, split_url
from ._channel import Channel
from ._client import tls_credentials
from ._election import EtcdLease
from ._keys import RUNS_SUFFIX, candidate_key, run_key
from ._session import Sessions, lease_ttl
from ._txns import Transactions
from ._watch import SharedWatch

__all__ = ["DEFAULT_PREFIX", "EtcdBackend", "EtcdLease", "candidate_key", "lease_ttl", "run_key"]

DEFAULT_PREFIX = "/leaderlib/"
DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0
DEFAULT_RECONNECT_BACKOFF = 0.25

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

logger = get_logger("leaderlib.backends.etcd")


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
        self.channel = Channel(
            endpoints,
            scheme=scheme,
            prefix=prefix,
            timeout=timeout,
            reconnect_backoff=reconnect_backoff,
            user=user,
            password=password,
            credentials=tls_credentials(scheme, cacert, cert, key),
        )
        self._leases: dict[str, EtcdLease] = {}
        self.sessions = Sessions(self.channel)
        self.txns = Transactions(self.channel)
        """Every election's transactions, batched (``_txns``)."""
        self.watcher = SharedWatch(self.channel)

    @property
    def endpoint(self) -> str:
        """The ``HOST:PORT`` of the member this backend talks to now."""
        return self.channel.endpoint

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
            endpoints.append(_endpoint(host, url))
        return cls(endpoints, scheme=parts.scheme, **opts)

    def lease(self, election: str) -> EtcdLease:
        """The election's handle (the same one each time).

        ConfigError for a name with ``/``: election ``jobs/nightly``'s keys would
        lie under election ``jobs``'s prefix (``PREFIX + "jobs/"``), where
        ``jobs``'s electors would take them for a corrupt candidate key. The
        same for a name ending in ``~runs``: election ``jobs~runs``'s keys would
        lie among ``jobs``'s job run records (``PREFIX + "jobs~runs/"``).
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
        if election.endswith(RUNS_SUFFIX):
            raise ConfigError(
                f"election name {election!r} ends in {RUNS_SUFFIX!r}: its keys would lie where election "
                f"{election[: -len(RUNS_SUFFIX)]!r} keeps its job run records "
                f"({self.prefix}{election}/), which would read them as a corrupt record; choose another name",
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
        if self.channel.closed:
            return
        for session in list(self.sessions.by_slot.values()):
            if not session.alive or any(c.leading for _, c in self.sessions.candidacies_on(session)):
                continue
            self.sessions.end(session)
            try:
                await asyncio.wait_for(
                    self.channel.revoke(None, session.lease_id), timeout=min(self.timeout, 2.0)
                )
            except (BackendError, TimeoutError):
                logger.debug(
                    "could not revoke session lease on close", extra={"lease_id": f"{session.lease_id:x}"}
                )
        with contextlib.suppress(BackendError, TimeoutError):
            await asyncio.wait_for(self.sessions.revoke_abandoned(None), timeout=min(self.timeout, 2.0))
        await self.sessions.aclose()
        await self.txns.aclose()
        await self.watcher.aclose()
        await self.channel.aclose()


def _endpoint(host: str, url: str) -> str:
    """``HOST:PORT`` for one comma-separated part of an etcd URL (port 2379 if none is given).

    A port that is not a number is refused here: appending the default port
    would make an address that fails on every call, forever, as a transient
    error.
    """
    name, colon, port = host.rpartition(":")
    if not colon or host.endswith("]") or name.endswith(":"):
        return f"{host}:{DEFAULT_PORT}"  # no port (an IPv6 address without one, too)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"{port!r} in {url!r} is not a port number (1-65535); write HOST:PORT, e.g. 127.0.0.1:2379",
            field="backend",
        )
    return host

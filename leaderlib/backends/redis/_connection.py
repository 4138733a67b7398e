"""Redis URLs and options into clients: the command client and the pub/sub client.

Both clients draw from a :class:`~redis.asyncio.BlockingConnectionPool`
(Sentinel: the same, Sentinel-managed, so a connection goes to the master of
the moment) of ``max_connections`` connections: Redis runs one command at a
time, so a handful of connections serve any number of elections; a call that
finds them all busy waits up to ``pool_timeout`` for one instead of failing
("Too many connections") or opening one more per concurrent call.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from ..._errors import ConfigError
from .. import parse_options, split_url

__all__ = ["Clients", "Wait", "clients_from_url"]

_OPTIONS: dict[str, type] = {
    "prefix": str,
    "username": str,
    "password": str,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "max_connections": int,
    "pool_timeout": float,
    "wait_replicas": int,
    "wait_timeout": float,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": bool,
    "sentinel_username": str,
    "sentinel_password": str,
}

_DEFAULT_PORT = 6379
_DEFAULT_SENTINEL_PORT = 26379
#: Connections for commands (the pub/sub client has its own one).
_DEFAULT_MAX_CONNECTIONS = 8


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool that waits for a free connection instead of failing."""


@dataclasses.dataclass(frozen=True)
class Wait:
    """The ``wait_replicas``/``wait_timeout`` options: replicas that must confirm a term or a run record."""

    replicas: int = 0
    """0: do not wait (Redis's asynchronous replication)."""
    timeout: float = 0.5
    """Seconds ``WAIT`` may block for them."""

    @property
    def timeout_ms(self) -> int:
        return max(1, math.ceil(self.timeout * 1000))  # WAIT 0 would block forever


def _wait(opts: dict[str, Any], socket_timeout: float) -> Wait:
    wait = Wait(opts.pop("wait_replicas", 0), opts.pop("wait_timeout", Wait.timeout))
    if wait.replicas < 0:
        raise ConfigError(f"wait_replicas must not be negative, got {wait.replicas}", field="wait_replicas")
    if wait.replicas and not 0 < wait.timeout < socket_timeout:
        # WAIT holds the reply back for up to wait_timeout: the socket must outlast it.
        raise ConfigError(
            f"wait_timeout must be positive and less than socket_timeout ({socket_timeout} s), "
            f"got {wait.timeout}",
            field="wait_timeout",
        )
    return wait


@dataclasses.dataclass(frozen=True)
class Clients:
    """What :func:`clients_from_url` makes from a URL."""

    client: aioredis.Redis
    """For commands: retries once on a stale pooled connection."""
    watch_client: aioredis.Redis
    """For the one pub/sub connection: never reconnects behind the watchers' backs."""
    scheme: str
    prefix: str
    sentinel: Sentinel | None
    wait: Wait


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """Parse ``HOST[:PORT][,HOST[:PORT]...]`` (IPv6 in brackets)."""
    hosts = []
    for piece in netloc.split(","):
        try:
            parts = urlsplit("//" + piece)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise ConfigError(f"bad host:port {piece!r}: {exc}", field="backend") from exc
        if not host:
            raise ConfigError(f"missing host in {piece!r}", field="backend")
        hosts.append((host, port or default_port))
    return hosts


def _db(text: str, url: SplitResult) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ConfigError(
            f"the database in {url.scheme}://...{url.path} must be a number, got {text!r}",
            field="backend",
        ) from None
    if db < 0:
        raise ConfigError(f"the database number must not be negative, got {db}", field="backend")
    return db


def _retry(retries: int) -> dict[str, Any]:
    # One immediate reconnect per call, on connection errors only: a pooled
    # connection may be stale after a server restart. No backoff and no
    # retry on timeouts: the elector owns retries.
    return {"retry": Retry(NoBackoff(), retries, (rexc.ConnectionError,)), "retry_on_error": []}


def clients_from_url(url: str, options: dict[str, Any]) -> Clients:
    """The clients for a ``redis://``, ``rediss://`` or ``redis+sentinel://`` URL; opens no connection.

    Raises :class:`ConfigError` naming the URL part or option that is wrong.
    """
    parts = split_url(url)
    if parts.scheme not in ("redis", "rediss", "redis+sentinel"):
        raise ConfigError(f"{parts.scheme}:// is not a Redis URL", field="backend")
    opts = parse_options(parts, _OPTIONS, options)
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    url_user, _, url_password = userinfo.partition(":")
    username: str | None = opts.pop("username", unquote(url_user)) or None
    password: str | None = opts.pop("password", unquote(url_password)) or None
    prefix = opts.pop("prefix", "leaderlib:")
    max_connections = opts.pop("max_connections", _DEFAULT_MAX_CONNECTIONS)
    if max_connections < 1:
        raise ConfigError(
            f"max_connections must be at least 1, got {max_connections}", field="max_connections"
        )
    pool_timeout = opts.pop("pool_timeout", 5.0)
    if pool_timeout <= 0:
        raise ConfigError(f"pool_timeout must be positive, got {pool_timeout}", field="pool_timeout")
    if opts.get("ssl_cert_reqs", "required") not in ("required", "optional", "none"):
        raise ConfigError(
            f"ssl_cert_reqs must be required, optional or none, got {opts['ssl_cert_reqs']!r}",
            field="ssl_cert_reqs",
        )
    if parts.scheme != "rediss" and any(key.startswith("ssl_") for key in opts):
        raise ConfigError(f"ssl_* options need rediss://, not {parts.scheme}://", field="backend")
    if parts.scheme != "redis+sentinel" and any(k.startswith("sentinel_") for k in opts):
        raise ConfigError(
            f"sentinel_* options need redis+sentinel://, not {parts.scheme}://", field="backend"
        )
    common: dict[str, Any] = {
        "username": username,
        "password": password,
        "socket_timeout": opts.pop("socket_timeout", 1.0),
        "socket_connect_timeout": opts.pop("socket_connect_timeout", 1.0),
        "health_check_interval": 0,
    }
    wait = _wait(opts, common["socket_timeout"])
    # The pub/sub pool needs one connection; a second covers a reconnect
    # racing the close of the broken one.
    sizes = {"client": max_connections, "watch": 2}
    path = [piece for piece in parts.path.split("/") if piece]

    if parts.scheme == "redis+sentinel":
        if not path or len(path) > 2:
            raise ConfigError(
                f"expected redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE_NAME[/DB], got {url!r}",
                field="backend",
            )
        db = _db(path[1], parts) if len(path) == 2 else 0
        sentinel_kwargs: dict[str, Any] = {
            "username": opts.pop("sentinel_username", None),
            "password": opts.pop("sentinel_password", None),
            "socket_timeout": common["socket_timeout"],
            "socket_connect_timeout": common["socket_connect_timeout"],
            **_retry(1),
        }
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            _hosts(hostinfo, _DEFAULT_SENTINEL_PORT), sentinel_kwargs=sentinel_kwargs
        )

        def master(size: int, retries: int) -> aioredis.Redis:
            client: aioredis.Redis = sentinel.master_for(
                path[0],
                db=db,
                connection_pool_class=_BlockingSentinelPool,
                max_connections=size,
                timeout=pool_timeout,
                **common,
                **_retry(retries),
            )
            return client

        return Clients(
            master(sizes["client"], 1), master(sizes["watch"], 0), parts.scheme, prefix, sentinel, wait
        )

    hosts = _hosts(hostinfo, _DEFAULT_PORT)
    if len(hosts) != 1 or len(path) > 1:
        raise ConfigError(
            f"expected {parts.scheme}://[USER:PASSWORD@]HOST[:PORT][/DB], got {url!r}",
            field="backend",
        )
    host, port = hosts[0]
    kwargs = dict(common, host=host, port=port, db=_db(path[0], parts) if path else 0)
    if parts.scheme == "rediss":
        kwargs["connection_class"] = aioredis.SSLConnection
        kwargs.update(opts)

    def standalone(size: int, retries: int) -> aioredis.Redis:
        pool = BlockingConnectionPool(max_connections=size, timeout=pool_timeout, **kwargs, **_retry(retries))
        client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        return client

    return Clients(
        standalone(sizes["client"], 1), standalone(sizes["watch"], 0), parts.scheme, prefix, None, wait
    )

"""``redis://``, ``rediss://``, ``redis+sentinel://``: leases in Redis.

URL forms::

    redis://[USER:PASSWORD@]HOST[:PORT][/DB][?OPTIONS]
    rediss://[USER:PASSWORD@]HOST[:PORT][/DB]?ssl_ca_certs=/etc/ca.pem[&ssl_certfile=...&ssl_keyfile=...]
    redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE_NAME[/DB][?OPTIONS]

``PORT`` defaults to 6379 (26379 for Sentinel), ``DB`` to 0. ``USER`` and
``PASSWORD`` are percent-decoded; for Sentinel they are the master's
credentials (the Sentinels' own are ``sentinel_username`` and
``sentinel_password``). Options, from the query string or as keyword
arguments to :meth:`RedisBackend.from_url` (keywords win):

``prefix`` (str, default ``leaderlib:``)
    Prepended to every key and channel this backend touches.
``username``, ``password`` (str)
    Credentials, instead of putting them in the URL.
``socket_timeout``, ``socket_connect_timeout`` (float seconds, default 1.0)
    Bounds on one request and on opening a connection. The elector bounds
    every call by its own deadline as well.
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` (paths), ``ssl_cert_reqs``
    (``required`` | ``optional`` | ``none``, default ``required``),
    ``ssl_check_hostname`` (bool, default true)
    TLS settings for ``rediss://``.
``sentinel_username``, ``sentinel_password`` (str)
    Credentials for the Sentinels themselves (``redis+sentinel://`` only).

Layout, for election ``E`` and prefix ``P``:

``P E`` (string, with PX expiry)
    The lease: JSON ``{"holder", "token", "fencing_token", "transitions",
    "lease_duration", "acquire_time", "renew_time", "seq"}``. ``token`` is
    random per acquisition and is what renew and release compare; ``seq``
    counts writes within one leadership. The record's ``version`` is
    ``"<token>.<seq>"``.
``P E :fencing`` (integer, never expires)
    The fencing counter, INCRed by the same Lua script that creates the
    lease, so a lease and its fencing token can never disagree.
``P E :events`` (pub/sub channel)
    A new leadership publishes ``acquired`` here and a release publishes
    ``released`` (renewals publish nothing); :meth:`RedisBackend.watch`
    subscribes, so a follower tries at once after a release instead of at
    its next retry. Expiry publishes nothing: a crashed leader's lease is
    found by the elector's polling, at the ``expires_in`` Redis reports.

Redis expires leases itself (PX): a follower takes a lease that Redis has
dropped or that was released; ``takeover`` replaces a live lease only if it
is exactly that version (a term the elector itself ended, say).
Replication is asynchronous: after a master failover the new master may
lack the last lease write (two leaders) or even the last INCR (a reused
fencing token). See ``docs/backends/redis.md`` for what that means.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from .._clock import Clock, SystemClock
from .._errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    CorruptLeaseRecord,
    LeaseLost,
)
from .._logging import get_logger
from . import Acquisition, LeaseRecord, check_election, parse_options, split_url
from ._errors import ErrorMap, Row, error_map

__all__ = ["RedisBackend", "RedisLease"]

logger = get_logger(__name__)

_OPTIONS: dict[str, type] = {
    "prefix": str,
    "username": str,
    "password": str,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": bool,
    "sentinel_username": str,
    "sentinel_password": str,
}

#: Key suffixes an election's lease key shares with its other keys, and what they hold.
_RESERVED_SUFFIXES = {":fencing": "fencing counter", ":events": "events channel"}

_DEFAULT_PORT = 6379
_DEFAULT_SENTINEL_PORT = 26379

# Start a new term if nobody holds the lease, or if it is exactly the version
# the elector judged ended (ARGV[4]); otherwise report who holds it. One
# round trip either way.
#   KEYS[1]  the lease key            KEYS[2]  the fencing counter key
#   ARGV[1]  lease in milliseconds
#   ARGV[2]  the new record as a JSON object without its closing brace and
#            without fencing_token/transitions, which the script appends
#            (holder, random token, lease_duration, acquire/renew time, seq 1)
#   ARGV[3]  the takeover version "<token>.<seq>", or "" for none
#   returns  {value, pttl_ms, acquired}: the value now at KEYS[1], and 1 if
#            this call wrote it
#   publishes 'acquired' on KEYS[1]..':events' for a new term
# A live lease is never adopted because its holder names us: every new term
# gets a new fencing token, and only the exact version the elector ended
# (its own lost term, say) may be replaced before Redis expires it.
# Redis does not undo a script's writes when a later command in it fails,
# so everything that can fail (INCR on a broken counter, PUBLISH without the
# ACL channel permission) runs before the SET. Subscribers still hear the
# PUBLISH only after the script, when the SET is in place. INCR comes after
# the GET so a failed attempt never burns a token. The record is built by
# concatenation and the arguments are few: this is the hot path, measured
# against a bare SET NX PX.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ended = false
  if ARGV[3] ~= '' then
    local ok, rec = pcall(cjson.decode, current)
    ended = ok and type(rec) == 'table' and (tostring(rec.token) .. '.' .. tostring(rec.seq)) == ARGV[3]
  end
  if not ended then
    return {current, redis.call('PTTL', KEYS[1]), 0}
  end
end
local fencing = redis.call('INCR', KEYS[2])
local value = ARGV[2] .. ',"fencing_token":' .. fencing .. ',"transitions":' .. (fencing - 1) .. '}'
redis.call('PUBLISH', KEYS[1] .. ':events', 'acquired')
redis.call('SET', KEYS[1], value, 'PX', ARGV[1])
return {value, tonumber(ARGV[1]), 1}
"""

# Extend the lease if it is still the one acquired with ARGV[1].
#   KEYS[1]  the lease key
#   ARGV[1]  the acquisition's random token   ARGV[2]  lease in milliseconds
#   ARGV[3]  wall time now, ISO-8601
#   returns  the new value, or false if the key holds anything else (lease lost)
_RENEW = """
local current = redis.call('GET', KEYS[1])
if not current then return false end
local ok, rec = pcall(cjson.decode, current)
if not ok or type(rec) ~= 'table' or rec.token ~= ARGV[1] then return false end
rec.seq = (tonumber(rec.seq) or 0) + 1
rec.renew_time = ARGV[3]
local value = cjson.encode(rec)
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

# Delete the lease if it is still the one acquired with ARGV[1], and tell
# the followers at once.
#   KEYS[1]  the lease key
#   ARGV[1]  the acquisition's random token
#   returns  1 if released, 0 if the lease was no longer ours
#   publishes 'released' on KEYS[1]..':events'
# PUBLISH before DEL: if the ACL refuses the channel, the lease stays ours.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, rec = pcall(cjson.decode, current)
if not ok or type(rec) ~= 'table' or rec.token ~= ARGV[1] then return 0 end
redis.call('PUBLISH', KEYS[1] .. ':events', 'released')
redis.call('DEL', KEYS[1])
return 1
"""

#: What a least-privilege ACL user needs, for error messages and the docs.
_GRANT = (
    "ACL SETUSER <user> on >PASSWORD resetkeys ~{prefix}* resetchannels &{prefix}* "
    "+get +pttl +evalsha +script|load +subscribe +unsubscribe +ping "
    "+set +incr +del +publish"
)


@dataclasses.dataclass(frozen=True)
class _Script:
    """A Lua script run by SHA; its source is sent once per server (SCRIPT LOAD on NOSCRIPT)."""

    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()  # Redis names scripts by SHA1


_ACQUIRE_SCRIPT = _Script("acquire", _ACQUIRE)
_RENEW_SCRIPT = _Script("renew", _RENEW)
_RELEASE_SCRIPT = _Script("release", _RELEASE)


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


def _iso(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def _acl_refusal(exc: BaseException, lease: RedisLease) -> bool:
    # An ACL refusal inside a script arrives as a plain ERR reply.
    text = str(exc)
    return "NOPERM" in text or "no permissions" in text or "can't run this command" in text


#: redis-py's errors as leaderlib's; messages name the keys and the ACL grant needed.
_ERRORS: ErrorMap[RedisLease] = error_map(
    [
        Row(
            rexc.AuthenticationError,
            AccessDenied,
            lambda exc, lease: (
                f"Redis refused the credentials ({exc}); check the user and password in the "
                "URL or the username/password options"
            ),
        ),
        Row(
            (rexc.NoPermissionError, rexc.AuthorizationError),
            AccessDenied,
            lambda exc, lease: lease._backend._denied(exc),
        ),
        Row(
            rexc.ReadOnlyError,
            BackendUnavailable,
            lambda exc, lease: (
                f"Redis answered from a read-only replica ({exc}); point the URL at the master "
                "or use redis+sentinel://"
            ),
        ),
        Row(
            rexc.ResponseError,
            AccessDenied,
            lambda exc, lease: lease._backend._denied(exc),
            when=_acl_refusal,
        ),
        Row(
            rexc.ResponseError,
            CorruptLeaseRecord,
            lambda exc, lease: (
                f"Redis key {lease.key!r} or {lease.fencing_key!r} holds a "
                f"value of the wrong kind ({exc}); delete it or choose another prefix"
            ),
            when=lambda exc, lease: "WRONGTYPE" in str(exc) or "not an integer" in str(exc),
        ),
        Row(
            rexc.ResponseError, BackendUnavailable, lambda exc, lease: f"Redis answered with an error: {exc}"
        ),
        # ConnectionError, TimeoutError, BusyLoadingError, MasterNotFoundError...
        Row(
            (rexc.RedisError, OSError),
            BackendUnavailable,
            lambda exc, lease: f"Redis is unreachable: {type(exc).__name__}: {exc}",
        ),
    ]
)


class RedisBackend:
    """Leases in Redis; see the module docstring for URLs, options and key layout."""

    observation_granularity = 0.0  # the store expires leases itself (PX)

    def __init__(
        self,
        client: aioredis.Redis,
        watch_client: aioredis.Redis,
        *,
        scheme: str = "redis",
        prefix: str = "leaderlib:",
        sentinel: Sentinel | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.scheme = scheme
        self.prefix = prefix
        self._client = client
        # Pub/sub gets a client that never reconnects behind our back: a
        # dropped subscription may have missed a release, so watch() must
        # fail and let the elector poll, rather than resume silently.
        self._watch_client = watch_client
        self._sentinel = sentinel
        self._username: str | None = client.connection_pool.connection_kwargs.get("username")
        self._clock = clock or SystemClock()
        self._leases: dict[str, RedisLease] = {}

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> RedisBackend:
        """Make a backend from a ``redis://``, ``rediss://`` or ``redis+sentinel://`` URL.

        Raises :class:`ConfigError` naming the URL part or option that is wrong.
        No connection is opened until the first call.
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
        path = [piece for piece in parts.path.split("/") if piece]

        def retry(retries: int) -> dict[str, Any]:
            # One immediate reconnect per call, on connection errors only:
            # a pooled connection may be stale after a server restart. No
            # backoff and no retry on timeouts: the elector owns retries.
            return {"retry": Retry(NoBackoff(), retries, (rexc.ConnectionError,)), "retry_on_error": []}

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
                **retry(1),
            }
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                _hosts(hostinfo, _DEFAULT_SENTINEL_PORT), sentinel_kwargs=sentinel_kwargs
            )
            client = sentinel.master_for(path[0], db=db, **common, **retry(1))
            watch_client = sentinel.master_for(path[0], db=db, **common, **retry(0))
            return cls(
                client, watch_client, scheme=parts.scheme, prefix=prefix, sentinel=sentinel, clock=clock
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
            kwargs["ssl"] = True
            kwargs.update(opts)
        return cls(
            aioredis.Redis(**kwargs, **retry(1)),
            aioredis.Redis(**kwargs, **retry(0)),
            scheme=parts.scheme,
            prefix=prefix,
            clock=clock,
        )

    def _now(self) -> str:
        return self._clock.wall().isoformat(timespec="microseconds")

    def _head(self, identity: str, lease_duration: float) -> str:
        """A new record as JSON without its closing brace; the acquire script appends the fencing token.

        Formatted by hand (the identity JSON-escaped) because this runs on
        every acquisition attempt and json.dumps with options is slower.
        """
        now = self._now()
        return (
            f'{{"holder":{json.dumps(identity)},"token":"{secrets.token_hex(8)}",'
            f'"lease_duration":{float(lease_duration)!r},"acquire_time":"{now}","renew_time":"{now}","seq":1'
        )

    # -- the Backend Protocol -------------------------------------------------

    def lease(self, election: str) -> RedisLease:
        """The election's handle (the same one each time); ConfigError for a name that collides.

        Election ``E`` also owns ``E:fencing`` and ``E:events``, so a name
        ending in one of those suffixes would share another election's
        counter or channel.
        """
        check_election(election)
        for suffix in _RESERVED_SUFFIXES:
            if election.endswith(suffix):
                raise ConfigError(
                    f"election name {election!r} ends in {suffix!r}, which the Redis backend uses for "
                    f"election {election[: -len(suffix)]!r}'s {_RESERVED_SUFFIXES[suffix]}; "
                    "choose a name without that ending",
                    field="election",
                )
        handle = self._leases.get(election)
        if handle is None:
            handle = self._leases[election] = RedisLease(self, election)
        return handle

    def _denied(self, exc: BaseException) -> str:
        grant = _GRANT.format(prefix=self.prefix).replace("<user>", self._username or "<user>")
        return f"the Redis user lacks a permission ({exc}); it needs: {grant}"

    async def aclose(self) -> None:
        """Close both connection pools (and the Sentinel connections)."""
        with contextlib.suppress(Exception):
            await self._client.aclose()
        with contextlib.suppress(Exception):
            await self._watch_client.aclose()
        if self._sentinel is not None:
            with contextlib.suppress(Exception):
                await self._sentinel.aclose()


class RedisLease:
    """One election's keys and channel in Redis (see the module docstring for the layout)."""

    _backend: RedisBackend
    key: str
    fencing_key: str
    channel: str

    def __init__(self, backend: RedisBackend, election: str) -> None:
        self.election = election
        self._backend = backend
        self.key = f"{backend.prefix}{election}"
        """The Redis key holding the election's lease."""
        self.fencing_key = f"{self.key}:fencing"
        """The Redis key counting the election's leaderships (its fencing tokens)."""
        self.channel = f"{self.key}:events"
        """The pub/sub channel on which the election's acquisitions and releases are announced."""

    # -- errors ---------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn every ``redis`` exception raised inside into leaderlib's (:data:`_ERRORS`);
        honour lost cancellations.

        On Python 3.11, ``asyncio.wait_for`` (which redis-py uses to bound a
        socket write) drops a cancellation that arrives just as the write
        completes, and the call then runs on as if never cancelled. The
        task still counts the request (``Task.cancelling()``), so if the
        count grew during the call, the cancellation is raised here. Without
        this a cancelled watch() could block forever on its subscription.
        """
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        with _ERRORS.translating(self, election=self.election, backend=self._backend.scheme):
            yield
        if task is not None and task.cancelling() > cancelling:
            raise asyncio.CancelledError()

    async def _run(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` by SHA, loading it once if the server does not know it (NOSCRIPT)."""
        client = self._backend._client
        with self._translated():
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                # First use on this server, or it restarted / ran SCRIPT FLUSH.
                # NOSCRIPT means nothing ran, so running it again is safe.
                logger.debug("loading lua script", extra={"script": script.name, "election": self.election})
                await client.script_load(script.source)
                return await client.evalsha(script.sha, len(keys), *keys, *args)

    # -- records --------------------------------------------------------------
    def _record(self, raw: bytes, pttl: int | None) -> LeaseRecord:
        """Parse the stored JSON; raise CorruptLeaseRecord naming the key if it is not a lease."""
        election, scheme = self.election, self._backend.scheme
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            holder, token = data["holder"], data["token"]
            fencing, lease = data["fencing_token"], data["lease_duration"]
            seq = data.get("seq", 0)
            if not isinstance(holder, str) or not isinstance(token, str) or not token:
                raise ValueError("holder and token must be strings")
            if not all(isinstance(n, int | float) and float(n).is_integer() for n in (fencing, seq)):
                raise ValueError("fencing_token and seq must be integers")
            if not isinstance(lease, int | float) or not lease > 0:
                raise ValueError("lease_duration must be a positive number")
            transitions = data.get("transitions", int(fencing) - 1)
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            shown = raw[:80].decode("utf-8", "replace") if isinstance(raw, bytes) else repr(raw)
            raise CorruptLeaseRecord(
                f"Redis key {self.key!r} does not hold a leaderlib lease record "
                f"({reason}; value starts {shown!r}); delete it or choose another prefix",
                election=election,
                backend=scheme,
            ) from exc
        if pttl == -1:
            # leaderlib always writes leases with PX: a key that never expires
            # was written by hand and would hold the election forever.
            key = self.key
            raise CorruptLeaseRecord(
                f"Redis key {key!r} holds a lease for {holder!r} with no expiry (PTTL -1), so it "
                f"would hold the election forever; leaderlib always sets one. Delete it "
                f"(redis-cli DEL {key}) or give it a TTL (redis-cli PEXPIRE {key} MILLISECONDS)",
                election=election,
                backend=scheme,
            )
        return LeaseRecord(
            election=election,
            holder=holder,
            lease_duration=float(lease),
            fencing_token=int(fencing),
            version=f"{token}.{int(seq)}",
            transitions=int(transitions) if isinstance(transitions, int | float) else 0,
            acquire_time=_iso(data.get("acquire_time")),
            renew_time=_iso(data.get("renew_time")),
            expires_in=pttl / 1000 if pttl is not None and pttl >= 0 else None,
        )

    # -- the Lease Protocol -------------------------------------------------

    async def get(self) -> LeaseRecord | None:
        """The current record, in one round trip (GET and PTTL pipelined)."""
        key = self.key
        with self._translated():
            async with self._backend._client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, pttl = await pipe.execute()
        return None if raw is None else self._record(raw, pttl)

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        """One EVALSHA: start a new term with a new fencing token, or learn who holds the lease."""
        if not identity:
            raise ConfigError("identity must not be empty", field="identity")
        value, pttl, acquired = await self._run(
            _ACQUIRE_SCRIPT,
            [self.key, self.fencing_key],
            [
                math.ceil(lease_duration * 1000),
                self._backend._head(identity, lease_duration),
                takeover.version if takeover is not None else "",
            ],
        )
        record = self._record(value, int(pttl))
        if acquired:
            logger.debug(
                "acquired lease", extra={"election": self.election, "fencing_token": record.fencing_token}
            )
        return Acquisition(acquired=bool(acquired), record=record)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        """Extend our lease by compare-and-set on its acquisition token; LeaseLost if it is gone."""
        value = await self._run(
            _RENEW_SCRIPT,
            [self.key],
            [_token(record), math.ceil(record.lease_duration * 1000), self._backend._now()],
        )
        if value is None:
            raise LeaseLost(
                "the Redis lease expired or another replica holds it",
                election=self.election,
                backend=self._backend.scheme,
            )
        return self._record(value, math.ceil(record.lease_duration * 1000))

    async def release(self, record: LeaseRecord) -> None:
        """Delete our lease (compare-and-set on the token) and publish on the release channel."""
        released = await self._run(_RELEASE_SCRIPT, [self.key], [_token(record)])
        logger.debug("released lease", extra={"election": self.election, "released": bool(released)})

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        """Yield the record now and after each acquisition or release; BackendUnavailable if the subscription drops.

        Renewals and expiry publish nothing: a crashed leader's lease is
        found by the elector's polling (using ``expires_in``). Each watch has
        its own subscription for now; one pub/sub connection per backend,
        dispatching by :attr:`channel` to the handles, replaces it next.
        """
        pubsub = self._backend._watch_client.pubsub(ignore_subscribe_messages=True)
        try:
            with self._translated():
                # Subscribe before the first read, so a release between the
                # two is still heard.
                await pubsub.subscribe(self.channel)
            while True:
                yield await self.get()
                with self._translated():
                    while await pubsub.get_message(ignore_subscribe_messages=True, timeout=None) is None:
                        pass
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _token(record: LeaseRecord) -> str:
    """The acquisition's random token in a record's version ``"<token>.<seq>"``."""
    return record.version.partition(".")[0]

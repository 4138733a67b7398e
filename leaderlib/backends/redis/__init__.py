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
``max_connections`` (int, default 8), ``pool_timeout`` (float seconds, default 5.0)
    The command connections, shared by every election of the backend
    object (plus one pub/sub connection for all watches), and how long a
    call waits for a free one before it is BackendUnavailable. Every
    election's lease writes go out together, pipelined on one of them
    (``_pipeline``): one round trip for all the writes due at once.
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` (paths), ``ssl_cert_reqs``
    (``required`` | ``optional`` | ``none``, default ``required``),
    ``ssl_check_hostname`` (bool, default true)
    TLS settings for ``rediss://``.
``sentinel_username``, ``sentinel_password`` (str)
    Credentials for the Sentinels themselves (``redis+sentinel://`` only).
``wait_replicas`` (int, default 0), ``wait_timeout`` (float seconds, default 0.5)
    With ``wait_replicas=N``, an acquisition and a run record count only once
    ``WAIT N`` confirms that N replicas have them (pipelined after the
    script: the same round trip). An acquisition fewer confirm within
    ``wait_timeout`` is given back (released) and raises BackendUnavailable;
    so does such a run record (it stays on the master). See
    ``docs/backends/redis.md`` for what it guarantees across a failover.
    ``wait_timeout`` must be less than ``socket_timeout``.

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
``P E :runs`` (hash, never expires)
    Each job's last run record (field: the job's name; value: the JSON of
    ``_runs.encode_run``), HSET by a script that checks the lease is the
    run's term in the same step. It outlives the lease.
``P E :events`` (pub/sub channel)
    Every write a follower must hear publishes its result here, inside the
    script that writes it: ``acquired <pttl_ms> <value>``, ``renewed
    <pttl_ms> <value>``, ``released``. A follower's watch builds the record
    from the message alone (no GET), so renewals reach it with a fresh
    ``expires_in`` and it need not poll. One pub/sub connection per backend
    object carries every election's channel. Expiry publishes nothing: a
    crashed leader's lease is found at the ``expires_in`` last seen.

Redis expires leases itself (PX): a follower takes a lease that Redis has
dropped or that was released; ``takeover`` replaces a live lease only if it
is exactly that version (a term the elector itself ended, say).
Replication is asynchronous: after a master failover the new master may
lack the last lease write (two leaders) or even the last INCR (a reused
fencing token) unless ``wait_replicas`` is set. See ``docs/backends/redis.md``
for what that means.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from ..._clock import Clock, SystemClock
from ..._errors import ConfigError
from .. import check_election
from .._batch import Batcher
from ._connection import Wait, clients_from_url
from ._lease import RedisLease
from ._pipeline import BATCH_LIMIT, Call, run_scripts
from ._scripts import GRANT, WAIT_GRANT
from ._watch import Subscriber

__all__ = ["RedisBackend", "RedisLease"]

#: Key suffixes an election's lease key shares with its other keys, and what they hold.
_RESERVED_SUFFIXES = {":fencing": "fencing counter", ":events": "events channel", ":runs": "job run records"}


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
        wait: Wait | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.scheme = scheme
        self.prefix = prefix
        self.wait = wait or Wait()
        """The replicas that must confirm an acquisition or a run record (none by default)."""
        self._client = client
        # Pub/sub gets a client that never reconnects behind our back: a
        # dropped subscription may have missed a release, so watch() must
        # fail and let the elector poll, rather than resume silently.
        self._watch_client = watch_client
        self._sentinel = sentinel
        self._username: str | None = client.connection_pool.connection_kwargs.get("username")
        self._clock = clock or SystemClock()
        self._leases: dict[str, RedisLease] = {}
        self._pubsub: Subscriber | None = None
        # Every election's script calls go out in shared pipelines (see _pipeline).
        self._scripts: Batcher[Call, tuple[Any, int]] = Batcher(
            functools.partial(run_scripts, client, self.wait), limit=BATCH_LIMIT
        )

    async def _follow_master(self) -> None:
        """With Sentinel, drop idle connections to a master the Sentinels no longer name.

        A follower that does not poll may keep an idle connection to a master
        that was paused and failed over; woken, that ex-master still accepts
        writes until it is demoted, so an acquisition sent there would start a
        second term. One Sentinel query per acquisition attempt (they are rare
        once followers watch) prevents it; renewals and reads skip it.
        """
        if self._sentinel is not None:
            pool = self._client.connection_pool
            if isinstance(pool, SentinelConnectionPool):
                await pool.get_master_address()  # type: ignore[no-untyped-call]

    def _subscriber(self) -> Subscriber:
        """The backend's one pub/sub connection, shared by every election's watches (made on first use)."""
        if self._pubsub is None:
            self._pubsub = Subscriber(self._watch_client)
        return self._pubsub

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> RedisBackend:
        """Make a backend from a ``redis://``, ``rediss://`` or ``redis+sentinel://`` URL.

        Raises :class:`ConfigError` naming the URL part or option that is wrong.
        No connection is opened until the first call.
        """
        made = clients_from_url(url, options)
        return cls(
            made.client,
            made.watch_client,
            scheme=made.scheme,
            prefix=made.prefix,
            sentinel=made.sentinel,
            wait=made.wait,
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

        Election ``E`` also owns ``E:fencing``, ``E:events`` and ``E:runs``,
        so a name ending in one of those suffixes would share another
        election's counter, channel or run records.
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
        grant = GRANT + (WAIT_GRANT if self.wait.replicas else "")
        grant = grant.format(prefix=self.prefix).replace("<user>", self._username or "<user>")
        return f"the Redis user lacks a permission ({exc}); it needs: {grant}"

    async def aclose(self) -> None:
        """Close the pub/sub connection, both connection pools (and the Sentinel connections)."""
        await self._scripts.aclose()
        if self._pubsub is not None:
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._client.aclose()
        with contextlib.suppress(Exception):
            await self._watch_client.aclose()
        if self._sentinel is not None:
            with contextlib.suppress(Exception):
                await self._sentinel.aclose()

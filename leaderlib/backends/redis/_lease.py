"""One election's keys and channel in Redis: :class:`RedisLease`, and the error table."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import redis.exceptions as rexc

from ..._errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    CorruptLeaseRecord,
    LeaseLost,
)
from ..._logging import get_logger
from .. import Acquisition, JobRun, LeaseRecord
from .._errors import ErrorMap, Row, error_map
from .._runs import decode_run, encode_run, fenced_out
from ._pipeline import Call
from ._scripts import ACQUIRE, RECORD_RUN, RELEASE, RENEW, Script

if TYPE_CHECKING:
    from . import RedisBackend

__all__ = ["RedisLease"]

logger = get_logger("leaderlib.backends.redis")


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
                f"Redis key {lease.key!r}, {lease.fencing_key!r} or {lease.runs_key!r} holds a "
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


class RedisLease:
    """One election's keys and channel in Redis (see the module docstring for the layout)."""

    _backend: RedisBackend
    key: str
    fencing_key: str
    runs_key: str
    channel: str

    def __init__(self, backend: RedisBackend, election: str) -> None:
        self.election = election
        self._backend = backend
        self.key = f"{backend.prefix}{election}"
        """The Redis key holding the election's lease."""
        self.fencing_key = f"{self.key}:fencing"
        """The Redis key counting the election's leaderships (its fencing tokens)."""
        self.runs_key = f"{self.key}:runs"
        """The Redis hash of the election's job run records (field: job name)."""
        self.channel = f"{self.key}:events"
        """The pub/sub channel on which the election's acquisitions and releases are announced."""
        self._seen_token = 0
        """The highest fencing token in any record this handle has read (:meth:`_record`):
        an acquisition never takes a token at or below it, even from a counter Redis
        lost (see the ACQUIRE script)."""

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

    async def _run(
        self, script: Script, keys: list[str], args: list[Any], *, confirm: bool = False
    ) -> tuple[Any, int]:
        """Run ``script`` by SHA; its reply, and how many replicas have its writes.

        With ``confirm`` (and ``wait_replicas`` set), the count is what ``WAIT``
        saw within ``wait_timeout``; otherwise 0. The call goes out in the
        backend's next pipeline, with every other election's calls due by then
        (:mod:`._pipeline`): one round trip for all of them.
        """
        try:
            return await self._backend._scripts.call(Call(script, keys, args, confirm))
        except Exception:
            # Translated only when it failed: a cancellation redis-py lost in a lone
            # call (made in this task) is raised by Batcher.call itself.
            with self._translated():
                raise

    def _unconfirmed(self, confirmed: int, what: str) -> BackendUnavailable:
        """The error for a write fewer replicas have than ``wait_replicas`` asks for."""
        wait = self._backend.wait
        return BackendUnavailable(
            f"{what} reached {confirmed} of the {wait.replicas} replicas wait_replicas asks for "
            f"within wait_timeout ({wait.timeout} s), so a master failover could lose it",
            election=self.election,
            backend=self._backend.scheme,
        )

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
        self._seen_token = max(self._seen_token, int(fencing))
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
        with self._translated():
            await self._backend._follow_master()
        (value, pttl, acquired, behind), confirmed = await self._run(
            ACQUIRE,
            [self.key, self.fencing_key],
            [
                math.ceil(lease_duration * 1000),
                self._backend._head(identity, lease_duration),
                takeover.version if takeover is not None else "",
                self._seen_token,
            ],
            confirm=True,
        )
        record = self._record(value, int(pttl))
        if behind:
            logger.warning(
                "fencing counter behind a token already seen; Redis lost writes",
                extra={
                    "election": self.election,
                    "counter": int(behind),
                    "fencing_token": record.fencing_token,
                    "key": self.fencing_key,
                },
            )
        if acquired and confirmed < self._backend.wait.replicas:
            # Not a term anyone may act on: a promoted replica without it would
            # hand out the same token again. Give it back so the next attempt
            # (ours or a follower's, woken by the release) need not wait for expiry.
            await self.release(record)
            raise self._unconfirmed(confirmed, f"the acquisition (fencing token {record.fencing_token})")
        if acquired:
            logger.debug(
                "acquired lease", extra={"election": self.election, "fencing_token": record.fencing_token}
            )
        return Acquisition(acquired=bool(acquired), record=record)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        """Extend our lease by compare-and-set on its acquisition token; LeaseLost if it is gone.

        The script answers with the new ``seq`` alone: the renewed record is
        ``record`` with that version, the renew time sent and a full lease.
        """
        token, lease_ms, now = (
            _token(record),
            math.ceil(record.lease_duration * 1000),
            self._backend._clock.wall(),
        )
        seq, _ = await self._run(RENEW, [self.key], [token, lease_ms, now.isoformat(timespec="microseconds")])
        if seq is None:
            raise LeaseLost(
                "the Redis lease expired or another replica holds it",
                election=self.election,
                backend=self._backend.scheme,
            )
        return dataclasses.replace(
            record, version=f"{token}.{int(seq)}", renew_time=now, expires_in=lease_ms / 1000
        )

    async def release(self, record: LeaseRecord) -> None:
        """Delete our lease (compare-and-set on the token) and publish on the release channel."""
        released, _ = await self._run(RELEASE, [self.key], [_token(record)])
        logger.debug("released lease", extra={"election": self.election, "released": bool(released)})

    async def record_run(self, run: JobRun) -> None:
        """One EVALSHA: write the job's record into :attr:`runs_key` if the lease is still ``run``'s term.

        LeaseLost (nothing written) if it is not; with ``wait_replicas``,
        BackendUnavailable if too few replicas confirmed it in time (it is
        written on the master, but a failover could lose it).
        """
        (written, *now), confirmed = await self._run(
            RECORD_RUN,
            [self.key, self.runs_key],
            [run.identity, run.fencing_token, run.job, encode_run(run)],
            confirm=True,
        )
        if not written:
            holder, token = (_text(part) for part in now)
            raise fenced_out(
                run,
                holder=holder or None,
                token=int(token) if token else None,
                backend=self._backend.scheme,
                election=self.election,
            )
        if confirmed < self._backend.wait.replicas:
            raise self._unconfirmed(confirmed, f"the run record of job {run.job!r}")

    async def last_runs(self) -> dict[str, JobRun]:
        """One HGETALL of :attr:`runs_key`; CorruptLeaseRecord if a record does not read as a run."""
        with self._translated():
            stored = await self._backend._client.hgetall(self.runs_key)
        return {
            _text(job): decode_run(raw, election=self.election, backend=self._backend.scheme)
            for job, raw in stored.items()
        }

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        """Yield the record now, then after each acquisition, renewal and release, from the message alone.

        Every lease write publishes its result on :attr:`channel` (see
        ``_scripts``), so a renewal reaches a follower with a fresh
        ``expires_in`` and version without a GET; a message without a record
        (a leaderlib that published bare ``acquired``) costs one GET. The
        subscription is the backend's one pub/sub connection, shared by every
        election; raises BackendUnavailable when that connection breaks (a
        message may have been missed), and the next watch reconnects. Expiry
        publishes nothing: a crashed leader's lease is found at the
        ``expires_in`` of the last record seen.
        """
        subscriber = self._backend._subscriber()
        with self._translated():
            # Subscribed (confirmed) before the first read, so a release
            # between the two is still heard.
            watcher = await subscriber.add(self.channel)
        try:
            yield await self.get()
            while True:
                item = await watcher.queue.get()
                if isinstance(item, BaseException):
                    raise BackendUnavailable(
                        f"the Redis subscription to {self.channel!r} broke "
                        f"({type(item).__name__}: {item}); watch again to resubscribe",
                        election=self.election,
                        backend=self._backend.scheme,
                    ) from item
                yield await self._from_message(item)
        finally:
            await subscriber.remove(watcher)

    async def _from_message(self, data: bytes) -> LeaseRecord | None:
        """The record a message on :attr:`channel` announces (GET only for one without a record)."""
        kind, _, rest = data.partition(b" ")
        if kind == b"released":
            return None
        pttl, _, value = rest.partition(b" ")
        if kind in (b"acquired", b"renewed") and value and pttl.isdigit():
            return self._record(value, int(pttl))
        return await self.get()


def _text(value: bytes | str) -> str:
    """A reply's bytes as text (a hash field, a holder): never fails on bytes that are not UTF-8."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _token(record: LeaseRecord) -> str:
    """The acquisition's random token in a record's version ``"<token>.<seq>"``."""
    return record.version.partition(".")[0]

"""The election algorithm: acquire, renew, step down, release, observe.

Every timing decision lives here; backends only read and compare-and-swap a
record. The safety rules, in the order the code applies them:

1. A leader trusts only its own monotonic clock. Its term is valid until
   ``(when the acquiring or last successful renewing request was SENT) +
   renew_deadline``. When that passes without a renewal it steps down: the
   leader's work is cancelled before any follower may take over. Where other
   electors may miss a renewal (``Backend.observation_granularity``), the
   deadline is at most ``lease_duration`` minus that granularity.
2. A follower never compares a remote timestamp with its clock. It counts
   ``lease_duration`` on its own monotonic clock from when it last saw the
   record change (or the store's own remaining TTL, where the store expires
   leases itself) before it asks the store to replace the record, and the
   store replaces it only if it is still exactly the version seen.
3. Each term carries a fencing token that strictly increases per election.
4. A term that outlived its deadline (a paused process) is over: the leader
   checks its clock before acting again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential, wait_random

from ._clock import Clock, SystemClock, wait_for
from ._config import ElectionConfig
from ._errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    ConfigError,
    CorruptLeaseRecord,
    LeaseLost,
    NotLeader,
)
from ._logging import get_logger
from ._telemetry import instruments, start_election, tracer
from .backends import Acquisition, Backend, Lease, LeaseRecord, check_election

__all__ = ["ElectorState", "LeaderElector", "Leadership"]

logger = get_logger("leaderlib.elector")

#: The fastest a follower retries, even when the lease it saw is past expiry.
_MIN_RETRY = 0.02

#: How long access denials of credentials that worked before are retried
#: before run() gives up. A restarting kube-apiserver refuses for a few seconds.
DENIAL_GRACE = 60.0

#: How often a store failure that lasts is logged again at WARNING.
REMINDER_INTERVAL = 30.0


def _renew_deadline(election: str, config: ElectionConfig, backend: Backend) -> float:
    """The renew deadline to keep on ``backend``: ``config.renew_deadline``, shortened to
    ``lease_duration - backend.observation_granularity`` where that is less.

    A store whose other electors may miss renewals up to that many seconds
    apart (client-go on a Kubernetes Lease sees renewTime in whole seconds)
    lets a follower start counting the lease that much before the leader's
    last renewal; the term must end that much earlier to stay within the
    follower's count. Raises :class:`ConfigError` if the shortened deadline
    leaves no room for a renewal.
    """
    granularity = backend.observation_granularity
    safe = config.lease_duration - granularity
    if config.renew_deadline <= safe:
        return config.renew_deadline
    if safe <= config.renew_interval:
        raise ConfigError(
            f"on {backend.scheme}:// another elector may not see a renewal for up to {granularity} s, "
            f"so a leader's term must end {granularity} s before its lease: renew_deadline at most "
            f"lease_duration - {granularity} = {safe:g} s, which leaves no room for renew_interval "
            f"({config.renew_interval} s); lengthen lease_duration",
            field="lease_duration",
        )
    logger.warning(
        "renew deadline shortened: the store's other electors may not see every renewal",
        extra={
            "election": election,
            "backend": backend.scheme,
            "renew_deadline": safe,
            "configured": config.renew_deadline,
            "granularity": granularity,
        },
    )
    return safe


class ElectorState(enum.Enum):
    """Where an elector is in its lifecycle."""

    IDLE = "idle"  # created, run() not called yet
    FOLLOWING = "following"  # campaigning: another replica leads, or nobody yet
    LEADING = "leading"  # holds the lease; its deadline has not passed
    STOPPED = "stopped"  # run() has returned; the lease was released if held


class Leadership:
    """One term as leader, handed to the leader's work.

    ``lost`` is set the moment the term ends (renewal failed, deadline passed,
    lease taken, shutdown); async work is cancelled at the same moment. Sync
    work in threads checks :meth:`is_valid` or waits on :meth:`wait_lost`.
    """

    def __init__(self, *, record: LeaseRecord, valid_until: float, clock: Clock) -> None:
        self.election = record.election
        self.identity = record.holder
        self.fencing_token = record.fencing_token
        self.record = record
        self.valid_until = valid_until
        """Monotonic time at which this term ends unless renewed."""
        self.lost = asyncio.Event()
        self._lost_flag = threading.Event()
        self._clock = clock

    def is_valid(self) -> bool:
        """True while the term lasts: not ended and its deadline not passed on this clock."""
        return not self._lost_flag.is_set() and self._clock.monotonic() < self.valid_until

    def check(self) -> None:
        """Raise :class:`NotLeader` unless the term is still valid.

        Call this before an action that must happen at most once per tick, in
        particular after anything that may have paused the process.
        """
        if not self.is_valid():
            raise NotLeader("leadership has ended; do not act on it", election=self.election, backend=None)

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block a thread until the term ends; True if it did within ``timeout``."""
        return self._lost_flag.wait(timeout)

    def _renewed(self, record: LeaseRecord, valid_until: float) -> None:
        self.record = record
        self.valid_until = valid_until

    def _end(self) -> None:
        self._lost_flag.set()
        self.lost.set()


LeadingCallback = Callable[[Leadership], Coroutine[Any, Any, None]]
StoppedCallback = Callable[[Leadership], Awaitable[None] | None]
NewLeaderCallback = Callable[[str | None], Awaitable[None] | None]


class LeaderElector:
    """Campaigns for one election's lease and holds it while it can.

    ``await elector.run()`` campaigns until :meth:`stop` is called (or the task
    is cancelled). Each time it becomes leader it calls
    ``on_started_leading(leadership)`` in a new task, which is cancelled the
    moment the term ends; ``on_stopped_leading`` runs after that, and
    ``on_new_leader`` whenever the observed holder changes. ``run`` raises only
    for errors retrying cannot fix: :class:`ConfigError`, and
    :class:`AccessDenied` when the credentials never worked or stay refused
    for :data:`DENIAL_GRACE` seconds (a store that restarts may refuse
    credentials that worked for a moment; that is retried and logged).
    """

    def __init__(
        self,
        election: str,
        backend: Backend,
        config: ElectionConfig | None = None,
        *,
        clock: Clock | None = None,
        on_started_leading: LeadingCallback | None = None,
        on_stopped_leading: StoppedCallback | None = None,
        on_new_leader: NewLeaderCallback | None = None,
    ) -> None:
        check_election(election)
        self.election = election
        self.backend = backend
        self.lease: Lease = backend.lease(election)
        """This election's handle on ``backend``: the store's name rules were checked making it."""
        self.config = config or ElectionConfig()
        self.identity = self.config.identity
        self.renew_deadline = _renew_deadline(election, self.config, backend)
        """The renew deadline this elector keeps: the config's, or less (see _renew_deadline)."""
        self.clock = clock or SystemClock()
        self.state = ElectorState.IDLE
        self.leadership: Leadership | None = None
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._observed_holder: str | None = None
        # When another replica's record last changed (its version), for the failover
        # metric: records naming us while we follow must not restart that count.
        self._holder_version: str | None = None
        self._holder_changed_at = 0.0
        # Who held it then. Kept when the store next reports the lease free (SQLite
        # reports an expired lease as unheld before we take it), so that the
        # takeover still counts as a failover from that holder.
        self._previous_holder: str | None = None
        self._changed = asyncio.Event()
        # The watch task, started after the first attempt that did not acquire and
        # kept until run() returns; live while it has yielded since it last
        # (re)started and has not raised: only then may a follower stop polling.
        self._watcher: asyncio.Task[None] | None = None
        self._watch_live = False
        self._stopping = asyncio.Event()
        self._ended: LeaseRecord | None = None
        # Store failures, for logging and for judging access denials.
        self._store_worked = False
        self._denied_since: float | None = None
        self._failing_since: float | None = None
        self._reminded_at = 0.0
        self._last_error: str | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self._attributes = {"election": election, "backend": backend.scheme}

    # -- public view -------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this replica holds a valid term."""
        return self.leadership is not None and self.leadership.is_valid()

    @property
    def leader(self) -> str | None:
        """The holder last seen in the store (this replica's identity while it leads)."""
        return self._observed_holder

    def healthy(self) -> bool:
        """False only when a leader has outlived its renew deadline without stepping down.

        That is the state a liveness probe should restart: the process is
        wedged (its event loop is blocked), since a working elector steps down
        at the deadline.
        """
        if self.state is not ElectorState.LEADING or self.leadership is None:
            return True
        return self.clock.monotonic() < self.leadership.valid_until + self.config.renew_interval

    async def observe(self) -> LeaseRecord | None:
        """Read the election's current record from the store (one request)."""
        return await self.lease.get()

    def stop(self) -> None:
        """Ask :meth:`run` to end: the term (if any) ends, the lease is released, run returns.

        Call from the event loop's thread; the sync facade does that for you.
        """
        self._stopping.set()
        self._changed.set()

    # -- the loop ------------------------------------------------------------

    async def run(self) -> None:
        """Campaign, lead, step down, campaign again, until :meth:`stop`."""
        if self.state is not ElectorState.IDLE:
            raise RuntimeError("a LeaderElector runs once; make a new one")
        self.state = ElectorState.FOLLOWING
        start_election(self._attributes)
        logger.info(
            "joining election",
            extra={
                "election": self.election,
                "identity": self.identity,
                "backend": self.backend.scheme,
            },
        )
        try:
            while not self._stopping.is_set():
                acquired = await self._campaign()
                if acquired is None:
                    break
                await self._lead(*acquired)
        finally:
            await self._stop_watch()
            self.state = ElectorState.STOPPED
            logger.info("left election", extra={"election": self.election, "identity": self.identity})

    async def _campaign(self) -> tuple[LeaseRecord, float] | None:
        """Try until this replica holds the lease; return the record and when it was asked for.

        The first attempt goes out before the watch is opened, so that setting
        the watch up (a new connection on some stores) never delays it; the
        watch starts only if that attempt did not acquire, and then lasts
        until run() returns.
        """
        while not self._stopping.is_set():
            takeover = self._takeover_candidate()
            self._changed.clear()
            sent = self.clock.monotonic()
            acquisition = await self._attempt(takeover)
            if acquisition is not None:
                self._ended = None  # the store answered: its record is what counts now
                if acquisition.acquired and acquisition.record is not None:
                    return acquisition.record, sent
            self._start_watch()
            await self._wait_before_retry(answered=acquisition is not None)
            self._check_watch()
        return None

    def _start_watch(self) -> None:
        """Start the watch task unless it runs; a store's watch reads the record after
        subscribing, so a release since the attempt is not missed."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name=f"leaderlib-watch-{self.election}")

    def _check_watch(self) -> None:
        """Raise what ended the watch task if it was an error polling cannot fix (ConfigError)."""
        watcher = self._watcher
        if watcher is not None and watcher.done() and not watcher.cancelled():
            self._watcher = None
            watcher.result()

    async def _stop_watch(self) -> None:
        watcher, self._watcher = self._watcher, None
        self._watch_live = False
        if watcher is None:
            return
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    async def _attempt(self, takeover: LeaseRecord | None) -> Acquisition | None:
        """One acquisition attempt, bounded by the renew deadline; errors become None."""
        started = self.clock.monotonic()
        outcome = "error"
        try:
            with tracer.start_as_current_span("leaderlib.acquire", attributes=self._attributes):
                acquisition = await wait_for(
                    self.clock,
                    self.lease.try_acquire(self.identity, self.config.lease_duration, takeover),
                    self.renew_deadline,
                )
            # Decided by the store's answer for this candidacy, never by the
            # identity string: a record naming us may be a term we ended.
            outcome = "acquired" if acquisition.acquired else "held"
        except ConfigError:
            raise
        except AccessDenied as exc:
            if self._denial_is_fatal():
                raise
            self._log_campaign_error(exc)
            return None
        except (BackendError, TimeoutError) as exc:
            self._log_campaign_error(exc)
            return None
        finally:
            instruments.acquire_duration.record(
                (self.clock.monotonic() - started) * 1000, {**self._attributes, "outcome": outcome}
            )
        self._store_answered()
        if outcome == "held":
            self._observe(acquisition.record)
        return acquisition

    def _denial_is_fatal(self) -> bool:
        """True if an AccessDenied should end :meth:`run` rather than be retried.

        Credentials that never worked are wrong: fail at once, with the
        store's message. Credentials that worked before and are refused now
        are most likely a store restarting (a kube-apiserver answers 403
        while its RBAC authorizer warms up): keep campaigning, unless the
        refusal outlasts :data:`DENIAL_GRACE`.
        """
        now = self.clock.monotonic()
        if self._denied_since is None:
            self._denied_since = now
        return not self._store_worked or now - self._denied_since >= DENIAL_GRACE

    def _store_answered(self) -> None:
        """Note a successful store call: failures so far are over."""
        if self._failing_since is not None:
            logger.info(
                "store answers again",
                extra={
                    "election": self.election,
                    "failed_for": round(self.clock.monotonic() - self._failing_since, 3),
                },
            )
        self._store_worked = True
        self._denied_since = None
        self._failing_since = None
        self._last_error = None

    def _log_campaign_error(self, exc: BaseException) -> None:
        """Warn once per distinct failure, then remind every REMINDER_INTERVAL while it lasts.

        A store that stays down neither floods the log nor goes quiet.
        """
        message = str(exc) or type(exc).__name__
        level = logging.ERROR if isinstance(exc, CorruptLeaseRecord) else logging.WARNING
        now = self.clock.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        details = {"election": self.election, "error": message}
        if message != self._last_error:
            self._reminded_at = now
            logger.log(level, "acquisition attempt failed; will retry", extra=details)
        elif now - self._reminded_at >= REMINDER_INTERVAL:
            self._reminded_at = now
            failing_for = round(now - self._failing_since, 1)
            logger.log(
                level, "acquisition attempts still failing", extra={**details, "failing_for": failing_for}
            )
        else:
            logger.debug("acquisition attempt failed again", extra=details)
        self._last_error = message

    def _observe(self, record: LeaseRecord | None) -> None:
        """Note what the store holds; restart the follower's expiry count when it changed."""
        previous = self._observed
        # A store-counted TTL (expires_in) is fresh in every reply, so take each
        # one; a follower-counted lease restarts its count only on a new version.
        fresh = record is None or previous is None or record.version != previous.version
        if fresh or (record is not None and record.expires_in is not None):
            self._observed = record
            self._observed_at = self.clock.monotonic()
        holder = record.holder if record is not None and record.is_held else None
        version = record.version if record is not None else None
        if holder not in (None, self.identity) and version != self._holder_version:
            self._holder_version = version
            self._holder_changed_at = self.clock.monotonic()
            self._previous_holder = holder
        if holder == self.identity and self.state is not ElectorState.LEADING:
            # A record naming us while we do not lead is not a leader to announce:
            # a term of ours that ended, or one try_acquire has yet to confirm.
            return
        if holder != self._observed_holder:
            self._observed_holder = holder
            logger.info("leader changed", extra={"election": self.election, "leader": holder})
            if self._on_new_leader is not None:
                self._call_soon(self._on_new_leader, holder)

    def _expires_at(self) -> float | None:
        """When the observed lease counts as expired to this follower (monotonic), if held."""
        record = self._observed
        if record is None or not record.is_held:
            return None
        lifetime = record.expires_in if record.expires_in is not None else record.lease_duration
        return self._observed_at + lifetime

    def _takeover_candidate(self) -> LeaseRecord | None:
        """The record to replace: our own ended term's, or the observed one if it is
        released or expired by this follower's count."""
        if self._ended is not None:
            return self._ended
        record = self._observed
        if record is None:
            return None
        expires_at = self._expires_at()
        if expires_at is None or self.clock.monotonic() >= expires_at:
            return record
        return None

    def _wake_at(self, answered: bool, poll_at: float) -> float:
        """When a follower that saw no watch event tries again (monotonic).

        While the watch is live (and the store answered the last attempt): a
        hair past the expiry it counted from the last record it saw, so the
        store agrees the lease is gone; if it saw the election empty, after a
        lease_duration safety net. Otherwise it polls: at ``poll_at`` (a
        jittered retry period after the attempt), sooner if the lease expires.
        """
        expires_at = self._expires_at()
        if expires_at is not None:
            expires_at += 0.002
        if self._watch_live and answered:
            if expires_at is not None:
                return expires_at
            return self._observed_at + self.config.lease_duration
        return poll_at if expires_at is None else min(poll_at, expires_at)

    async def _wait_before_retry(self, *, answered: bool) -> None:
        """Wait until :meth:`_wake_at` or a watch event that may mean the lease is free.

        A renewal seen through the watch moves the expiry later without waking
        the campaign; the wait then goes on to the new expiry. Never less than
        _MIN_RETRY, should the store be slow to drop an expired lease.
        """
        started = self.clock.monotonic()
        poll_at = started + self.config.retry_period * (1 + self.config.jitter * random.random())
        while True:
            wake_at = max(self._wake_at(answered, poll_at), started + _MIN_RETRY)
            remaining = wake_at - self.clock.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, self._changed.wait(), remaining)
            if self._changed.is_set():
                return

    async def _watch(self) -> None:
        """Follow the store's change feed; wake the campaign when the lease may be free.

        Records that arrive while this elector leads are not followed (the
        term's own renewals); the watch stays open for the next campaign.
        """
        watch_error: str | None = None
        while not self._stopping.is_set():
            try:
                async for record in self.lease.watch():
                    self._watch_live = True
                    if self.state is ElectorState.LEADING:
                        continue
                    self._observe(record)
                    if record is None or not record.is_held or record.holder == self.identity:
                        self._changed.set()
            except ConfigError:
                self._watch_ended()
                raise
            except Exception as exc:  # a broken watch only costs speed: polling goes on
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # A driver turned our cancellation into an error (redis-py
                    # does, under Python 3.11's wait_for): we are being stopped.
                    raise asyncio.CancelledError from exc
                message = str(exc)
                # A denial is loud once (the acquisition attempts decide whether it
                # is fatal, the watch never does); repeats and other breaks are quiet.
                loud = isinstance(exc, AccessDenied) and message != watch_error
                watch_error = message
                logger.log(
                    logging.WARNING if loud else logging.DEBUG,
                    "watch refused; polling until it resumes"
                    if loud
                    else "watch ended; polling until it resumes",
                    extra={"election": self.election, "error": message},
                )
            self._watch_ended()
            await self.clock.sleep(self.config.retry_period)

    def _watch_ended(self) -> None:
        """The watch is no longer live: a follower waiting on it wakes, and polls from now on."""
        if self._watch_live:
            self._watch_live = False
            self._changed.set()

    async def _lead(self, record: LeaseRecord, sent: float) -> None:
        """Hold the term: run the leader's work and renew until the term ends."""
        leadership = Leadership(record=record, valid_until=sent + self.renew_deadline, clock=self.clock)
        previous_seen_at = self._holder_changed_at if self._previous_holder is not None else None
        self._previous_holder = None  # the next term's failover is from whoever holds it after this one
        self.leadership = leadership
        self.state = ElectorState.LEADING
        self._observe(record)
        logger.info(
            "became leader",
            extra={
                "election": self.election,
                "identity": self.identity,
                "fencing_token": record.fencing_token,
            },
        )
        instruments.is_leader.add(1, self._attributes)
        instruments.transitions.add(1, {**self._attributes, "outcome": "acquired"})
        if previous_seen_at is not None:
            instruments.failover.record(self.clock.monotonic() - previous_seen_at, self._attributes)
        work: asyncio.Task[None] | None = None
        if self._on_started_leading is not None:
            work = asyncio.create_task(
                self._on_started_leading(leadership), name=f"leaderlib-lead-{self.election}"
            )
            work.add_done_callback(self._work_done)
        reason = "lost"
        try:
            reason = await self._hold(leadership)
        except asyncio.CancelledError:
            reason = "stopping"  # cancelled from outside: shut down as if stop() was called
            raise
        finally:
            leadership._end()
            if work is not None:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work  # a failure was logged when it happened (_work_done)
            # The term is over before the lease is released: logged first, so that
            # logs show terms that never overlap even when the next leader is fast.
            self.leadership = None
            self.state = ElectorState.FOLLOWING
            instruments.is_leader.add(-1, self._attributes)
            instruments.transitions.add(1, {**self._attributes, "outcome": reason})
            logger.info(
                "stopped leading",
                extra={"election": self.election, "reason": reason, "fencing_token": record.fencing_token},
            )
            if reason == "stopping" and self.config.release_on_shutdown:
                await self._release(leadership)
            else:
                # The store may still hold this term's record. Our next campaign
                # replaces exactly that version (a new term, a new fencing
                # token) instead of waiting for it to expire or adopting it.
                self._ended = leadership.record
            if self._on_stopped_leading is not None:
                result = self._on_stopped_leading(leadership)
                if result is not None:
                    await result

    async def _hold(self, leadership: Leadership) -> str:
        """Renew on the interval; return why the term ended: "stopping" or "lost"."""
        last_sent = self.clock.monotonic()
        while True:
            wake_at = min(last_sent + self.config.renew_interval, leadership.valid_until)
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, self._stopping.wait(), wake_at - self.clock.monotonic())
            if self._stopping.is_set():
                return "stopping"
            if self.clock.monotonic() >= leadership.valid_until:
                # Woken past the deadline (a paused process): the term is over;
                # a follower may already lead.
                logger.warning("renew deadline passed; stepping down", extra={"election": self.election})
                return "lost"
            try:
                last_sent = await self._renew(leadership)
            except LeaseLost:
                logger.warning(
                    "lease taken by another replica; stepping down",
                    extra={"election": self.election},
                )
                return "lost"
            except (BackendError, TimeoutError) as exc:
                logger.warning(
                    "could not renew before the deadline; stepping down",
                    extra={"election": self.election, "error": str(exc)},
                )
                return "lost"

    async def _renew(self, leadership: Leadership) -> float:
        """Renew once, retrying transient failures but never past the term's deadline.

        Returns when the successful request was sent; the term then lasts
        until that time plus ``renew_deadline``.
        """
        deadline = leadership.valid_until
        started = self.clock.monotonic()
        sent = started

        def past_deadline(state: RetryCallState) -> bool:
            return self.clock.monotonic() + state.upcoming_sleep >= deadline

        retrying = AsyncRetrying(
            stop=past_deadline,
            # 20 ms, 40 ms, 80 ms... plus up to 20 ms of jitter; capped so a retry
            # still fits several times before the deadline.
            wait=wait_exponential(multiplier=0.02, max=max(0.05, self.config.renew_interval / 2))
            + wait_random(0, 0.02),
            retry=retry_if_exception_type((BackendUnavailable, TimeoutError)),
            sleep=self.clock.sleep,
            reraise=True,
        )
        outcome = "error"
        try:
            async for attempt in retrying:
                with attempt:
                    sent = self.clock.monotonic()
                    remaining = deadline - sent
                    if remaining <= 0:
                        raise TimeoutError("renew deadline passed")
                    record = await wait_for(self.clock, self.lease.renew(leadership.record), remaining)
            outcome = "renewed"
        except LeaseLost:
            outcome = "lost"
            raise
        finally:
            instruments.renew_duration.record(
                (self.clock.monotonic() - started) * 1000, {**self._attributes, "outcome": outcome}
            )
        leadership._renewed(record, sent + self.renew_deadline)
        logger.debug(
            "renewed lease",
            extra={"election": self.election, "fencing_token": record.fencing_token},
        )
        return sent

    async def _release(self, leadership: Leadership) -> None:
        """Release the lease, shielded from cancellation, within the term's remaining time."""
        remaining = leadership.valid_until - self.clock.monotonic()
        if remaining <= 0:
            return  # a follower may already hold it: releasing could only do harm
        release = asyncio.ensure_future(
            wait_for(self.clock, self.lease.release(leadership.record), remaining)
        )
        try:
            await asyncio.shield(release)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await release
            raise
        except (BackendError, TimeoutError) as exc:
            logger.warning(
                "could not release the lease", extra={"election": self.election, "error": str(exc)}
            )
        else:
            logger.info(
                "released lease",
                extra={"election": self.election, "fencing_token": leadership.fencing_token},
            )

    def _work_done(self, work: asyncio.Task[None]) -> None:
        """Log at once if the leader's work raised, rather than when the term ends."""
        if not work.cancelled() and work.exception() is not None:
            logger.error(
                "the leader's work failed; still leading, but running nothing",
                exc_info=work.exception(),
                extra={"election": self.election},
            )

    def _call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run a user callback without letting it block or break the election loop."""

        async def guarded() -> None:
            try:
                result = callback(*args)
                if result is not None:
                    await result
            except Exception:
                logger.exception("callback failed", extra={"election": self.election})

        task = asyncio.get_running_loop().create_task(guarded())
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

"""The campaign: acquire the lease, or follow whoever holds it until it may be free.

A follower counts ``lease_duration`` on its own monotonic clock from when it
last saw the record change (or takes the store's own remaining TTL, where
the store expires leases itself), and asks the store to replace exactly the
version it judged expired. It wakes on a watch event or at that expiry, and
polls on the retry period only while its watch is not live; the first
attempt never waits for the watch to be set up. Store errors are retried,
logged once and then reminded of; only a bad configuration, or access
denials that never worked or outlast :data:`DENIAL_GRACE`, end the campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from ._clock import Clock, wait_for
from ._config import ElectionConfig
from ._errors import AccessDenied, BackendError, ConfigError, CorruptLeaseRecord
from ._leadership import NewLeaderCallback
from ._logging import get_logger
from ._telemetry import instruments, span
from .backends import Acquisition, Lease, LeaseRecord

__all__ = ["DENIAL_GRACE", "REMINDER_INTERVAL", "Campaign"]

logger = get_logger("leaderlib.elector")

#: The fastest a follower retries, even when the lease it saw is past expiry.
_MIN_RETRY = 0.02

#: How long access denials of credentials that worked before are retried
#: before run() gives up. A restarting kube-apiserver refuses for a few seconds.
DENIAL_GRACE = 60.0

#: How often a store failure that lasts is logged again at WARNING.
REMINDER_INTERVAL = 30.0


class Campaign:
    """One elector's campaign for ``election``: what it saw of the store, and its watch.

    :meth:`acquire` tries until this replica holds the lease. The elector
    tells it what its terms do: ``leading()`` is true while one lasts (records
    seen meanwhile are the term's own renewals), :meth:`observe` gets a new
    term's record, and :attr:`ended` an ended term's, which the next attempt
    replaces. ``stopping`` set ends the campaign; :meth:`wake` cuts a wait short.
    """

    def __init__(
        self,
        election: str,
        lease: Lease,
        config: ElectionConfig,
        *,
        identity: str,
        renew_deadline: float,
        clock: Clock,
        stopping: asyncio.Event,
        leading: Callable[[], bool],
        on_new_leader: NewLeaderCallback | None,
        attributes: dict[str, str],
    ) -> None:
        self.election = election
        self.lease = lease
        self.config = config
        self.identity = identity
        self.renew_deadline = renew_deadline
        self.clock = clock
        self._stopping = stopping
        self._leading = leading
        self._on_new_leader = on_new_leader
        self._attributes = attributes
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self.observed_holder: str | None = None
        """The holder last seen in the store (this replica's identity while it leads)."""
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
        # kept until stop_watch(); live while it has yielded since it last
        # (re)started and has not raised: only then may a follower stop polling.
        self._watcher: asyncio.Task[None] | None = None
        self.watch_live = False
        self.ended: LeaseRecord | None = None
        """This replica's ended term's record, while the store may still hold it."""
        # Store failures, for logging and for judging access denials.
        self._store_worked = False
        self._denied_since: float | None = None
        self._failing_since: float | None = None
        self._reminded_at = 0.0
        self._last_error: str | None = None
        self._callbacks: set[asyncio.Task[None]] | None = None  # running callbacks (made on first use)

    def wake(self) -> None:
        """Cut a wait before the next attempt short (the elector is stopping)."""
        self._changed.set()

    def take_failover_start(self) -> float | None:
        """For a term that begins now: when the holder it takes over from was last seen
        changing its record (None: nobody else held it), for the failover metric."""
        seen_at = self._holder_changed_at if self._previous_holder is not None else None
        self._previous_holder = None  # the next term's failover is from whoever holds it after this one
        return seen_at

    async def acquire(self) -> tuple[LeaseRecord, float] | None:
        """Try until this replica holds the lease; return the record and when it was asked for.

        The first attempt goes out before the watch is opened, so that setting
        the watch up (a new connection on some stores) never delays it; the
        watch starts only if that attempt did not acquire, and then lasts
        until :meth:`stop_watch` (when the elector's run() returns).
        """
        while not self._stopping.is_set():
            takeover = self._takeover_candidate()
            self._changed.clear()
            sent = self.clock.monotonic()
            acquisition = await self._attempt(takeover)
            if acquisition is not None:
                self.ended = None  # the store answered: its record is what counts now
                if acquisition.acquired and acquisition.record is not None:
                    if self.clock.monotonic() < sent + self.renew_deadline:
                        return acquisition.record, sent
                    # Answered past the deadline the term counts from its sending (the
                    # process was paused, or the store is that slow): the term is over
                    # before it began, and a follower may count it expired. Replace it.
                    logger.warning(
                        "acquired past the renew deadline; taking a new term",
                        extra={"election": self.election, "fencing_token": acquisition.record.fencing_token},
                    )
                    self.ended = acquisition.record
                    continue
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

    async def stop_watch(self) -> None:
        """Cancel the watch task, if one runs, and wait for it to end."""
        watcher, self._watcher = self._watcher, None
        self.watch_live = False
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
            with span("leaderlib.acquire", self._attributes):
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
            self.observe(acquisition.record)
        return acquisition

    def _denial_is_fatal(self) -> bool:
        """True if an AccessDenied should end the elector's run() rather than be retried.

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

    def observe(self, record: LeaseRecord | None) -> None:
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
        if holder == self.identity and not self._leading():
            # A record naming us while we do not lead is not a leader to announce:
            # a term of ours that ended, or one try_acquire has yet to confirm.
            return
        if holder != self.observed_holder:
            self.observed_holder = holder
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
        if self.ended is not None:
            return self.ended
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
        if self.watch_live and answered:
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
                    self.watch_live = True
                    if self._leading():
                        continue
                    self.observe(record)
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
        if self.watch_live:
            self.watch_live = False
            self._changed.set()

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
        if self._callbacks is None:
            self._callbacks = set()
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

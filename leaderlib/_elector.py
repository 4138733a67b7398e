"""The election algorithm: acquire, renew, step down, release, observe.

Every timing decision lives in the elector; backends only read and
compare-and-swap a record. :class:`LeaderElector` runs the election's loop
and its transitions: the campaign (:mod:`leaderlib._campaign`: acquire,
watch, follow) until it holds the lease, then the term
(:mod:`leaderlib._term`: renew, step down, release) while the leader's work
runs with its :class:`Leadership` (:mod:`leaderlib._leadership`). The safety
rules, in the order the code applies them:

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

from ._campaign import Campaign
from ._clock import Clock, SystemClock
from ._config import ElectionConfig
from ._errors import ConfigError
from ._leadership import Leadership, LeadingCallback, NewLeaderCallback, StoppedCallback
from ._logging import get_logger
from ._telemetry import instruments, start_election
from ._term import Term
from .backends import Backend, Lease, LeaseRecord, check_election

__all__ = ["ElectorState", "LeaderElector", "Leadership"]

logger = get_logger("leaderlib.elector")

#: The clock of every elector given none (it keeps no state).
_SYSTEM_CLOCK = SystemClock()


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


class LeaderElector:
    """Campaigns for one election's lease and holds it while it can.

    ``await elector.run()`` campaigns until :meth:`stop` is called (or the task
    is cancelled). Each time it becomes leader it calls
    ``on_started_leading(leadership)`` in a new task, which is cancelled the
    moment the term ends; ``on_stopped_leading`` runs after that, and
    ``on_new_leader`` whenever the observed holder changes. ``run`` raises only
    for errors retrying cannot fix: :class:`ConfigError`, and
    :class:`AccessDenied` when the credentials never worked or stay refused
    for :data:`~leaderlib._campaign.DENIAL_GRACE` seconds (a store that
    restarts may refuse credentials that worked for a moment; that is retried
    and logged).
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
        self.clock = clock or _SYSTEM_CLOCK
        self.state = ElectorState.IDLE
        self.leadership: Leadership | None = None
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._stopping = asyncio.Event()
        self._term: Term | None = None
        self._attributes = {"election": election, "backend": backend.scheme}
        self._campaign = Campaign(
            election,
            self.lease,
            self.config,
            identity=self.identity,
            renew_deadline=self.renew_deadline,
            clock=self.clock,
            stopping=self._stopping,
            leading=self._leading,
            on_new_leader=on_new_leader,
            attributes=self._attributes,
        )

    def _leading(self) -> bool:
        return self.state is ElectorState.LEADING

    # -- public view -------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this replica holds a valid term."""
        return self.leadership is not None and self.leadership.is_valid()

    @property
    def leader(self) -> str | None:
        """The holder last seen in the store (this replica's identity while it leads)."""
        return self._campaign.observed_holder

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
        self._campaign.wake()
        if self._term is not None:
            self._term.wake()

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
                acquired = await self._campaign.acquire()
                if acquired is None:
                    break
                await self._lead(*acquired)
        finally:
            await self._campaign.stop_watch()
            self.state = ElectorState.STOPPED
            logger.info("left election", extra={"election": self.election, "identity": self.identity})

    async def _lead(self, record: LeaseRecord, sent: float) -> None:
        """Hold the term: run the leader's work and renew until the term ends."""
        leadership = Leadership(record=record, valid_until=sent + self.renew_deadline, clock=self.clock)
        term = Term(
            self.election,
            leadership,
            self.lease,
            self.config,
            renew_deadline=self.renew_deadline,
            clock=self.clock,
            stopping=self._stopping,
            attributes=self._attributes,
        )
        previous_seen_at = self._campaign.take_failover_start()
        self._term = term
        self.leadership = leadership
        self.state = ElectorState.LEADING
        self._campaign.observe(record)
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
            reason = await term.hold()
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
            self._term = None
            self.leadership = None
            self.state = ElectorState.FOLLOWING
            instruments.is_leader.add(-1, self._attributes)
            instruments.transitions.add(1, {**self._attributes, "outcome": reason})
            logger.info(
                "stopped leading",
                extra={"election": self.election, "reason": reason, "fencing_token": record.fencing_token},
            )
            if reason == "stopping" and self.config.release_on_shutdown:
                await term.release()
            else:
                # The store may still hold this term's record. Our next campaign
                # replaces exactly that version (a new term, a new fencing
                # token) instead of waiting for it to expire or adopting it.
                self._campaign.ended = leadership.record
            if self._on_stopped_leading is not None:
                result = self._on_stopped_leading(leadership)
                if result is not None:
                    await result

    def _work_done(self, work: asyncio.Task[None]) -> None:
        """Log at once if the leader's work raised, rather than when the term ends."""
        if not work.cancelled() and work.exception() is not None:
            logger.error(
                "the leader's work failed; still leading, but running nothing",
                exc_info=work.exception(),
                extra={"election": self.election},
            )

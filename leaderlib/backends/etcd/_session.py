"""Sessions: a lease per identity and TTL, kept alive by its own loop, abandoned when unanswered.

As Go's ``concurrency.Session``, a session keeps its lease alive itself:
a keepalive every TTL/3 from the moment it is granted until it is closed or
abandoned, so a follower that the elector no longer polls keeps its place in
the queue. A session none of whose keepalives was answered for its TTL is
abandoned, as Go's lessor drops such a lease: no keepalive is sent for it
again (see :meth:`Sessions.live`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import TYPE_CHECKING

import grpc  # type: ignore[import-untyped]  # no stubs in the venv; pyproject lists aetcd only
from aetcd import rpc

from ..._clock import boottime
from ..._errors import BackendError, BackendUnavailable, LeaseLost
from ..._logging import get_logger
from ._channel import Channel

if TYPE_CHECKING:
    from ._election import Candidacy, EtcdLease

__all__ = ["Session", "Sessions", "lease_ttl"]

logger = get_logger("leaderlib.backends.etcd")


def lease_ttl(lease_duration: float) -> int:
    """The TTL (whole seconds) a session lease is granted for ``lease_duration``: rounded up."""
    return max(1, math.ceil(lease_duration))


@dataclasses.dataclass(eq=False)
class Session:
    """A lease kept alive by its keepalive loop (Go's ``concurrency.Session``)."""

    identity: str
    lease_id: int
    ttl: int
    """Granted TTL in seconds (etcd may raise the one asked for to its minimum)."""
    lease_duration: float
    """The lease duration the elector asked for, reported in our own records."""
    refreshed_at: float
    """:func:`boottime` at which the last grant or keepalive that etcd ANSWERED was sent."""
    alive: bool = True
    keeper: asyncio.Task[None] | None = None
    """The keepalive loop; ends when the session does."""
    next_keepalive: asyncio.Task[bool] | None = None
    """The keepalive not sent yet that callers join (see :meth:`Sessions.keepalive`)."""
    sending: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    """Held while one of the session's keepalives is out."""
    elections: set[EtcdLease] = dataclasses.field(default_factory=set)
    """The elections with a candidacy on this session (see :meth:`EtcdLease.add_candidacy`):
    what releasing or ending it concerns, found without looking at every election."""

    def expires_in(self) -> float:
        """Seconds the lease surely lives, by our clock: TTL from the last answered keepalive."""
        return max(0.0, self.ttl - (boottime() - self.refreshed_at))


class Sessions:
    """A backend's sessions, by (identity, TTL), shared by every election as Go's ``Session`` is."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self.by_slot: dict[tuple[str, int], Session] = {}
        self.by_lease: dict[int, Session] = {}
        """The sessions of ``by_slot``, by lease id."""
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        # Leases of abandoned sessions, revoked (best effort) once etcd answers
        # again: etcd does not expire leases while it is down, and after a
        # restart it gives each one a whole new TTL.
        self.abandoned: set[int] = set()

    async def open(self, identity: str, lease_duration: float, election: str) -> tuple[Session, bool]:
        """The live session for ``identity`` at this TTL, granting a lease if needed.

        Returns the session and whether it was granted by this call.
        """
        slot = (identity, lease_ttl(lease_duration))
        session = self.by_slot.get(slot)
        if session is not None and self.live(session):
            return session, False
        lock = self._locks.setdefault(slot, asyncio.Lock())
        async with lock:
            session = self.by_slot.get(slot)
            if session is not None and self.live(session):
                return session, False
            sent = boottime()
            response = await self._channel.call(
                election,
                lambda c: c.leasestub.LeaseGrant(
                    rpc.LeaseGrantRequest(TTL=slot[1]), timeout=c._timeout, metadata=c.metadata
                ),
            )
            if response.error:
                raise BackendUnavailable(
                    f"etcd refused a lease: {response.error}", election=election, backend=self._channel.scheme
                )
            session = Session(
                identity=identity,
                lease_id=response.ID,
                ttl=response.TTL,
                lease_duration=lease_duration,
                refreshed_at=sent,
            )
            self.by_slot[slot] = self.by_lease[session.lease_id] = session
            self._start_keeper(session)
            logger.debug(
                "granted session lease",
                extra={"election": election, "lease_id": f"{response.ID:x}", "ttl": response.TTL},
            )
            return session, True

    def end(self, session: Session) -> None:
        """Forget a session whose lease is gone: every candidacy on it went with it."""
        session.alive = False
        if session.keeper is not None and session.keeper is not asyncio.current_task():
            session.keeper.cancel()
        slot = (session.identity, lease_ttl(session.lease_duration))
        if self.by_slot.get(slot) is session:
            del self.by_slot[slot]
        if self.by_lease.get(session.lease_id) is session:
            del self.by_lease[session.lease_id]
        for lease in list(session.elections):
            lease.drop_candidacy(session)

    def candidacies_on(self, session: Session) -> list[tuple[EtcdLease, Candidacy]]:
        """The elections ``session`` campaigns in, and its candidacy in each."""
        return [(lease, lease.candidacies[session.lease_id]) for lease in session.elections]

    def live(self, session: Session) -> bool:
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
        elections = sorted(lease.election for lease, _ in self.candidacies_on(session))
        self.end(session)
        unanswered = boottime() - session.refreshed_at
        self.abandoned.add(session.lease_id)
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

    async def revoke_abandoned(self, election: str | None) -> None:
        """Best effort: revoke the leases of abandoned sessions, so a key of theirs that
        keepalives kept first in line goes now, not when etcd expires it.

        Raises :class:`BackendUnavailable` while etcd does not answer (the lease
        stays listed for the next call); any other refusal is logged and the
        lease left to expire.
        """
        for lease_id in list(self.abandoned):
            try:
                await self._channel.revoke(election, lease_id)
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
            self.abandoned.discard(lease_id)

    async def keepalive(self, session: Session, election: str | None, timeout: float | None = None) -> bool:
        """Refresh the session lease once, by a keepalive sent after this call began; False if
        etcd no longer has the lease.

        Callers join the session's next keepalive while it has not been sent:
        the thousands of elections of one identity on one backend object share
        a session, and each of their renewals needs the lease refreshed after
        it began (so the lease outlives the term counted from it), not a
        keepalive of its own. One keepalive per session is out at a time.
        Raises :class:`LeaseLost` instead of sending if the session was
        abandoned (see :meth:`live`), or is abandoned while the keepalive is in flight.
        """
        if not self.live(session):
            raise LeaseLost("the etcd session was abandoned", election=election, backend=self._channel.scheme)
        shared = session.next_keepalive
        if shared is None:
            shared = session.next_keepalive = asyncio.create_task(self._keepalive(session, timeout))
            shared.add_done_callback(_retrieved)
        return await asyncio.shield(shared)

    async def _keepalive(self, session: Session, timeout: float | None) -> bool:
        """One keepalive for everyone who joined before it was sent."""
        async with session.sending:
            if session.next_keepalive is asyncio.current_task():
                session.next_keepalive = None  # later callers need a later keepalive
            if not self.live(session):
                raise LeaseLost("the etcd session was abandoned", election=None, backend=self._channel.scheme)
            sent = boottime()
            response = await self._channel.call(
                None, lambda c: c.keepalive(session.lease_id, timeout or self._channel.timeout)
            )
        if response is grpc.aio.EOF:
            raise BackendUnavailable(
                "etcd closed the keepalive stream without an answer",
                election=None,
                backend=self._channel.scheme,
            )
        if not session.alive:
            raise LeaseLost("the etcd session was abandoned", election=None, backend=self._channel.scheme)
        if response.TTL <= 0:
            return False
        session.ttl = response.TTL
        session.refreshed_at = max(session.refreshed_at, sent)
        return True

    def own(self, lease_id: int) -> Session | None:
        """Our live session with this lease; an abandoned one's key is never ours."""
        session = self.by_lease.get(lease_id)
        return session if session is not None and self.live(session) else None

    def _start_keeper(self, session: Session) -> None:
        session.keeper = asyncio.create_task(self._keep(session), name=f"etcd-keepalive-{session.lease_id:x}")

    async def _keep(self, session: Session) -> None:
        """Go's ``Session`` keepalive loop: one keepalive every TTL/3 until the session ends.

        A failed keepalive is tried again at the next tick; :meth:`live`
        abandons the session (and so ends this loop) once none was answered
        for its TTL.
        """
        while True:
            interval = max(0.1, session.ttl / 3)
            await asyncio.sleep(interval)
            if not session.alive:
                return
            if not self._wanted(session):
                continue
            try:
                alive = await self.keepalive(session, None, timeout=interval)
            except LeaseLost:
                return  # abandoned, or etcd no longer has the lease
            except BackendError as exc:
                logger.debug(
                    "session keepalive failed",
                    extra={"lease_id": f"{session.lease_id:x}", "error": str(exc)},
                )
                continue
            if not alive:
                self.end(session)
                return

    def _wanted(self, session: Session) -> bool:
        """True while a follower on ``session`` waits on its watch (the elector does not
        poll it then). A leader's keepalive goes with its renewals, and a candidacy
        nobody watches or polls any more (a stopped elector) is left to expire."""
        for lease in list(session.elections):
            if lease.watching:
                candidacy = lease.candidacies.get(session.lease_id)
                if candidacy is not None and not candidacy.leading:
                    return True
        return False

    async def aclose(self) -> None:
        """Stop every keepalive loop."""
        keepers = [s.keeper for s in self.by_slot.values() if s.keeper is not None]
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)


def _retrieved(task: asyncio.Task[bool]) -> None:
    """Mark a shared keepalive's error seen: its callers may all have stopped waiting."""
    if not task.cancelled():
        task.exception()

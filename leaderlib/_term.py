"""A term, held: renew on the interval until the term ends, then release if asked.

The term lasts until ``(when the acquiring or last successful renewing
request was SENT) + renew_deadline`` on this process's monotonic clock. Each
renewal retries transient failures but never past that deadline; a renewal
that cannot succeed in time, a lease taken by another replica, or a process
woken past the deadline ends the term. Release is shielded from cancellation
and bounded by the term's remaining time: once the term is over, a follower
may already hold the lease.
"""

from __future__ import annotations

import asyncio
import contextlib

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential, wait_random

from ._clock import Clock, sleep_until_woken, wait_for
from ._config import ElectionConfig
from ._errors import BackendError, BackendUnavailable, LeaseLost
from ._leadership import Leadership
from ._logging import get_logger
from ._telemetry import instruments
from .backends import Lease, LeaseRecord

__all__ = ["Term"]

logger = get_logger("leaderlib.elector")

#: The first retry of a failed renewal comes this long after it (plus up to as
#: much again of jitter), each next one twice as long after the previous one.
_FIRST_RETRY = 0.02

#: The failures of one renewal worth another attempt before the deadline.
_TRANSIENT = (BackendUnavailable, TimeoutError)


class Term:
    """Keeps one term of ``election``'s lease: :meth:`hold` renews it until it ends
    (``stopping`` set, or lost); :meth:`release` then gives the lease back."""

    def __init__(
        self,
        election: str,
        leadership: Leadership,
        lease: Lease,
        config: ElectionConfig,
        *,
        renew_deadline: float,
        clock: Clock,
        stopping: asyncio.Event,
        attributes: dict[str, str],
    ) -> None:
        self.election = election
        self.leadership = leadership
        self.lease = lease
        self.config = config
        self.renew_deadline = renew_deadline
        self.clock = clock
        self._stopping = stopping
        # The renewal metric's attributes, made once per term rather than per renewal.
        self._outcomes = {
            outcome: {**attributes, "outcome": outcome} for outcome in ("renewed", "lost", "error")
        }
        self._wakeup: asyncio.Future[None] | None = None
        # Made at the term's first failed renewal and kept for the term.
        self._retrying: AsyncRetrying | None = None

    def wake(self) -> None:
        """Cut the wait for the next renewal short (the elector is stopping)."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def hold(self) -> str:
        """Renew on the interval; return why the term ended: "stopping" or "lost".

        Each renewal is due ``renew_interval`` after the previous one was sent,
        the first one after the acquisition was sent (``valid_until`` minus the
        renew deadline), however late the acquisition's answer came.
        """
        last_sent = self.leadership.valid_until - self.renew_deadline
        while True:
            wake_at = min(last_sent + self.config.renew_interval, self.leadership.valid_until)
            if not self._stopping.is_set():
                self._wakeup = asyncio.get_running_loop().create_future()
                await sleep_until_woken(self.clock, wake_at - self.clock.monotonic(), self._wakeup)
            if self._stopping.is_set():
                return "stopping"
            if self.clock.monotonic() >= self.leadership.valid_until:
                # Woken past the deadline (a paused process): the term is over;
                # a follower may already lead.
                logger.warning("renew deadline passed; stepping down", extra={"election": self.election})
                return "lost"
            try:
                last_sent = await self._renew()
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

    async def _renew(self) -> float:
        """Renew once, retrying transient failures but never past the term's deadline.

        Returns when the successful request was sent; the term then lasts
        until that time plus ``renew_deadline``. The first attempt is made
        directly: tenacity's loop costs about as much CPU as a renewal's own
        work, and at thousands of elections almost every renewal succeeds at
        once. A transient failure hands the renewal to :meth:`_retry`.
        """
        deadline = self.leadership.valid_until  # moves only when this renewal succeeds
        started = self.clock.monotonic()
        outcome = "error"
        try:
            try:
                sent, record = await self._attempt(deadline)
            except _TRANSIENT as failure:
                sent, record = await self._retry(failure, deadline)
            outcome = "renewed"
        except LeaseLost:
            outcome = "lost"
            raise
        finally:
            elapsed_ms = (self.clock.monotonic() - started) * 1000
            instruments.renew_duration.record(elapsed_ms, self._outcomes[outcome])
        self.leadership._renewed(record, sent + self.renew_deadline)
        logger.debug(
            "renewed lease",
            extra={"election": self.election, "fencing_token": record.fencing_token},
        )
        return sent

    async def _attempt(self, deadline: float) -> tuple[float, LeaseRecord]:
        """One renewal request, bounded by the deadline; returns when it was sent and the record."""
        sent = self.clock.monotonic()
        if sent >= deadline:
            raise TimeoutError("renew deadline passed")
        record = await wait_for(self.clock, self.lease.renew(self.leadership.record), deadline - sent)
        return sent, record

    async def _retry(self, failure: BaseException, deadline: float) -> tuple[float, LeaseRecord]:
        """Retry a renewal whose first attempt failed with ``failure``, through tenacity.

        Retries wait 20 ms, 40 ms, 80 ms... (capped at half the renew interval,
        so several fit before the deadline) plus up to 20 ms of jitter, and stop
        when the next one would start at or past the deadline. The failed first
        attempt is tenacity's attempt 1 (it raises that failure again), so the
        whole schedule, the first pause included, is tenacity's.
        """
        if self._retrying is None:
            self._retrying = AsyncRetrying(
                stop=self._past_deadline,
                wait=wait_exponential(multiplier=_FIRST_RETRY, max=max(0.05, self.config.renew_interval / 2))
                + wait_random(0, _FIRST_RETRY),
                retry=retry_if_exception_type(_TRANSIENT),
                sleep=self.clock.sleep,
                reraise=True,
            )
        pending: list[BaseException] = [failure]

        async def attempt() -> tuple[float, LeaseRecord]:
            if pending:
                raise pending.pop()
            return await self._attempt(deadline)

        return await self._retrying(attempt)

    def _past_deadline(self, state: RetryCallState) -> bool:
        """Stop retrying if the next retry would start at or past the term's deadline."""
        return self.clock.monotonic() + state.upcoming_sleep >= self.leadership.valid_until

    async def release(self) -> None:
        """Release the lease, shielded from cancellation, within the term's remaining time."""
        remaining = self.leadership.valid_until - self.clock.monotonic()
        if remaining <= 0:
            return  # a follower may already hold it: releasing could only do harm
        release = asyncio.ensure_future(
            wait_for(self.clock, self.lease.release(self.leadership.record), remaining)
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
                extra={"election": self.election, "fencing_token": self.leadership.fencing_token},
            )

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

from ._clock import Clock, wait_for
from ._config import ElectionConfig
from ._errors import BackendError, BackendUnavailable, LeaseLost
from ._leadership import Leadership
from ._logging import get_logger
from ._telemetry import instruments
from .backends import Lease

__all__ = ["Term"]

logger = get_logger("leaderlib.elector")


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
        self._attributes = attributes
        # Made at the term's first renewal (off the acquisition's path) and kept for
        # the term: building tenacity's retry state per renewal cost as much as its loop.
        self._retrying: AsyncRetrying | None = None

    def _retry_policy(self) -> AsyncRetrying:
        """Retry transient failures of one renewal; its stop reads the renewal's deadline."""
        return AsyncRetrying(
            stop=self._past_deadline,
            # 20 ms, 40 ms, 80 ms... plus up to 20 ms of jitter; capped so a retry
            # still fits several times before the deadline.
            wait=wait_exponential(multiplier=0.02, max=max(0.05, self.config.renew_interval / 2))
            + wait_random(0, 0.02),
            retry=retry_if_exception_type((BackendUnavailable, TimeoutError)),
            sleep=self.clock.sleep,
            reraise=True,
        )

    def _past_deadline(self, state: RetryCallState) -> bool:
        """Stop retrying if the next retry would start at or past the term's deadline."""
        return self.clock.monotonic() + state.upcoming_sleep >= self.leadership.valid_until

    async def hold(self) -> str:
        """Renew on the interval; return why the term ended: "stopping" or "lost"."""
        last_sent = self.clock.monotonic()
        while True:
            wake_at = min(last_sent + self.config.renew_interval, self.leadership.valid_until)
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, self._stopping.wait(), wake_at - self.clock.monotonic())
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
        until that time plus ``renew_deadline``.
        """
        deadline = self.leadership.valid_until  # moves only when this renewal succeeds
        started = self.clock.monotonic()
        sent = started
        if self._retrying is None:
            self._retrying = self._retry_policy()
        outcome = "error"
        try:
            async for attempt in self._retrying:
                with attempt:
                    sent = self.clock.monotonic()
                    remaining = deadline - sent
                    if remaining <= 0:
                        raise TimeoutError("renew deadline passed")
                    record = await wait_for(self.clock, self.lease.renew(self.leadership.record), remaining)
            outcome = "renewed"
        except LeaseLost:
            outcome = "lost"
            raise
        finally:
            instruments.renew_duration.record(
                (self.clock.monotonic() - started) * 1000, {**self._attributes, "outcome": outcome}
            )
        self.leadership._renewed(record, sent + self.renew_deadline)
        logger.debug(
            "renewed lease",
            extra={"election": self.election, "fencing_token": record.fencing_token},
        )
        return sent

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

"""When jobs run: cron expressions, fixed intervals, and ``schedule`` schedulers.

Ticks are wall-clock instants that every replica computes alike, so "the
10:00:10 tick" names the same run on every replica: cron ticks by their
expression, interval ticks on a grid anchored at the Unix epoch. A new leader
continues the same grid; ticks that fell in a failover gap are not caught up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Protocol

from cronsim import CronSim, CronSimError

from ._errors import ConfigError

__all__ = ["CronTrigger", "IntervalTrigger", "Trigger", "make_trigger"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Trigger(Protocol):
    """A rule that names the next tick."""

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first tick strictly after ``moment`` (timezone-aware)."""
        ...

    def describe(self) -> str:
        """A short human-readable form, for logs and ``--help`` output."""
        ...


@dataclasses.dataclass(frozen=True)
class CronTrigger:
    """A cron expression: six fields with seconds first (``*/10 * * * * *``), or the
    classic five (``*/5 * * * *``), evaluated in ``timezone`` (default UTC)."""

    expression: str
    timezone: dt.tzinfo = dt.UTC

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise ConfigError(f"cron expression must be a string, got {self.expression!r}", field="cron")
        fields = self.expression.split()
        if len(fields) not in (5, 6):
            raise ConfigError(
                f"cron expression {self.expression!r} has {len(fields)} fields; expected 6 "
                "(second minute hour day month weekday, e.g. '*/10 * * * * *') or 5 (no seconds)",
                field="cron",
            )
        try:
            CronSim(self.expression, dt.datetime.now(self.timezone))
        except CronSimError as exc:
            raise ConfigError(f"cron expression {self.expression!r} is invalid: {exc}", field="cron") from exc

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        local = moment.astimezone(self.timezone)
        # cronsim returns ticks at or after whole seconds following `local`
        tick: dt.datetime = next(CronSim(self.expression, local.replace(microsecond=0)))
        return tick

    def describe(self) -> str:
        return f"cron {self.expression!r}"


@dataclasses.dataclass(frozen=True)
class IntervalTrigger:
    """Every ``seconds`` seconds, on a grid anchored at the Unix epoch plus ``offset``."""

    seconds: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.seconds, bool)
            or not isinstance(self.seconds, int | float)
            or self.seconds < 0.001
        ):
            raise ConfigError(
                f"interval must be a positive number of seconds (at least 0.001), got {self.seconds!r}",
                field="every",
            )

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        # Whole microseconds, as datetimes count them: float seconds would let
        # rounding put the "next" tick on `moment` itself.
        period, offset = round(self.seconds * 1_000_000), round(self.offset * 1_000_000)
        after = (moment - _EPOCH) // dt.timedelta(microseconds=1)
        index = (after - offset) // period + 1
        return _EPOCH + dt.timedelta(microseconds=index * period + offset)

    def describe(self) -> str:
        return f"every {self.seconds:g}s"


def make_trigger(*, cron: str | None = None, every: float | dt.timedelta | None = None) -> Trigger:
    """The trigger for exactly one of ``cron`` or ``every``; a clear error otherwise."""
    if (cron is None) == (every is None):
        raise ConfigError("give exactly one of cron='...' or every=SECONDS", field="trigger")
    if cron is not None:
        return CronTrigger(cron)
    assert every is not None
    seconds = every.total_seconds() if isinstance(every, dt.timedelta) else every
    return IntervalTrigger(seconds)

"""When jobs run: cron expressions, fixed intervals, and ``schedule`` schedulers.

Ticks are wall-clock instants that every replica computes alike, so "the
10:00:10 tick" names the same run on every replica: cron ticks by their
expression, interval ticks on a grid anchored at the Unix epoch. A new leader
continues the same grid; ticks that fell in a failover gap are not caught up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from typing import Protocol

from cronsim import CronSim, CronSimError

from ._errors import ConfigError

__all__ = ["CronTrigger", "IntervalTrigger", "Trigger", "make_trigger"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: The common cron macros, as the five-field expressions they stand for (cronsim
#: has none of them). ``@reboot`` has no tick to name, so it is refused.
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: The longest interval: ticks past it would leave the datetime range (year 9999)
#: at once; 100 years is far beyond any job and far inside that range.
_MAX_INTERVAL = 100 * 365 * 86400.0

_SIX_FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_ZERO_STEP = re.compile(r"/0*(?:$|,)")


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
        if self.expression.strip().startswith("@"):
            self._check_macro(self.expression.strip())
            return
        fields = self.expression.split()
        if len(fields) not in (5, 6):
            raise ConfigError(
                f"cron expression {self.expression!r} has {len(fields)} fields; expected 6 "
                "(second minute hour day month weekday, e.g. '*/10 * * * * *') or 5 (no seconds), "
                f"or one of {', '.join(_MACROS)}",
                field="cron",
            )
        # cronsim calls a step of 0 a bad value ("Bad second"); say what is wrong.
        names = _SIX_FIELDS if len(fields) == 6 else _SIX_FIELDS[1:]
        for name, text in zip(names, fields, strict=True):
            if _ZERO_STEP.search(text):
                raise ConfigError(
                    f"cron expression {self.expression!r} has a step of 0 in its {name} field "
                    f"({text!r}), which never advances; use a step of 1 or more, e.g. '*/1'",
                    field="cron",
                )
        try:
            CronSim(self._expanded(), dt.datetime.now(self.timezone))
        except CronSimError as exc:
            raise ConfigError(f"cron expression {self.expression!r} is invalid: {exc}", field="cron") from exc

    def _check_macro(self, macro: str) -> None:
        if macro.lower() == "@reboot":
            raise ConfigError(
                "cron expression '@reboot' is not supported: it names no tick (a job that runs once "
                "at start belongs in your service's own start-up code)",
                field="cron",
            )
        if macro.lower() not in _MACROS:
            raise ConfigError(
                f"cron expression {self.expression!r} uses an unknown macro {macro!r}; "
                f"known macros: {', '.join(_MACROS)}",
                field="cron",
            )

    def _expanded(self) -> str:
        """The expression for cronsim: a macro stands for its five-field form."""
        return _MACROS.get(self.expression.strip().lower(), self.expression)

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        local = moment.astimezone(self.timezone)
        # cronsim returns ticks at or after whole seconds following `local`
        tick: dt.datetime = next(CronSim(self._expanded(), local.replace(microsecond=0)))
        return tick

    def describe(self) -> str:
        return f"cron {self.expression!r}"


@dataclasses.dataclass(frozen=True)
class IntervalTrigger:
    """Every ``seconds`` seconds, on a grid anchored at the Unix epoch plus ``offset``."""

    seconds: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        # nan and inf must not pass: a nan interval names no tick (the leader would
        # hold the lease and run nothing), and ticks past _MAX_INTERVAL overflow.
        if (
            isinstance(self.seconds, bool)
            or not isinstance(self.seconds, int | float)
            or not math.isfinite(self.seconds)
            or not 0.001 <= self.seconds <= _MAX_INTERVAL
        ):
            raise ConfigError(
                "interval must be a finite positive number of seconds, from 0.001 to "
                f"{_MAX_INTERVAL:.0f} (100 years), got {self.seconds!r}",
                field="every",
            )
        if (
            isinstance(self.offset, bool)
            or not isinstance(self.offset, int | float)
            or not math.isfinite(self.offset)
        ):
            raise ConfigError(
                f"offset must be a finite number of seconds, got {self.offset!r}", field="offset"
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

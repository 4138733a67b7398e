"""An election's row in the lease table: its columns, their type checks, and the record it reads as."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

from ..._errors import CorruptLeaseRecord
from .. import LeaseRecord

__all__ = ["COLUMNS", "LIVE", "SELECT_COLUMNS", "LeaseRow", "parse_row"]

#: Columns in the order every SELECT and RETURNING lists them.
COLUMNS = (
    "election",
    "holder",
    "lease_duration",
    "fencing_token",
    "version",
    "transitions",
    "acquire_time",
    "renew_time",
    "expires_at",
)
SELECT_COLUMNS = ", ".join(COLUMNS)

#: A WHERE condition that holds while the row's lease is live on the store's
#: clock, as :meth:`LeaseRow.is_live` judges it; its two parameters are both now.
LIVE = "holder <> '' AND expires_at > ? AND expires_at <= ? + lease_duration + 0.001"


@dataclasses.dataclass(frozen=True)
class LeaseRow:
    """One row as stored, checked for types."""

    election: str
    holder: str
    lease_duration: float
    fencing_token: int
    version: int
    transitions: int
    acquire_time: dt.datetime | None
    renew_time: dt.datetime | None
    expires_at: float

    def is_live(self, now: float) -> bool:
        """True if the row names a holder whose lease has not run out on the store's clock (SQL: :data:`LIVE`).

        A deadline further ahead than ``lease_duration`` can only come from a
        clock that restarted (a reboot: CLOCK_BOOTTIME starts again near 0);
        every process that wrote it is gone, so the lease is free.
        """
        remaining = self.expires_at - now
        return bool(self.holder) and 0 < remaining <= self.lease_duration + 1e-3

    def record(self, now: float) -> LeaseRecord:
        """The record as the store sees it now: an expired lease reads as released."""
        live = self.is_live(now)
        return LeaseRecord(
            election=self.election,
            holder=self.holder if live else "",
            lease_duration=self.lease_duration,
            fencing_token=self.fencing_token,
            version=str(self.version),
            transitions=self.transitions,
            acquire_time=self.acquire_time,
            renew_time=self.renew_time,
            expires_in=(self.expires_at - now) if live else 0.0,
        )


def parse_row(raw: tuple[Any, ...] | None, election: str, *, table: str, path: str) -> LeaseRow | None:
    """Check a raw row's types; raise CorruptLeaseRecord naming the file, table and column."""
    if raw is None:
        return None

    def bad(column: str, expected: str) -> CorruptLeaseRecord:
        value = raw[COLUMNS.index(column)]
        return CorruptLeaseRecord(
            f"the row for this election in table {table} of {path} has "
            f"{column}={value!r}, expected {expected}",
            election=election,
            backend="sqlite",
        )

    values = dict(zip(COLUMNS, raw, strict=True))
    for column in ("election", "holder"):
        if not isinstance(values[column], str):
            raise bad(column, "text")
    for column in ("fencing_token", "version", "transitions"):
        value = values[column]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(column, "an integer >= 0")
    for column in ("lease_duration", "expires_at"):
        value = values[column]
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise bad(column, "a number")
    if values["lease_duration"] <= 0:
        raise bad("lease_duration", "a number of seconds > 0")
    times: dict[str, dt.datetime | None] = {}
    for column in ("acquire_time", "renew_time"):
        value = values[column]
        if value is None:
            times[column] = None
            continue
        try:
            times[column] = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise bad(column, "an ISO 8601 time") from None
    return LeaseRow(
        election=values["election"],
        holder=values["holder"],
        lease_duration=float(values["lease_duration"]),
        fencing_token=values["fencing_token"],
        version=values["version"],
        transitions=values["transitions"],
        acquire_time=times["acquire_time"],
        renew_time=times["renew_time"],
        expires_at=float(values["expires_at"]),
    )

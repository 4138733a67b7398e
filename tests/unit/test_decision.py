"""The acquire decision (``leaderlib.backends.decide``), row by row of the table in
``Lease.try_acquire``'s docstring, and the shared error-table mechanism."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from leaderlib import AccessDenied, BackendError, BackendUnavailable, ConfigError, LeaseLost, LeaseRecord
from leaderlib.backends import FIRST_TOKEN, Decision, decide
from leaderlib.backends._errors import Row, error_map


def record(holder: str = "holder-a", *, token: int = 7, version: str = "v1") -> LeaseRecord:
    return LeaseRecord(election="e", holder=holder, lease_duration=10.0, fencing_token=token, version=version)


HELD = record()
RELEASED = record("")  # also how a store shows a lease it expired itself

ROWS = [
    # (what the store holds, takeover, decision)
    pytest.param(
        None, None, Decision(new_term=True, fencing_token=FIRST_TOKEN), id="no record: the first term"
    ),
    pytest.param(
        None, HELD, Decision(new_term=True, fencing_token=FIRST_TOKEN), id="no record, a stale takeover"
    ),
    pytest.param(
        RELEASED, None, Decision(new_term=True, fencing_token=8), id="released or store-expired: +1"
    ),
    pytest.param(
        RELEASED,
        record("", version="v0"),
        Decision(new_term=True, fencing_token=8),
        id="released, takeover of an older version: still free",
    ),
    pytest.param(
        HELD, HELD, Decision(new_term=True, fencing_token=8), id="exactly the takeover's version: +1"
    ),
    pytest.param(HELD, None, Decision(new_term=False, fencing_token=7), id="held, no takeover: report it"),
    pytest.param(
        HELD,
        record(version="v0"),
        Decision(new_term=False, fencing_token=7),
        id="held, takeover of another version: report it",
    ),
    pytest.param(
        HELD,
        dataclasses.replace(HELD, version="v2"),
        Decision(new_term=False, fencing_token=7),
        id="a live record naming the same holder is not adopted",
    ),
]


@pytest.mark.parametrize(("current", "takeover", "expected"), ROWS)
def test_decide(current: LeaseRecord | None, takeover: LeaseRecord | None, expected: Decision) -> None:
    assert decide(current, takeover) == expected


def test_first_token_is_one() -> None:
    assert FIRST_TOKEN == 1


class _DriverError(Exception):
    def __init__(self, code: int, text: str = "") -> None:
        super().__init__(text)
        self.code = code


_TABLE = error_map(
    [
        Row(
            _DriverError, LeaseLost, lambda exc, at: f"gone at {at}", when=lambda exc, at: "gone" in str(exc)
        ),
        Row(401, AccessDenied, lambda exc, at: f"denied at {at}"),
        Row(_DriverError, BackendUnavailable, lambda exc, at: f"code {exc.code} at {at}"),
        Row((KeyError, IndexError), BackendError, lambda exc, at: f"lookup {exc!r}"),
    ],
    code=lambda exc: exc.code if isinstance(exc, _DriverError) else None,
)


@pytest.mark.parametrize(
    ("raised", "kind", "message"),
    [
        (_DriverError(401, "lease gone"), LeaseLost, "gone at here"),  # rows in order: first match wins
        (_DriverError(401), AccessDenied, "denied at here"),  # by code
        (_DriverError(500), BackendUnavailable, "code 500 at here"),  # by type
        (IndexError(3), BackendError, "lookup IndexError(3)"),  # a tuple of types
    ],
)
def test_error_map_rows(raised: Exception, kind: type[BackendError], message: str) -> None:
    with pytest.raises(kind) as caught, _TABLE.translating("here", election="e", backend="test"):
        raise raised
    assert caught.type is kind
    assert caught.value.election == "e" and caught.value.backend == "test"
    assert message in str(caught.value)
    assert caught.value.__cause__ is raised


@pytest.mark.parametrize(
    "raised",
    [ConfigError("ours", field="x"), LeaseLost("ours"), ValueError("no row"), asyncio.CancelledError()],
    ids=["leaderlib config", "leaderlib backend", "unmatched", "cancellation"],
)
def test_error_map_passes_the_rest_through(raised: BaseException) -> None:
    with pytest.raises(type(raised)) as caught, _TABLE.translating("here", election="e", backend="test"):
        raise raised
    assert caught.value is raised


def test_error_map_default_never_catches_cancellation() -> None:
    table = error_map([], default=Row(Exception, BackendUnavailable, lambda exc, at: f"other: {exc}"))
    with (
        pytest.raises(BackendUnavailable, match="other: boom"),
        table.translating(None, election=None, backend=None),
    ):
        raise RuntimeError("boom")
    with pytest.raises(asyncio.CancelledError), table.translating(None, election=None, backend=None):
        raise asyncio.CancelledError()

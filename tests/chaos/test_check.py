"""The checker on hand-made ledgers: what it must count, and what it must not."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .check import check
from .faults import Fault

RENEW_DEADLINE = 1.0


def event(kind: str, pid: int, token: int, boot: float, valid_until: float | None = None) -> dict[str, Any]:
    return {
        "kind": kind,
        "pid": pid,
        "replica": f"r{pid}",
        "token": token,
        "boot": boot,
        "valid_until": valid_until,
    }


def act(pid: int, token: int, boot: float, tick: float, valid_until: float) -> dict[str, Any]:
    """An accepted run of the tick named ``tick`` (wall-clock seconds)."""
    return {
        "kind": "act",
        "pid": pid,
        "replica": f"r{pid}",
        "token": token,
        "tick": dt.datetime.fromtimestamp(tick, dt.UTC).isoformat(),
        "boot": boot,
        "server_boot": boot,
        "believed": True,
        "valid_until": valid_until,
        "accepted": True,
        "highest": token,
    }


def account(events: list[dict[str, Any]], attempts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    pause = Fault(1, "kubernetes", "pause", "r1 (leader)", 1, 0.9, 3.0, True, "SIGSTOP")
    # Wall clock 1000.0 at boot 0.0.
    span = (0.0, 10.0, 1000.0, 1010.0)
    return check(attempts or [], events, [pause], renew_deadline=RENEW_DEADLINE, interval=0.3, span=span)


def test_a_renewal_answered_while_stopped_does_not_stretch_the_term() -> None:
    """Seen on Kubernetes: a leader whose job was stalled (no run told the exact
    deadline) was stopped just after sending a renewal; on waking it logged the
    renewal, then stepped down. The new leader came after the true deadline."""
    events = [
        event("became", 1, 7, 0.0),
        event("renewed", 1, 7, 0.25),
        event("renewed", 1, 7, 0.5),
        event("renewed", 1, 7, 3.0),  # sent before the stop at 0.9, logged on waking
        event("stopped", 1, 7, 3.0),
        event("became", 2, 8, 2.6),
    ]
    result = account(events)
    assert result["totals"].get("overlaps", 0) == 0, result["problems"]


def test_a_term_that_was_still_valid_is_an_overlap() -> None:
    events = [
        event("became", 1, 7, 0.0),
        event("renewed", 1, 7, 0.5, valid_until=1.5),
        event("became", 2, 8, 1.2),
    ]
    result = account(events)
    assert result["totals"]["overlaps"] == 1


def test_a_tick_run_early_by_a_clock_ahead_and_again_later_is_told_apart() -> None:
    early = act(1, 7, 0.1, 1005.0, 1.0)  # named 5 s ahead of the wall clock (1000.1 then)
    again = act(2, 8, 5.0, 1005.0, 6.0)
    twice = [act(1, 7, 0.2, 1000.0, 1.0), act(2, 8, 0.4, 1000.0, 1.4)]
    events = [event("became", 1, 7, 0.0), event("became", 2, 8, 0.3)]
    totals = account(events, [early, again, *twice])["totals"]
    assert totals["duplicate_ticks_early"] == 1
    assert totals["duplicate_ticks"] == 1

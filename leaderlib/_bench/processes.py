"""Handover and failover, with every candidate in a process of its own.

One cycle per sample: candidate A leads; B and C follow (each has seen A's
record); A is SIGKILLed (a crash: failover, until B or C leads); the new
leader is stopped gracefully with SIGTERM (handover, until the other leads).
Times are CLOCK_MONOTONIC stamps: the parent's for the signal, the
candidate's own for when it led (the same clock, same host).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from .model import Row, not_applicable, progress
from .peers import Candidate, Peer
from .plan import Plan
from .stores import Target

#: Seconds a follower is given, after it has started, to have seen the leader's record.
SETTLE = {"kubernetes-leaselock": 1.5, "kubernetes-aio-leaselock": 1.5}
DEFAULT_SETTLE = 0.5


def _first_leader(
    candidates: list[Candidate], after: float, timeout: float
) -> tuple[Candidate, float] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        led = [(c, s) for c in candidates for s in c.stamps("leading") if s > after]
        if led:
            return min(led, key=lambda pair: pair[1])
        time.sleep(0.0005)
    return None


def one_cycle(target: Target, peer: Peer, index: int) -> dict[str, Any]:
    """Run one cycle; returns failover and handover seconds, beyond-lease seconds and the timeline."""
    election = f"bench-{peer.key}-{uuid.uuid4().hex[:8]}"
    lease = peer.timing.lease
    patience = 3 * lease + 10.0
    events: list[tuple[str, str, float]] = []
    candidates: list[Candidate] = []
    try:
        a = peer.spawn(target, election, f"a{index}")
        candidates.append(a)
        led = a.wait("leading", 30.0)
        if led is None:
            raise RuntimeError(f"the first candidate did not lead within 30 s ({peer.subject})")
        events.append(("a", "leads", led))
        followers = [peer.spawn(target, election, f"{name}{index}") for name in ("b", "c")]
        candidates += followers
        for follower in followers:
            if follower.wait("started", 30.0) is None:
                raise RuntimeError(f"a follower did not start within 30 s ({peer.subject})")
        time.sleep(SETTLE.get(peer.key, DEFAULT_SETTLE))
        killed_at = time.monotonic()
        a.kill()
        events.append(("a", "SIGKILL", killed_at))
        last = peer.last_renewal(target, election, a)
        found = _first_leader(followers, killed_at, patience)
        if found is None:
            raise RuntimeError(f"no follower led within {patience:.0f} s of the SIGKILL")
        new, new_at = found
        events.append((new.identity[0], "leads", new_at))
        other = followers[1] if new is followers[0] else followers[0]
        stopped_at = time.monotonic()
        new.terminate()
        events.append((new.identity[0], "SIGTERM", stopped_at))
        took = other.wait("leading", patience, after=stopped_at)
        if took is None:
            raise RuntimeError(f"the last follower did not lead within {patience:.0f} s of the SIGTERM")
        events.append((other.identity[0], "leads", took))
        return {
            "failover": new_at - killed_at,
            "beyond_lease": None if last is None else new_at - last - lease,
            "handover": took - stopped_at,
            "timeline": [(who, what, round(at - led, 4)) for who, what, at in events],
        }
    finally:
        for candidate in candidates:
            with contextlib.suppress(Exception):
                candidate.close(3.0)


def handover_failover(target: Target, peer: Peer, plan: Plan) -> tuple[Row, Row, list[dict[str, Any]]]:
    """(handover row, failover row, timelines) for ``peer`` on ``target``."""
    handover = Row(target.store, "handover", peer.subject, settings=peer.settings)
    failover = Row(target.store, "failover", peer.subject, settings=peer.settings)
    for scenario, row in (("handover", handover), ("failover", failover)):
        if scenario in peer.unsupported:
            row.status, row.why = "n/a", peer.unsupported[scenario]
    note = getattr(peer, "note", "")
    if note:
        handover.extra["note"] = note
    timelines: list[dict[str, Any]] = []
    beyond: list[float] = []
    for index in range(plan.cycles):
        progress(f"{target.store} · handover/failover · {peer.subject} {index + 1}/{plan.cycles}")
        try:
            cycle = one_cycle(target, peer, index)
        except Exception as exc:
            for row in (handover, failover):
                if row.status == "ok":
                    row.status, row.why = "error", f"{type(exc).__name__}: {exc}"[:300]
            break
        handover.samples.append(cycle["handover"] * 1000)
        failover.samples.append(cycle["failover"] * 1000)
        if cycle["beyond_lease"] is not None:
            beyond.append(cycle["beyond_lease"] * 1000)
        timelines.append({"store": target.store, "subject": peer.subject, "events": cycle["timeline"]})
    failover.extra["lease_s"] = peer.timing.lease
    if beyond:
        stats = Row(target.store, "failover", peer.subject, samples=beyond).stats()
        failover.extra["beyond_lease_ms"] = stats
        failover.extra["beyond_lease_samples"] = [round(b, 3) for b in beyond]
    return handover, failover, timelines[:1]


def skipped(target: Target, peer: Peer, why: str) -> list[Row]:
    return [
        not_applicable(target.store, s, peer.subject, why, peer.settings) for s in ("handover", "failover")
    ]

"""The checker: from the ledger's attempts, the replicas' transition events and the faults,
what happened to safety and liveness. All times are ``CLOCK_BOOTTIME`` seconds.

* A **term** runs from its "became leader" stamp to the earlier of its logged
  end ("stopped leading") and its own deadline: the last exact deadline a run
  saw (``Leadership.valid_until``), or, for a renewal logged before any run,
  the log's stamp + renew deadline (later than the truth, so overlaps are
  over-, never under-counted).
* An **overlap**: a term starting before an earlier-started term has ended.
* A **token regression**: a term whose token is not above every earlier term's.
* An **act by a replaced leader**: a write sent while ``ctx.is_leader()`` was
  true after a term with a higher token had started.
* A **stale write**: an attempt that reached the ledger after a term with a
  higher token had started; it was either rejected (fenced) or accepted.
* **Time without a leader** after a fault: the longest stretch, from the
  fault's start (or its heal, for faults that leave no healthy majority) to
  the next fault, covered by no term; a target disabled by the fault (killed,
  stopped, cut off) is not leading from the fault's start on.
* **Ticks**: an interval grid named by the wall clock; a tick accepted twice
  is a duplicate, a tick of the campaign's span accepted never is missed;
  ticks named outside that span come from a stepped wall clock.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import math
from collections import Counter, defaultdict
from typing import Any

from .faults import Fault

#: Faults after which their target cannot act as leader from their start on.
DISABLING = {"kill", "pause", "suspend", "delay", "black_hole", "one_way_deliver", "one_way_reset"}


@dataclasses.dataclass
class Term:
    pid: int
    replica: str
    token: int
    start: float
    deadline: float
    logged_end: float | None = None

    @property
    def end(self) -> float:
        return min(self.deadline, self.logged_end if self.logged_end is not None else math.inf)


def terms_of(
    events: list[dict[str, Any]], attempts: list[dict[str, Any]], renew_deadline: float
) -> list[Term]:
    open_terms: dict[int, Term] = {}
    terms: list[Term] = []
    for e in events:
        pid = e["pid"]
        if e["kind"] == "became":
            term = Term(pid, e["replica"], e["token"], e["boot"], e["boot"] + renew_deadline)
            open_terms[pid] = term
            terms.append(term)
        elif (term_ := open_terms.get(pid)) is not None and term_.token == e["token"]:
            if e["kind"] == "renewed":
                exact = e["valid_until"]
                term_.deadline = max(
                    term_.deadline, exact if exact is not None else e["boot"] + renew_deadline
                )
            elif e["kind"] == "stopped":
                term_.logged_end = e["boot"]
                del open_terms[pid]
    by_key = {(t.pid, t.token): t for t in terms}
    for a in attempts:
        term = by_key.get((a["pid"], a["token"]))
        if term is not None and a["valid_until"] is not None:
            term.deadline = max(term.deadline, a["valid_until"])
    return sorted(terms, key=lambda t: t.start)


def _tick_time(name: str) -> float:
    return dt.datetime.fromisoformat(name).timestamp()


def check(
    attempts: list[dict[str, Any]],
    events: list[dict[str, Any]],
    faults: list[Fault],
    *,
    renew_deadline: float,
    interval: float,
    span: tuple[float, float, float, float],
) -> dict[str, Any]:
    """The campaign's account; ``span`` is (boot start, boot end, wall start, wall end)."""
    _, boot_end, wall_start, wall_end = span
    terms = terms_of(events, attempts, renew_deadline)
    starts = [t.start for t in terms]
    # The highest token among the terms started up to each start.
    highest: list[int] = []
    for t in terms:
        highest.append(max(t.token, highest[-1]) if highest else t.token)

    def newer_started(token: int, at: float) -> bool:
        i = bisect.bisect_right(starts, at)
        return i > 0 and highest[i - 1] > token

    fault_starts = [f.start for f in faults]

    def fault_at(at: float) -> int | None:
        i = bisect.bisect_right(fault_starts, at)
        return faults[i - 1].n if i > 0 else None

    per_fault: dict[int | None, Counter[str]] = defaultdict(Counter)
    problems: list[str] = []
    for i, a in enumerate(terms):
        for b in terms[i + 1 :]:
            if b.start >= a.end:
                continue
            per_fault[fault_at(b.start)]["overlaps"] += 1
            problems.append(f"overlap: {a} and {b}")
        if i and a.token <= max(t.token for t in terms[:i]):
            per_fault[fault_at(a.start)]["token_regressions"] += 1
            problems.append(f"token regression: {a}")
    for att in attempts:
        if att["kind"] in ("act", "late") and att["believed"] and newer_started(att["token"], att["boot"]):
            per_fault[fault_at(att["boot"])]["replaced_acts"] += 1
            problems.append(f"act by a replaced leader: {att}")
        if newer_started(att["token"], att["server_boot"]):
            counts = per_fault[fault_at(att["server_boot"])]
            counts["stale_attempted"] += 1
            counts["stale_accepted" if att["accepted"] else "stale_rejected"] += 1
            if att["accepted"]:
                problems.append(f"stale write accepted: {att}")

    ticks: Counter[str] = Counter(a["tick"] for a in attempts if a["kind"] == "act" and a["accepted"])
    skewed = {t for t in ticks if not wall_start - 1 <= _tick_time(t) <= wall_end + 1}
    for tick, count in ticks.items():
        if count > 1:
            # Attributed to the fault during which the wall clock named it.
            first = min(a["server_boot"] for a in attempts if a["tick"] == tick and a["kind"] == "act")
            per_fault[fault_at(first)]["duplicate_ticks"] += count - 1
    named = sorted(_tick_time(t) for t in ticks if t not in skewed)
    missed = 0
    if named:
        grid = round((named[-1] - named[0]) / interval) + 1
        missed = max(0, grid - len(set(round(t / interval) for t in named)))

    gaps: dict[int, float] = {}
    for index, fault in enumerate(faults):
        until = faults[index + 1].start if index + 1 < len(faults) else boot_end
        since = fault.start if fault.majority else fault.healed
        covered = []
        for t in terms:
            end = t.end
            if fault.kind in DISABLING and t.pid == fault.pid and t.start <= fault.start:
                end = min(end, fault.start)
            if t.start < until and end > since:
                covered.append((max(t.start, since), min(end, until)))
        gaps[fault.n] = _longest_uncovered(since, until, covered)
    totals: Counter[str] = Counter()
    for counts in per_fault.values():
        totals.update(counts)
    return {
        "terms": [dataclasses.asdict(t) | {"end": t.end} for t in terms],
        "per_fault": {str(k): dict(v) for k, v in per_fault.items()},
        "totals": dict(totals),
        "gaps": gaps,
        "ticks": len(ticks),
        "missed_ticks": missed,
        "skewed_ticks": len(skewed),
        "problems": problems,
    }


def _longest_uncovered(since: float, until: float, covered: list[tuple[float, float]]) -> float:
    longest, cursor = 0.0, since
    for start, end in sorted(covered):
        if start > cursor:
            longest = max(longest, start - cursor)
        cursor = max(cursor, end)
    return max(longest, until - cursor, 0.0)

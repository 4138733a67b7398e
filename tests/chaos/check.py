"""The checker: from the ledger's attempts, the replicas' transition events and the faults,
what happened to safety and liveness. All times are ``CLOCK_BOOTTIME`` seconds.

* A **term** runs from its "became leader" stamp to the earlier of its logged
  end ("stopped leading") and its own deadline: the last exact deadline a run
  saw (``Leadership.valid_until``), or, for a renewal logged while no run
  told the exact one (a stalled job), a bound never earlier than the truth
  (so overlaps are over-, never under-counted): a renewal is sent before the
  term's deadline and extends it to that send + renew deadline, so its new
  deadline is at most renew deadline after the earlier of its log stamp and
  the previous deadline. (A renewal answered while the process was stopped
  is logged when it wakes, after its deadline has passed; its stamp alone
  would stretch the term across the pause.)
* An **overlap**: a term starting before an earlier-started term has ended.
* A **token regression**: a term whose token is not above every earlier term's.
* An **act by a replaced leader**: a write sent while ``ctx.is_leader()`` was
  true after a later term had started.
* A **stale write**: an attempt that reached the ledger after a later term
  had started; it was either rejected (fenced) or accepted. A write of the
  newest term that the ledger rejected (its token is below one seen before:
  a regression) is **own write fenced**.
* **Lost writes** (:data:`LOSES_WRITES`): a Redis restart without persistence
  and Sentinel failovers can lose a lease or a counter's ``INCR`` that Redis
  acknowledged, a documented limit of the Redis backend. Each of the above
  whose earlier term a fault of that kind overlapped (between that term's
  start and the later one's) is counted as ``<name>_lost_writes`` and listed
  among the ``limits``, not the ``problems``: named, never hidden.
* **Time without a leader** after a fault: the longest stretch, from the
  fault's start (or its heal, for faults that leave no healthy majority) to
  the next fault, covered by no term; a target disabled by the fault (killed,
  stopped, cut off) is not leading from the fault's start on.
* **Ticks**: an interval grid named by the wall clock; a tick accepted twice
  is a duplicate, a tick of the campaign's span accepted never is missed;
  ticks named outside that span come from a stepped wall clock. A duplicate
  whose first run came before its time (by a wall clock stepped ahead) is
  ``duplicate_ticks_early``: without ``misfire_grace`` a tick run early can
  run again on another replica after a failover (docs/safety.md).
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
DISABLING = {
    "kill",
    "pause",
    "suspend",
    "delay",
    "black_hole",
    "one_way_deliver",
    "one_way_reset",
    "sentinel_lost_write",
}

#: Faults after which the store may have lost writes it acknowledged (docs/backends/redis.md):
#: the lease (two leaders until the old one's next renewal fails) or the fencing counter's
#: INCR (a token issued again).
LOSES_WRITES = {"redis_restart_lost", "sentinel_failover", "sentinel_kill_master", "sentinel_lost_write"}

#: The counts that fail a run (their ``_lost_writes`` twins are documented limits).
SAFETY = ("overlaps", "token_regressions", "replaced_acts", "stale_accepted", "own_fenced")


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
                bound = min(e["boot"], term_.deadline) + renew_deadline
                term_.deadline = max(term_.deadline, exact if exact is not None else bound)
            elif e["kind"] == "stopped":
                term_.logged_end = e["boot"]
                del open_terms[pid]
    terms.sort(key=lambda t: t.start)
    index = TermIndex(terms)
    for a in attempts:
        seen = index.find(a["pid"], a["token"], a["boot"])
        if seen is not None and a["valid_until"] is not None:
            terms[seen].deadline = max(terms[seen].deadline, a["valid_until"])
    return terms


class TermIndex:
    """Finds the term an attempt belongs to: the same process and token can hold several
    terms when tokens are issued again (after lost writes)."""

    #: An attempt's term began at most this long after the attempt's stamp (the "term"
    #: write at "became leader" is stamped just before the event is).
    SLACK = 1.0

    def __init__(self, terms: list[Term]) -> None:
        self.terms = terms
        self._by_key: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, t in enumerate(terms):
            self._by_key[(t.pid, t.token)].append(i)

    def find(self, pid: int, token: int, at: float) -> int | None:
        """The position of the latest term of ``pid`` with ``token`` begun by ``at`` (+ slack)."""
        found = [i for i in self._by_key.get((pid, token), []) if self.terms[i].start <= at + self.SLACK]
        return found[-1] if found else None

    def replaced_at(self, i: int) -> float:
        """When a later term than term ``i`` began (inf: none did)."""
        return self.terms[i + 1].start if i + 1 < len(self.terms) else math.inf


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
    boot_start, boot_end, wall_start, wall_end = span
    terms = terms_of(events, attempts, renew_deadline)
    by_term = TermIndex(terms)
    starts = [t.start for t in terms]
    # The highest token among the terms started up to each start (for attempts without a term).
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

    lossy = [(f.start, f.healed) for f in faults if f.kind in LOSES_WRITES]
    per_fault: dict[int | None, Counter[str]] = defaultdict(Counter)
    problems: list[str] = []
    limits: list[str] = []

    def found(at: float, name: str, what: str, earlier: Term | None, later: float) -> None:
        """Count ``name`` at ``at``; a documented limit if a fault that loses writes overlapped
        the span from the ``earlier`` term's start to ``later`` (the store may have forgotten it)."""
        lost = earlier is not None and any(s <= later and h >= earlier.start for s, h in lossy)
        per_fault[fault_at(at)][f"{name}_lost_writes" if lost else name] += 1
        (limits if lost else problems).append(what)

    # The term holding the highest token among those started before each one.
    top: list[Term | None] = [None]
    for t in terms[:-1]:
        best = top[-1]
        top.append(t if best is None or t.token >= best.token else best)
    for i, a in enumerate(terms):
        for b in terms[i + 1 :]:
            if b.start < a.end:
                found(b.start, "overlaps", f"overlap: {a} and {b}", a, b.start)
        if (best := top[i]) is not None and a.token <= best.token:
            found(a.start, "token_regressions", f"token regression: {a} after {best}", best, a.start)
    for att in attempts:
        at = by_term.find(att["pid"], att["token"], att["boot"])
        term = terms[at] if at is not None else None
        replaced = by_term.replaced_at(at) if at is not None else math.inf
        # A write without a known term is judged by its token alone.
        sent_replaced, landed_replaced = (
            when >= replaced or (term is None and newer_started(att["token"], when))
            for when in (att["boot"], att["server_boot"])
        )
        if att["kind"] in ("act", "late") and att["believed"] and sent_replaced:
            found(att["boot"], "replaced_acts", f"act by a replaced leader: {att}", term, replaced)
        if landed_replaced:
            counts = per_fault[fault_at(att["server_boot"])]
            counts["stale_attempted"] += 1
            counts["stale_rejected"] += not att["accepted"]
            if att["accepted"]:
                found(att["server_boot"], "stale_accepted", f"stale write accepted: {att}", term, replaced)
        elif not att["accepted"] and at is not None:
            # The newest term fenced off: its token is below one the ledger saw before.
            best = top[at]
            what = f"own write fenced (token below {att['highest']}): {att}"
            found(att["server_boot"], "own_fenced", what, best, terms[at].start)

    ticks: Counter[str] = Counter(a["tick"] for a in attempts if a["kind"] == "act" and a["accepted"])
    skewed = {t for t in ticks if not wall_start - 1 <= _tick_time(t) <= wall_end + 1}
    for tick, count in ticks.items():
        if count > 1:
            # Attributed to the fault during which the wall clock named it.
            first = min(a["server_boot"] for a in attempts if a["tick"] == tick and a["kind"] == "act")
            early = _tick_time(tick) > wall_start + (first - boot_start) + 1.0
            per_fault[fault_at(first)]["duplicate_ticks_early" if early else "duplicate_ticks"] += count - 1
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
        "limits": limits,
    }


def _longest_uncovered(since: float, until: float, covered: list[tuple[float, float]]) -> float:
    longest, cursor = 0.0, since
    for start, end in sorted(covered):
        if start > cursor:
            longest = max(longest, start - cursor)
        cursor = max(cursor, end)
    return max(longest, until - cursor, 0.0)

"""The campaign's report: ``report.md`` (faults x store), ``report.json`` and ``timeline.png``."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .check import SAFETY

if TYPE_CHECKING:
    from .campaign import StoreRun

COLUMNS = [
    ("faults", "faults"),
    ("overlaps", "overlaps"),
    ("replaced_acts", "acts by replaced leader"),
    ("stale_attempted", "stale attempted"),
    ("stale_rejected", "stale rejected"),
    ("stale_accepted", "stale accepted"),
    ("token_regressions", "token regressions"),
    ("own_fenced", "own writes fenced"),
    (
        "lost",
        "after lost writes (documented): overlaps / regressions / replaced acts / stale accepted / own fenced",
    ),
    ("gap", "longest without leader (s)"),
    ("duplicate_ticks", "duplicate ticks"),
    ("duplicate_ticks_early", "duplicate ticks first run early (clock ahead; documented)"),
    ("heal", "slowest heal beyond plan (s)"),
]


def rows(run: StoreRun) -> list[dict[str, Any]]:
    """One row per fault kind of a store, then the store's total."""
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    worst: dict[str, tuple[float, int]] = {}
    heal: dict[str, float] = {}
    per_fault = run.account["per_fault"]
    for fault in run.faults:
        counts = by_kind[fault.kind]
        counts["faults"] += 1
        counts.update(per_fault.get(str(fault.n), {}))
        heal[fault.kind] = max(heal.get(fault.kind, 0.0), fault.overrun)
        gap = run.account["gaps"][fault.n]
        if gap >= worst.get(fault.kind, (-1.0, 0))[0]:
            worst[fault.kind] = (gap, fault.n)
    out = []
    for kind in sorted(by_kind):
        gap, n = worst[kind]
        row = {"store": run.store, "fault": kind, **by_kind[kind], "gap": gap, "gap_fault": n}
        out.append(row | {"heal": heal[kind]})
    total: Counter[str] = Counter()
    for counts in by_kind.values():
        total.update(counts)
    total.update(per_fault.get("None", {}))  # before the first fault
    gap, n = max(worst.values(), default=(0.0, 0))
    all_row = {"store": run.store, "fault": "**all**", **total, "gap": gap, "gap_fault": n}
    out.append(all_row | {"heal": max(heal.values(), default=0.0)})
    return out


def markdown(runs: list[StoreRun]) -> str:
    from .campaign import verdict

    lines = ["# Chaos campaign", ""]
    for run in runs:
        ok, why = verdict(run)
        lines.append(
            f"- **{run.store}**: seed `{run.seed}`, {len(run.faults)} faults in {run.seconds:.0f} s, "
            f"{len(run.account['terms'])} terms, {run.account['ticks']} ticks run, "
            f"{run.account['missed_ticks']} missed, {run.account['skewed_ticks']} named by a stepped wall clock: "
            + ("PASS" if ok else "FAIL " + "; ".join(why))
        )
    lines += ["", "| store | fault | " + " | ".join(title for _, title in COLUMNS) + " |"]
    lines.append("|---|---|" + "---|" * len(COLUMNS))
    for run in runs:
        for row in rows(run):
            cells = []
            for key, _ in COLUMNS:
                if key == "gap":
                    majority = row["fault"] not in _no_majority(run)
                    cells.append(f"{row['gap']:.2f} (#{row['gap_fault']}{'' if majority else ', from heal'})")
                elif key == "heal":
                    cells.append(f"{row['heal']:.1f}")
                elif key == "lost":
                    cells.append(" / ".join(str(row.get(f"{name}_lost_writes", 0)) for name in SAFETY))
                else:
                    cells.append(str(row.get(key, 0)))
            lines.append(f"| {row['store']} | {row['fault']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Longest time without a leader: from the fault's start, or from its heal where the fault",
        "left no healthy majority (store down, slow store). Bound: lease + 1 s after faults that leave one.",
        "",
        "Duplicate ticks first run early: a leader whose wall clock was stepped ahead ran a tick",
        "before its time, and another leader ran it again when it came; without misfire_grace",
        "that is documented (docs/safety.md, Wall-clock steps).",
        "",
        "After lost writes: what followed a fault that can make Redis lose writes it acknowledged",
        "(a restart without persistence, a Sentinel failover; see docs/backends/redis.md), counted",
        "apart because the Redis backend documents it as a limit, not as a guarantee.",
    ]
    for run in runs:
        for limit in run.account.get("limits", [])[:5]:
            lines.append(f"- {run.store}: {limit}")
    lines += [
        "",
        "![timeline](timeline.png)",
        "",
    ]
    return "\n".join(lines)


def _no_majority(run: StoreRun) -> set[str]:
    return {f.kind for f in run.faults if not f.majority}


def timeline(runs: list[StoreRun], path: Path) -> None:
    """Terms (one bar per replica, coloured by token) and faults (shaded) per store."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(14, 2.2 * len(runs) + 0.5), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        terms = run.account["terms"]
        origin = min([t["start"] for t in terms] + [f.start for f in run.faults] or [0.0])
        replicas = sorted({t["replica"] for t in terms})
        for t in terms:
            y = replicas.index(t["replica"])
            ax.broken_barh(
                [(t["start"] - origin, max(0.01, t["end"] - t["start"]))],
                (y - 0.4, 0.8),
                color=plt.cm.tab20(t["token"] % 20),
            )
        for f in run.faults:
            ax.axvspan(f.start - origin, max(f.healed, f.start + 0.05) - origin, color="red", alpha=0.15)
            ax.text(f.start - origin, len(replicas) - 0.4, f.kind, fontsize=5, rotation=90, va="bottom")
        ax.set_yticks(range(len(replicas)), replicas)
        ax.set_title(f"{run.store} (seed {run.seed})", fontsize=9)
        ax.set_xlabel("seconds (CLOCK_BOOTTIME)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs: list[StoreRun], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(runs))
    payload = {"runs": [r.as_dict() for r in runs], "table": [row for r in runs for row in rows(r)]}
    (out / "report.json").write_text(json.dumps(payload, indent=1, default=str))
    if runs:  # every store aborted: the Markdown says so, there is nothing to draw
        timeline(runs, out / "timeline.png")

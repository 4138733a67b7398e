"""The report: goals judged from the rows, the JSON file and the Markdown tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .model import STORES, Row

#: etcd's lessor looks for expired leases every 500 ms: a lease ends up to that late.
ETCD_EXPIRY_GRANULARITY = 0.5
PEERLESS = ("raw", "leaderlib", "leaderlib try_acquire")


def _find(rows: list[Row], store: str, scenario: str, subject: str = "leaderlib") -> Row | None:
    return next((r for r in rows if (r.store, r.scenario, r.subject) == (store, scenario, subject)), None)


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "MISSED")


def goals(rows: list[Row]) -> list[dict[str, Any]]:
    """Each goal of issue 12, per store, judged from this run's rows."""
    result: list[dict[str, Any]] = []

    def add(goal: str, store: str, ok: bool | None, figure: str) -> None:
        result.append({"goal": goal, "store": store, "verdict": _verdict(ok), "figure": figure})

    for store in STORES:
        if not any(r.store == store for r in rows):
            continue
        raw, acq = _find(rows, store, "raw", "raw"), _find(rows, store, "acquire")
        if raw and acq and raw.samples and acq.samples:
            a, r = acq.stats(), raw.stats()
            ratio = float(a["median"] or 0) / float(r["median"] or 1)
            ok = ratio <= 1.5 and float(a["p99"] or 0) < 5.0
            add("acquire median <= 1.5x raw and p99 < 5 ms", store, ok,
                f"median {a['median']} ms = {ratio:.2f}x raw ({r['median']} ms), p99 {a['p99']} ms")  # fmt: skip
            peers = [p for p in rows if p.store == store and p.scenario == "acquire"
                     and p.subject not in PEERLESS and p.samples]  # fmt: skip
            if peers:
                fastest = min(peers, key=lambda p: float(p.stats()["median"] or 0))
                best = float(fastest.stats()["median"] or 0)
                add("acquire never slower than the fastest peer", store, float(a["median"] or 0) <= best,
                    f"leaderlib {a['median']} ms vs {fastest.subject} {best} ms (medians)")  # fmt: skip
        else:
            add("acquire median <= 1.5x raw and p99 < 5 ms", store, None, "no samples")
        hand = _find(rows, store, "handover")
        if hand and hand.samples:
            p99 = float(hand.stats()["p99"] or 0)
            add("handover p99 < 20 ms", store, p99 < 20.0, f"p99 {p99} ms over {len(hand.samples)} handovers")
        else:
            add("handover p99 < 20 ms", store, None, hand.why if hand else "not run")
        fail = _find(rows, store, "failover")
        beyond = fail.extra.get("beyond_lease_ms") if fail else None
        if fail and beyond:
            allowed = 100.0 + (ETCD_EXPIRY_GRANULARITY * 1000 if store == "etcd" else 0.0)
            worst = float(beyond["max"] or 0)
            add("failover within lease + 0.1 s (etcd: + 0.5 s expiry granularity), from the last renewal",
                store, worst <= allowed, f"max {worst} ms beyond the lease (allowed {allowed:g} ms)")  # fmt: skip
        else:
            add("failover within lease + 0.1 s", store, None, fail.why if fail else "not run")
        load = _find(rows, store, "load")
        per = [p["per_follower"] for p in (load.points if load else []) if "per_follower" in p]
        if per:
            add("followers add < 0.1 request/s each", store, max(per) < 0.1,
                f"up to {max(per)} requests/s per follower")  # fmt: skip
        else:
            add("followers add < 0.1 request/s each", store, None, load.why if load else "not run")
        scale = _find(rows, store, "scale")
        points = [p for p in (scale.points if scale else []) if p["elections"] == 10_000]
        for point in points:
            ok = point["missed_renewals"] == 0 and point["not_leading"] == 0
            add(f"10,000 elections, no missed renewal (gc thresholds {point.get('gc', '?')})", store, ok,
                f"{point['missed_renewals']} missed, {point['not_leading']} not leading after "
                f"{point['ramp_s']} s, CPU {point['cpu_percent']}%, GC {point.get('gc_percent', '?')}%")  # fmt: skip
        if not points:
            biggest = max((p["elections"] for p in (scale.points if scale else [])), default=0)
            add("10,000 elections, no missed renewal", store, None, f"largest E run: {biggest}")
    return result


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    out = dict(report)
    out["rows"] = [r.to_json() for r in report["rows"]]
    out["goals"] = goals(report["rows"])
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(report), indent=1) + "\n")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return (
        f"{value:.3g}"
        if isinstance(value, float) and value < 10
        else f"{value:,.0f}"
        if isinstance(value, float)
        else str(value)
    )


def _note(row: Row) -> str:
    if row.status != "ok":
        return f"{row.status} ({row.why})"
    notes = []
    beyond = row.extra.get("beyond_lease_ms")
    if beyond:
        notes.append(f"beyond lease median {beyond['median']} / max {beyond['max']} ms")
    if "cost_per_run_ms" in row.extra:
        cost = f"cost per run = 2 x record_run = {row.extra['cost_per_run_ms']} ms"
        if row.ratio_to_raw is not None:
            cost += f" ({2 * row.ratio_to_raw:.3g}x raw)"
        notes.append(cost + f"; per term, one last_runs = {row.extra['last_runs_ms']['median']} ms")
    if "requests_per_run" in row.extra:
        notes.append(f"{row.extra['requests_per_run']} store requests/run")
    if "note" in row.extra:
        notes.append(str(row.extra["note"]))
    return "; ".join(notes)


def markdown(report: dict[str, Any]) -> str:
    rows: list[Row] = report["rows"]
    lines = [
        f"Run {report['started']}, {report['duration_s']} s, {report['machine']['cpus']} CPUs, "
        f"{'--quick' if report['settings']['quick'] else 'full'}; loopback; etcd fsync on.",
        "",
        "| goal | store | verdict | figure |",
        "|---|---|---|---|",
    ]
    lines += [f"| {g['goal']} | {g['store']} | {g['verdict']} | {g['figure']} |" for g in goals(rows)]
    lines += [
        "",
        "| store | scenario | subject | n | median ms | p90 | p99 | max | x raw | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.scenario in ("load", "scale"):
            continue
        s = row.stats()
        cells: list[Any] = [
            row.store,
            row.scenario,
            row.subject,
            s["n"],
            s["median"],
            s["p90"],
            s["p99"],
            s["max"],
        ]
        ratio = f"{row.ratio_to_raw}x" if row.ratio_to_raw is not None else ""
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + f" | {ratio} | {_note(row)} |")
    followers = report["settings"]["followers"]
    lines += [
        "",
        "Load: requests/s the store's server received (per follower beyond the leader alone in brackets).",
        "",
        "| store | subject | " + " | ".join(f"1 + {n}" for n in followers) + " | counted by |",
        "|---|---|" + "---|" * len(followers) + "---|",
    ]
    for row in (r for r in rows if r.scenario == "load"):
        by_n = {p["followers"]: p for p in row.points}
        cells = []
        for n in followers:
            p = by_n.get(n)
            cells.append("" if p is None else f"{p['requests_per_s']:.2f}" + (
                f" ({p['per_follower']:.2f})" if "per_follower" in p else ""))  # fmt: skip
        tail = row.extra.get("counted_by", "") if row.status == "ok" else f"{row.status} ({row.why})"
        lines.append(f"| {row.store} | {row.subject} | " + " | ".join(cells) + f" | {tail} |")
    lines += [
        "",
        "Scale: E elections in one process (one backend object), leaderlib defaults.",
        "",
        "| store | subject | E | gc thresholds | ramp s | not leading | missed renewals | CPU % | GC % | RSS MB | connections | threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in (r for r in rows if r.scenario == "scale"):
        if row.status != "ok" and not row.points:
            lines.append(f"| {row.store} | {row.subject} | {row.status} ({row.why}) |||||||||| ")
        for p in row.points:
            lines.append(
                f"| {row.store} | {row.subject} | {p['elections']:,} | {p.get('gc', '')} | {p['ramp_s']} "
                f"| {p['not_leading']} | {p['missed_renewals']} | {p['cpu_percent']} "
                f"| {p.get('gc_percent', '')} | {p['rss_mb']} | {p['connections']} | {p['threads']} |"
            )
        if row.status == "error" and row.points:
            lines.append(f"| {row.store} | {row.subject} | error ({row.why}) |||||||||| ")
    return "\n".join(lines) + "\n"

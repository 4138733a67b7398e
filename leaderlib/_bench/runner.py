"""One run: every selected scenario, for every selected subject, on every target, in order."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import sys
import time
from importlib import metadata
from typing import Any

from . import load, processes, scale, scenarios
from .model import SCENARIOS, Row, not_applicable, progress
from .peers import Peer, load_peer, peers_for
from .plan import Plan
from .stores import Target

LATENCY = ("acquire", "renew", "handover", "failover")

PACKAGES = (
    "leaderlib", "redis", "aetcd", "grpcio", "kubernetes", "tooz", "schedule", "matplotlib", "psutil",
)  # fmt: skip


def _peer_or_error(key: str, store: str, chosen: list[str]) -> Peer | str:
    try:
        return load_peer(key, store)
    except ImportError as exc:
        return str(exc)


async def run_target(
    target: Target, scenarios_: list[str], peer_keys: list[str], plan: Plan
) -> dict[str, Any]:
    """Rows and timelines for one store."""
    rows: list[Row] = []
    timelines: list[dict[str, Any]] = []
    store = target.store
    peers: list[Peer] = []
    for key in peers_for(store, peer_keys):
        made = _peer_or_error(key, store, peer_keys)
        if isinstance(made, str):
            rows += [
                not_applicable(store, s, key, f"not installed: {made}") for s in scenarios_ if s != "raw"
            ]
        else:
            peers.append(made)
    if "raw" in scenarios_:
        progress(f"{store} · raw · {plan.samples} samples")
        rows.append(await scenarios.raw(target, plan))
    for peer in peers:
        if "acquire" in scenarios_:
            progress(f"{store} · acquire · {peer.subject}")
            rows += await scenarios.acquire(target, peer, plan)
        if "renew" in scenarios_:
            progress(f"{store} · renew · {peer.subject}")
            rows.append(await scenarios.renew(target, peer, plan))
    if "handover" in scenarios_ or "failover" in scenarios_:
        for peer in peers:
            handover, failover, timeline = processes.handover_failover(target, peer, plan)
            rows += [r for r in (handover, failover) if r.scenario in scenarios_]
            timelines += timeline
    if "load" in scenarios_:
        for peer in peers:
            rows.append(await load.load(target, peer, plan))
    if "tick" in scenarios_:
        progress(f"{store} · tick · {plan.tick_window:g} s per subject")
        rows += await scenarios.tick(target, plan, [p.key for p in peers])
    # Scale last: it overloads the store on purpose.
    if "scale" in scenarios_:
        for peer in peers:
            rows.append(
                await scale.scale(target, plan) if peer.key == "leaderlib" else scale.peer_scale(target, peer)
            )
    raw = next((r for r in rows if r.scenario == "raw" and r.status == "ok" and r.samples), None)
    if raw is not None:
        raw_median = raw.stats()["median"]
        for row in rows:
            if (
                (row.scenario in LATENCY or row.subject == scenarios.RECORD_RUN)
                and row.samples
                and raw_median
            ):
                row.ratio_to_raw = round(float(row.stats()["median"] or 0) / float(raw_median), 2)
    return {"rows": rows, "timelines": timelines}


def environment(plan: Plan, quick: bool) -> dict[str, Any]:
    """Machine, versions and settings, for the report's header."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    from leaderlib.testing.servers import CLIENTGO_VERSION

    versions["client-go"] = CLIENTGO_VERSION
    versions["python"] = platform.python_version()
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
        "versions": versions,
        "settings": {"quick": quick, **plan.__dict__},
    }


async def run(
    targets: list[Target], scenarios_: list[str], peer_keys: list[str], plan: Plan, quick: bool
) -> dict[str, Any]:
    """The whole run: a report dict (see benchmarks/README.md)."""
    began = time.monotonic()
    report: dict[str, Any] = {
        "schema": 1,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **environment(plan, quick),
        "stores": {t.store: t.url.split("?")[0] for t in targets},
        "scenarios": [s for s in SCENARIOS if s in scenarios_],
        "rows": [],
        "timelines": [],
    }
    for target in targets:
        result = await run_target(target, scenarios_, peer_keys, plan)
        report["rows"] += result["rows"]
        report["timelines"] += result["timelines"]
    report["duration_s"] = round(time.monotonic() - began, 1)
    return report


def run_sync(
    targets: list[Target], scenarios_: list[str], peer_keys: list[str], plan: Plan, quick: bool
) -> dict[str, Any]:
    return asyncio.run(run(targets, scenarios_, peer_keys, plan, quick))

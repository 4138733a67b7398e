"""Scale: E elections in one process on ONE backend object, all led by this process.

For each E: every elector starts at once; when all lead (or ``scale_ramp``
passes) a window begins, over which it counts missed renewals (a term lost,
or two renewals further apart than ``renew_interval + MISSED_SLACK``), the
process's CPU (percent of one core) and the share of it the garbage
collector took, RSS, TCP connections to the store and threads. Timing is
leaderlib's defaults (lease 10 s, renew every 2 s).

One point on its own, against a real server started for it (a full-length
window, a profile under py-spy)::

    python -m leaderlib._bench.scale redis 10000 --window 120
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from leaderlib import LeaderElector, backend_from_url

from .model import Row, progress
from .peers import Peer
from .peers.leaderlib import ObservedBackend
from .plan import Plan
from .stores import Target

MISSED_SLACK = 0.5

#: The garbage collector's thresholds docs/operations.md recommends for thousands of
#: elections in one process: with Python's (700, 10, 10), objects alive across a
#: store round trip are promoted to the oldest generation, whose full collections
#: then walk every election's objects often enough to stall renewals.
MANY_ELECTIONS_GC = (100_000, 50, 1_000)


def _config() -> Any:
    from leaderlib import ElectionConfig

    return ElectionConfig(release_on_shutdown=False)


def _resources(target: Target) -> dict[str, float]:
    import psutil

    process = psutil.Process()
    port = target.hostport[1] if target.store in ("redis", "etcd") else None
    connections = process.net_connections(kind="tcp")
    if target.store == "kubernetes":
        from urllib.parse import urlsplit

        import yaml

        server = yaml.safe_load(Path(target.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
        port = urlsplit(server).port
    if port is not None:
        count = sum(1 for c in connections if c.raddr and c.raddr.port == port)
    else:
        count = sum(1 for f in process.open_files() if f.path.startswith(target.sqlite_path))
    cpu = process.cpu_times()
    return {
        "cpu_s": cpu.user + cpu.system,
        "rss_mb": process.memory_info().rss / 2**20,
        "connections": count,
        "threads": threading.active_count(),
        "os_threads": process.num_threads(),
    }


class _GarbageCollection:
    """Seconds the garbage collector has run since :meth:`start` (gc callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def __enter__(self) -> _GarbageCollection:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began


async def one_scale(
    target: Target,
    elections: int,
    plan: Plan,
    row_note: list[str],
    gc_thresholds: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """One point; with ``gc_thresholds``, run under those (restored afterwards)."""
    default = gc.get_threshold()
    if gc_thresholds is not None:
        gc.set_threshold(*gc_thresholds)
    try:
        with _GarbageCollection() as collector:
            point = await _one_scale(target, elections, plan, row_note, collector)
    finally:
        gc.set_threshold(*default)
    return {
        **point,
        "gc": ",".join(map(str, gc_thresholds or default)),
        "gc_tuned": gc_thresholds is not None,
    }


async def _one_scale(
    target: Target, elections: int, plan: Plan, row_note: list[str], collector: _GarbageCollection
) -> dict[str, Any]:
    config = _config()
    backend = ObservedBackend(backend_from_url(target.url))
    lost: list[str] = []

    async def stopped(leadership: Any) -> None:
        if not stopping:
            lost.append(leadership.election)

    stopping = False
    prefix = f"bench-scale-{uuid.uuid4().hex[:6]}"
    electors = [
        LeaderElector(f"{prefix}-{i}", backend, config, on_stopped_leading=stopped) for i in range(elections)
    ]
    tasks = [asyncio.create_task(e.run()) for e in electors]
    try:
        began = time.monotonic()
        while sum(e.is_leader for e in electors) < elections and time.monotonic() - began < plan.scale_ramp:
            await asyncio.sleep(0.05)
        ramp = time.monotonic() - began
        leading_at_start = sum(e.is_leader for e in electors)
        before = _resources(target)
        window_start, collected = time.monotonic(), collector.seconds
        await asyncio.sleep(plan.scale_window)
        window_end, collected = time.monotonic(), collector.seconds - collected
        after = _resources(target)
        missed = len(lost)
        for times in backend.renewals.values():
            inside = [window_start] + [t for t in times if window_start <= t <= window_end] + [window_end]
            missed += sum(
                1 for a, b in itertools.pairwise(inside) if b - a > config.renew_interval + MISSED_SLACK
            )
        return {
            "elections": elections,
            "ramp_s": round(ramp, 2),
            "leading": leading_at_start,
            "missed_renewals": missed,
            "not_leading": elections - leading_at_start,
            "lost_terms": len(lost),
            "cpu_percent": round(100 * (after["cpu_s"] - before["cpu_s"]) / (window_end - window_start), 1),
            "gc_percent": round(100 * collected / (window_end - window_start), 1),
            "rss_mb": round(after["rss_mb"], 1),
            "connections": after["connections"],
            "threads": after["threads"],
            "os_threads": after["os_threads"],
        }
    finally:
        stopping = True
        for elector in electors:
            elector.stop()
        # asyncio.wait, not wait_for: a task that does not end in time is abandoned
        # (cancelled, never awaited), so the teardown is bounded whatever the store does.
        _, pending = await asyncio.wait(tasks, timeout=30.0)
        for task in pending:
            task.cancel()
        closing = asyncio.ensure_future(backend.aclose())
        await asyncio.wait({closing}, timeout=15.0)
        if pending or not closing.done():
            row_note.append(f"E={elections}: {len(pending)} electors and the backend did not stop in time")


async def scale(target: Target, plan: Plan) -> Row:
    row = Row(
        target.store, "scale", "leaderlib", unit="elections",
        settings="leaderlib defaults (lease 10 s, renew_interval 2 s); one backend object",
    )  # fmt: skip
    notes: list[str] = []
    row.extra["pid"] = os.getpid()
    # Every E under Python's default GC thresholds; the largest again under the ones
    # docs/operations.md recommends for thousands of elections.
    runs: list[tuple[int, tuple[int, int, int] | None]] = [(e, None) for e in plan.elections]
    runs.append((max(plan.elections), MANY_ELECTIONS_GC))
    for elections, gc_thresholds in runs:
        tuned = f" (gc thresholds {gc_thresholds})" if gc_thresholds else ""
        progress(f"{target.store} · scale · {elections} elections in one process{tuned}")
        try:
            row.points.append(await one_scale(target, elections, plan, notes, gc_thresholds))
            if notes:
                row.extra["note"] = "; ".join(notes)
        except Exception as exc:
            row.status, row.why = "error", f"E={elections}: {type(exc).__name__}: {exc}"[:300]
            break
    return row


def peer_scale(target: Target, peer: Peer) -> Row:
    """The peers' scale rows: n/a, with why."""
    why = peer.unsupported.get("scale", "not measured")
    return Row(target.store, "scale", peer.subject, settings=peer.settings, status="n/a", why=why)


def main(argv: list[str] | None = None) -> None:
    """One scale point against a real server of the store (see the module docstring)."""
    import argparse
    import dataclasses
    import json
    import logging

    from .plan import FULL
    from .stores import real_servers

    parser = argparse.ArgumentParser(prog="python -m leaderlib._bench.scale")
    parser.add_argument("store", choices=("sqlite", "redis", "etcd", "kubernetes"))
    parser.add_argument("elections", type=int)
    parser.add_argument("--window", type=float, default=FULL.scale_window, help="seconds measured")
    parser.add_argument("--ramp", type=float, default=FULL.scale_ramp, help="at most this long to all lead")
    parser.add_argument(
        "--gc-threshold",
        metavar="G0,G1,G2",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        help=f"run under these gc.set_threshold values (recommended: {','.join(map(str, MANY_ELECTIONS_GC))})",
    )
    args = parser.parse_args(argv)
    logging.getLogger("leaderlib").setLevel(logging.ERROR)
    plan = dataclasses.replace(
        FULL, elections=(args.elections,), scale_window=args.window, scale_ramp=args.ramp
    )
    with real_servers() as targets:
        target = next(t for t in targets if t.store == args.store)
        notes: list[str] = []
        point = asyncio.run(one_scale(target, args.elections, plan, notes, args.gc_threshold))
    print(json.dumps({"store": args.store, **point, "notes": notes}))  # noqa: T201


if __name__ == "__main__":
    main()

"""The latency scenarios made in one process: raw, acquire, renew, tick."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from .model import Row, not_applicable
from .peers import Peer
from .peers.leaderlib import LeaderlibPeer, bench_config
from .plan import Plan
from .raw import DESCRIPTION, raw_round_trip
from .stores import RequestCounter, Target

WARMUP = 5

#: The tick scenario's direct measurement of a run record's write.
RECORD_RUN = "leaderlib record_run"
#: A job's ``misfire_grace`` in the tick scenario: its value does not matter, as no tick is missed.
TICK_GRACE = 5.0
#: ``record_run`` is measured on a lease this long, so that no renewal comes between the writes.
RECORD_RUN_LEASE = 60.0
#: ``last_runs`` reads timed after the writes (a term makes one).
LAST_RUNS_READS = 5


async def measured(row: Row, make: Callable[[], Awaitable[list[float]]]) -> Row:
    """Fill ``row`` with ``make()``'s samples (seconds, stored as ms); an exception becomes an error row."""
    try:
        row.samples = [s * 1000 for s in await make()]
    except Exception as exc:
        row.status, row.why = "error", f"{type(exc).__name__}: {exc}"[:300]
    return row


async def raw(target: Target, plan: Plan) -> Row:
    row = Row(target.store, "raw", "raw", settings=DESCRIPTION[target.store])

    async def make() -> list[float]:
        operation, close = await raw_round_trip(target)
        try:
            for _ in range(WARMUP):
                await operation()
            samples = []
            for _ in range(plan.samples):
                started = time.perf_counter()
                await operation()
                samples.append(time.perf_counter() - started)
            return samples
        finally:
            await close()

    return await measured(row, make)


async def acquire(target: Target, peer: Peer, plan: Plan) -> list[Row]:
    """Elector start to leading (every subject); leaderlib's try_acquire alone besides."""
    if "acquire" in peer.unsupported:
        return [not_applicable(target.store, "acquire", peer.subject, peer.unsupported["acquire"])]
    spawns = peer.key.startswith(("client-go", "kubernetes"))
    n = plan.spawn_samples if spawns else plan.samples
    row = Row(target.store, "acquire", peer.subject, settings=peer.settings)
    if peer.key.startswith("client-go"):
        row.extra["note"] = "process start to started_leading (includes the Go process's start)"
    rows = [await measured(row, lambda: peer.acquire_samples(target, n))]
    if isinstance(peer, LeaderlibPeer):
        alone = Row(target.store, "acquire", "leaderlib try_acquire", settings="Backend.try_acquire alone")
        rows.append(await measured(alone, lambda: peer.try_acquire_samples(target, plan.samples)))
    return rows


async def renew(target: Target, peer: Peer, plan: Plan) -> Row:
    if "renew" in peer.unsupported:
        return not_applicable(target.store, "renew", peer.subject, peer.unsupported["renew"], peer.settings)
    row = Row(target.store, "renew", peer.subject, settings=peer.settings)
    n = plan.samples if not peer.key.startswith("kubernetes") else max(plan.spawn_samples, plan.samples // 4)
    return await measured(row, lambda: peer.renew_samples(target, n))


# --------------------------------------------------------------------------- tick


async def _counted(target: Target, window: float, body: Callable[[], Awaitable[list[float]]]) -> Row:
    """Run ``body`` (which returns lateness samples, s) and count the store's requests meanwhile."""
    row = Row(target.store, "tick", "")
    try:
        with RequestCounter(target) as counter:
            before = counter.read()
            lateness = await body()
            after = counter.read()
        row.samples = [s * 1000 for s in lateness]
        row.extra = {
            "runs": len(lateness),
            "requests_per_run": round((after - before) / max(1, len(lateness)), 3),
            "counted_by": counter.kind,
            "window_s": window,
        }
    except Exception as exc:
        row.status, row.why = "error", f"{type(exc).__name__}: {exc}"[:300]
    return row


async def tick(target: Target, plan: Plan, peers: list[str]) -> list[Row]:
    """Lateness of each job run behind its tick, and the store requests per run; and the
    latency of the run record a ``misfire_grace`` job writes twice per run."""
    interval, window = plan.tick_interval, plan.tick_window
    records = await record_run(target, plan)
    rows = []
    for mode, grace in (("leader", None), ("leader", TICK_GRACE), ("per-job", None)):
        subject = f"leaderlib {mode} mode" + (", misfire_grace" if grace else "")
        settings = f"every={interval:g} s async job; {mode} mode" + (
            f"; misfire_grace={grace:g}" if grace else ""
        )
        if grace and records.status == "n/a":
            row = not_applicable(target.store, "tick", subject, records.why, settings)
        else:

            def ticks(mode: str = mode, grace: float | None = grace) -> Awaitable[list[float]]:
                return _service_ticks(target, mode, interval, window, grace)

            row = await _counted(target, window, ticks)
            row.subject, row.settings = subject, settings
        rows += [row, records] if grace else [row]
    row = await _counted(target, window, lambda: _schedule_ticks(None, interval, window))
    row.subject, row.settings = (
        "schedule (no election)",
        f"schedule.every({interval:g}).seconds, idle_seconds loop",
    )
    rows.append(row)
    if target.store == "redis" and "redis-lock" in peers:
        row = await _counted(target, window, lambda: _schedule_ticks(target, interval, window))
        row.subject = "redis-py Lock per run"
        row.settings = "schedule loop; each run acquire(blocking=False) + release (the origin's decorator)"
        rows.append(row)
    return rows


async def record_run(target: Target, plan: Plan) -> Row:
    """``Lease.record_run`` alone: each run of a ``misfire_grace`` job makes two (its start, its end).

    n/a (why) while the store's backend has no ``record_run`` (NotImplementedError).
    ``extra.cost_per_run_ms`` is twice the median; ``ratio_to_raw`` is set by the runner.
    """
    row = Row(
        target.store, "tick", RECORD_RUN,
        settings=f"Lease.record_run alone, a run's start then its end, on a held lease "
        f"({RECORD_RUN_LEASE:g} s: no renewal between); then {LAST_RUNS_READS} last_runs reads",
    )  # fmt: skip
    try:
        writes, reads = await _record_run_samples(target, plan.samples)
        row.samples = [s * 1000 for s in writes]
    except NotImplementedError as exc:
        row.status, row.why = "n/a", f"the {target.store} backend has no record_run yet ({exc})"[:300]
        return row
    except Exception as exc:
        row.status, row.why = "error", f"{type(exc).__name__}: {exc}"[:300]
        return row
    median = float(row.stats()["median"] or 0)
    row.extra = {
        "writes_per_run": 2,
        "cost_per_run_ms": round(2 * median, 3),
        "last_runs_ms": Row(target.store, "tick", "last_runs", samples=[s * 1000 for s in reads]).stats(),
    }
    return row


async def _record_run_samples(target: Target, n: int) -> tuple[list[float], list[float]]:
    """Seconds per ``record_run`` (alternately a run's start and its end), then per
    ``last_runs`` (which must show the last write)."""
    from leaderlib import backend_from_url
    from leaderlib.backends import JobRun

    backend = backend_from_url(target.url)
    try:
        lease = backend.lease(f"bench-runs-{uuid.uuid4().hex[:6]}")
        if getattr(lease, "record_run", None) is None:
            raise NotImplementedError(f"{type(lease).__name__} has no record_run")
        acquisition = await lease.try_acquire("bench", RECORD_RUN_LEASE, None)
        record = acquisition.record
        if not acquisition.acquired or record is None:
            raise RuntimeError(f"try_acquire on a fresh election did not acquire: {acquisition}")
        first_tick = dt.datetime.now(dt.UTC).replace(microsecond=0)
        samples: list[float] = []
        reads: list[float] = []
        run: JobRun | None = None
        for i in range(WARMUP + n):
            tick = first_tick + dt.timedelta(seconds=i // 2)
            run = JobRun(
                job="bench",
                tick=tick,
                fencing_token=record.fencing_token,
                identity=record.holder,
                started_at=dt.datetime.now(dt.UTC),
            )
            if i % 2:
                run = dataclasses.replace(run, outcome="ok", duration=0.001)
            started = time.perf_counter()
            await lease.record_run(run)
            if i >= WARMUP:
                samples.append(time.perf_counter() - started)
        for _ in range(LAST_RUNS_READS):
            started = time.perf_counter()
            runs = await lease.last_runs()
            reads.append(time.perf_counter() - started)
            got = runs.get("bench")
            if run is None or got is None or (got.tick, got.outcome) != (run.tick, run.outcome):
                raise RuntimeError(f"last_runs shows {got}, not the last run written {run}")
        await lease.release(record)
    finally:
        await backend.aclose()
    return samples, reads


async def _service_ticks(
    target: Target, mode: str, interval: float, window: float, grace: float | None
) -> list[float]:
    from leaderlib import JobContext, Service

    lateness: list[float] = []
    service = Service(
        f"bench-tick-{uuid.uuid4().hex[:6]}", backend=target.url, config=bench_config(), mode=mode
    )

    @service.job(every=interval, misfire_grace=grace)
    async def job(ctx: JobContext) -> None:
        lateness.append((dt.datetime.now(dt.UTC) - ctx.scheduled_at).total_seconds())

    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + window + 10.0
    while not lateness and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.01)  # until it leads and runs
    lateness.clear()
    await asyncio.sleep(window)
    samples = list(lateness)
    service.stop()
    await asyncio.wait_for(task, 15.0)
    return samples


async def _schedule_ticks(target: Target | None, interval: float, window: float) -> list[float]:
    import schedule

    scheduler = schedule.Scheduler()
    lateness: list[float] = []
    lock_client: Any = None
    if target is not None:
        import redis

        host, port = target.hostport
        lock_client = redis.Redis(host=host, port=port)
        lock_client.ping()

    def run() -> None:
        due = job.next_run
        if lock_client is not None:
            lock = lock_client.lock("bench-tick-lock", timeout=10)
            if not lock.acquire(blocking=False):
                return
            lateness.append((dt.datetime.now() - due).total_seconds())
            lock.release()
        else:
            lateness.append((dt.datetime.now() - due).total_seconds())

    job = scheduler.every(interval).seconds.do(run)  # type: ignore[arg-type]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            scheduler.run_pending()
            idle = scheduler.idle_seconds
            stop.wait(max(0.0, min(idle if idle is not None else interval, interval)))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    await asyncio.sleep(window)
    stop.set()
    await asyncio.to_thread(thread.join, 5.0)
    if lock_client is not None:
        lock_client.close()
    return lateness

"""Acquisition and graceful-handover latency of each backend, next to its raw round trip.

Absolute times drift on shared machines, so every figure is reported with the
ratio to the same store's raw round trip (one request with the same client,
no leaderlib), measured in the same run:

    python benchmarks/latency.py --servers                # start real servers, all backends
    python benchmarks/latency.py --backend redis://127.0.0.1:6379/0 --samples 500

* ``acquire``: one ``try_acquire`` on a fresh election (uncontended), as an
  elector's first attempt makes it.
* ``handover``: a leader elector stops gracefully (releases); time until the
  watching follower elector leads.

etcd started by ``--servers`` keeps fsync on, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from leaderlib import ElectionConfig, LeaderElector, backend_from_url

HERE = Path(__file__).resolve().parent


def _raw_module(scheme: str) -> Any:
    name = {"rediss": "redis", "etcds": "etcd"}.get(scheme, scheme)
    path = HERE / f"raw_{name}.py"
    spec = importlib.util.spec_from_file_location(f"raw_{name}", path)
    if spec is None or spec.loader is None or not path.exists():
        raise SystemExit(f"no raw round trip for {scheme}:// ({path} is missing)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered), 3), "p99_ms": round(p99, 3), "n": len(ordered)}


async def timed(operation: Callable[[], Awaitable[Any]], samples: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        await operation()
    result = []
    for _ in range(samples):
        start = time.perf_counter()
        await operation()
        result.append((time.perf_counter() - start) * 1000)
    return result


async def measure(url: str, samples: int, handovers: int) -> dict[str, Any]:
    scheme = url.split("://", 1)[0]
    raw_op, raw_close = await _raw_module(scheme).raw_round_trip(url)
    try:
        raw = await timed(raw_op, samples)
    finally:
        await raw_close()

    backend = backend_from_url(url)
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    counter = 0
    acquired_records = []

    async def acquire() -> None:
        nonlocal counter
        counter += 1
        record = (await backend.try_acquire(f"{prefix}-{counter}", "bench", 10.0, None)).record
        assert record is not None and record.holder == "bench"
        acquired_records.append(record)

    try:
        acquisition = await timed(acquire, samples)
        for record in acquired_records:
            await backend.release(record)
    finally:
        await backend.aclose()

    handover = [await one_handover(url) for _ in range(handovers)]
    result = {
        "backend": url,
        "raw": percentiles(raw),
        "acquire": percentiles(acquisition),
        "handover": percentiles(handover),
    }
    result["acquire_to_raw_median"] = round(result["acquire"]["median_ms"] / result["raw"]["median_ms"], 2)
    return result


async def one_handover(url: str) -> float:
    """Leader stops gracefully; milliseconds until the follower leads."""
    election = f"handover-{uuid.uuid4().hex[:8]}"
    config = {"lease_duration": 10.0, "renew_deadline": 7.0, "renew_interval": 2.0, "retry_period": 30.0}
    backends = [backend_from_url(url), backend_from_url(url)]
    leader = LeaderElector(election, backends[0], ElectionConfig(identity="leader", **config))
    follower = LeaderElector(election, backends[1], ElectionConfig(identity="follower", **config))
    leader_task = asyncio.create_task(leader.run())
    while not leader.is_leader:
        await asyncio.sleep(0.001)
    follower_task = asyncio.create_task(follower.run())
    while follower.leader != "leader":
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.2)  # the follower now waits on its watch
    started = time.perf_counter()
    leader.stop()
    while not follower.is_leader:
        await asyncio.sleep(0.0002)
    elapsed = (time.perf_counter() - started) * 1000
    follower.stop()
    await asyncio.gather(leader_task, follower_task)
    for backend in backends:
        await backend.aclose()
    return elapsed


@contextlib.contextmanager
def real_servers(scratch: Path) -> Iterator[list[str]]:
    """Start Redis, etcd (fsync on) and kube-apiserver; yield their backend URLs."""
    from leaderlib.testing.servers import EtcdServer, KubeAPIServer, RedisServer

    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        etcd = stack.enter_context(EtcdServer(unsafe_no_fsync=False))
        kube = stack.enter_context(KubeAPIServer())
        yield [
            f"sqlite:///{(scratch / 'bench.sqlite3').as_posix().lstrip('/')}",
            redis.url,
            etcd.url,
            f"kubernetes://{kube.namespace}?kubeconfig={kube.kubeconfig}",
        ]


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | raw median / p99 (ms) | acquire median / p99 (ms) | acquire / raw | handover median / p99 (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        scheme = r["backend"].split("://", 1)[0]
        lines.append(
            f"| {scheme} | {r['raw']['median_ms']} / {r['raw']['p99_ms']} "
            f"| {r['acquire']['median_ms']} / {r['acquire']['p99_ms']} | {r['acquire_to_raw_median']}x "
            f"| {r['handover']['median_ms']} / {r['handover']['p99_ms']} |"
        )
    return "\n".join(lines)


async def run(urls: list[str], samples: int, handovers: int) -> list[dict[str, Any]]:
    results = []
    for url in urls:
        print(f"measuring {url} ...", file=sys.stderr)
        results.append(await measure(url, samples, handovers))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", action="append", default=[], metavar="URL", help="repeatable")
    parser.add_argument("--servers", action="store_true", help="start real servers and measure every backend")
    parser.add_argument("--samples", type=int, default=300, help="samples per latency (default 300)")
    parser.add_argument(
        "--handovers", type=int, default=30, help="graceful handovers per backend (default 30)"
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    if not args.backend and not args.servers:
        parser.error("give --backend URL (repeatable) or --servers")
    with tempfile.TemporaryDirectory(prefix="leaderlib-bench-") as scratch, contextlib.ExitStack() as stack:
        urls = list(args.backend)
        if args.servers:
            urls += stack.enter_context(real_servers(Path(scratch)))
        results = asyncio.run(run(urls, args.samples, args.handovers))
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

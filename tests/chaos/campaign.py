"""A seeded chaos campaign per store: replicas, a schedule of faults, the ledger, the account.

``python -m tests.chaos.campaign --faults 300 --seed 7 --out chaos-report``
(``make chaos``) runs every store, one after another unless ``--parallel``,
and writes the report; the seed and each store's schedule are printed first,
so ``CHAOS_SEED=7`` replays the same faults with the same parameters (which
replica leads when a fault comes is the run's own doing).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from leaderlib.testing.toxiproxy import Toxiproxy, ToxiproxyServer

from .check import SAFETY, check
from .faults import HEAL_BOUND, Fault, Plan, Timing, draw, inject
from .ledger import LedgerServer, boottime
from .replicas import Replica, build_shim
from .stores import STORES, Store

#: The campaign's timing: short leases so that hundreds of faults fit in an hour.
LEASE = 2.0
SETTINGS = {
    "LEADERLIB_LEASE_DURATION": str(LEASE),
    "LEADERLIB_RENEW_DEADLINE": "1.0",
    "LEADERLIB_RENEW_INTERVAL": "0.25",
    "LEADERLIB_RETRY_PERIOD": "0.25",
}
RENEW_DEADLINE = 1.0
INTERVAL = 0.3
REPLICAS = 3
#: Seconds beyond its plan after which a fault that has not returned is a hung harness.
HANG_LIMIT = 180.0

_T = TypeVar("_T")


class HarnessHang(RuntimeError):
    """A step of the harness did not return in time (the store's campaign is aborted)."""


def within(limit: float, what: str, call: Callable[[], _T]) -> _T:
    """``call()``, or HarnessHang with its thread's stack if it has not returned after ``limit`` s.

    The call runs in a daemon thread, so a hung one is left behind rather
    than holding the campaign (and the process's exit) with it.
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()
    thread.join(limit)
    if not outcome:
        frame = sys._current_frames().get(thread.ident or 0)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(gone)"
        raise HarnessHang(f"{what} has not returned after {limit:.0f} s; it is at:\n{stack}")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


@dataclasses.dataclass
class StoreRun:
    store: str
    seed: str
    plans: list[Plan]
    faults: list[Fault]
    account: dict[str, Any]
    seconds: float
    lease: float = LEASE
    span: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """(boot start, boot end, wall start, wall end): with the ledger, enough to check again."""

    @property
    def stopped(self) -> bool:
        """Interrupted before its schedule's end (what ran is still judged and reported)."""
        return len(self.faults) < len(self.plans)

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "seed": self.seed,
            "seconds": self.seconds,
            "lease": self.lease,
            "span": self.span,
            "planned": len(self.plans),
            "faults": [f.as_dict() for f in self.faults],
            **self.account,
        }


def schedule(
    seed: str, store: Store, count: int, timing: Timing, kinds: list[str] | None = None
) -> list[Plan]:
    rng = random.Random(f"{seed}:{store.name}")
    return [draw(rng, store, timing, kinds) for _ in range(count)]


def _leader(ledger: LedgerServer, replicas: list[Replica]) -> Replica | None:
    by_pid = {r.pid: r for r in replicas if r.alive() and not r.stopped}
    held = [(token, pid) for pid, (_, token) in list(ledger.open_terms.items()) if pid in by_pid]
    return by_pid[max(held)[1]] if held else None


def _wait_leader(ledger: LedgerServer, replicas: list[Replica], timeout: float) -> Replica | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (leader := _leader(ledger, replicas)) is not None:
            return leader
        time.sleep(0.05)
    return None


def run_store(
    store: Store,
    seed: str,
    count: int,
    directory: Path,
    toxiproxy: Toxiproxy | None,
    *,
    max_outage: float = 40.0,
    kinds: list[str] | None = None,
    say: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> StoreRun:
    """Run ``count`` faults on ``store`` (started here, closed by the caller), drawn among
    ``kinds`` if given (a different schedule from the same seed)."""
    timing = Timing(LEASE, RENEW_DEADLINE, max_outage)
    plans = schedule(seed, store, count, timing, kinds)
    say(f"[{store.name}] seed {seed}: " + ", ".join(p.kind for p in plans))
    directory.mkdir(parents=True, exist_ok=True)
    ledger = LedgerServer(directory)
    store.start(toxiproxy, REPLICAS)
    election = f"chaos-{store.name}-{os.getpid()}-{int(time.time())}"
    env = {
        **SETTINGS,
        "LEADERLIB_ELECTION": election,
        "CHAOS_LEDGER": ledger.address,
        "CHAOS_INTERVAL": str(INTERVAL),
    }
    shim = build_shim()
    replicas = [Replica(i, store.url(i), directory, env, shim) for i in range(REPLICAS)]
    began = time.monotonic()
    boot_start, wall_start = boottime(), time.time()
    faults: list[Fault] = []
    try:
        for replica in replicas:
            replica.spawn()
        if _wait_leader(ledger, replicas, 60) is None:
            raise RuntimeError(f"{store.name}: no first leader within 60 s; logs in {directory}")
        time.sleep(1.0)
        for n, plan in enumerate(plans, 1):
            if stop is not None and stop.is_set():
                say(f"[{store.name}] stopped before fault {n}")
                break
            leader = _wait_leader(ledger, replicas, 60)
            if leader is None:
                say(f"[{store.name}] no leader for 60 s before fault {n}")
                leader = next(r for r in replicas if r.alive())
            fault = within(
                plan.duration + HANG_LIMIT,
                f"[{store.name}] fault {n} {plan.kind}",
                lambda: inject(n, plan, store, replicas, leader, ledger),  # noqa: B023 - called at once
            )
            faults.append(fault)
            say(f"[{store.name}] {n}/{count} {fault.kind} {fault.target}: {fault.detail}")
            # A killed replica comes back as a new process, as a supervisor would restart it.
            time.sleep(0.5)
            for replica in replicas:
                if not replica.alive():
                    replica.spawn()
            _wait_leader(ledger, replicas, 60)
            time.sleep(random.Random(f"{seed}:{store.name}:{n}").uniform(0.3, 1.0))
        time.sleep(LEASE)
    finally:
        boot_end, wall_end = boottime(), time.time()
        for replica in replicas:
            replica.kill()
        time.sleep(0.2)  # the ledger takes the last datagrams
        attempts, events = ledger.rows("attempts"), ledger.rows("events")
        ledger.close()
    span = (boot_start, boot_end, wall_start, wall_end)
    account = check(attempts, events, faults, renew_deadline=RENEW_DEADLINE, interval=INTERVAL, span=span)
    return StoreRun(store.name, seed, plans, faults, account, time.monotonic() - began, span=span)


def run_campaign(
    stores: list[str],
    seed: str,
    count: int,
    out: Path,
    *,
    parallel: int = 1,
    max_outage: float = 40.0,
    kinds: list[str] | None = None,
) -> list[StoreRun]:
    """Every store's campaign with servers of its own; the report is written to ``out``."""
    from .report import write_report

    work = Path(tempfile.mkdtemp(prefix="leaderlib-chaos-"))
    print(f"chaos campaign: CHAOS_SEED={seed} CHAOS_FAULTS={count} stores={','.join(stores)} files in {work}")
    stop = threading.Event()
    with ToxiproxyServer() as toxi:

        def one(name: str) -> StoreRun | None:
            store = STORES[name](work / name)
            try:
                return run_store(
                    store,
                    seed,
                    count,
                    work / name,
                    toxi.client,
                    max_outage=max_outage,
                    kinds=kinds,
                    stop=stop,
                )
            except Exception as exc:  # one store's harness failure must not lose the others' report
                print(f"[{name}] campaign aborted: {exc!r}; files in {work / name}")
                return None
            finally:
                store.close()

        results: dict[str, StoreRun | None] = {}
        with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
            futures = {pool.submit(one, name): name for name in stores}
            pending = set(futures)
            while pending:
                try:
                    finished, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                except KeyboardInterrupt:
                    # Only this thread hears it: the stores' threads stop at their next
                    # fault, and what ran is judged and reported all the same.
                    print("interrupted: each running store stops after its current fault")
                    stop.set()
                    for future in pending:
                        future.cancel()
                    continue
                for future in finished:
                    results[futures[future]] = None if future.cancelled() else future.result()
                # After every store, so a campaign that dies later keeps what it had.
                write_report([r for name in stores if (r := results.get(name)) is not None], out)
    runs = [r for name in stores if (r := results.get(name)) is not None]
    aborted = [name for name in stores if results.get(name) is None]
    if aborted:
        print(f"ABORTED or not run: {aborted}")
    if stop.is_set():
        raise KeyboardInterrupt
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faults", type=int, default=int(os.environ.get("CHAOS_FAULTS", "300")))
    parser.add_argument(
        "--seed", default=os.environ.get("CHAOS_SEED") or str(random.SystemRandom().randrange(10**6))
    )
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--parallel", type=int, default=int(os.environ.get("CHAOS_PARALLEL", "1")))
    parser.add_argument("--max-outage", type=float, default=40.0)
    parser.add_argument("--kinds", help="only these fault kinds (comma-separated), e.g. to chase one")
    parser.add_argument("--out", type=Path, default=Path("chaos-report"))
    args = parser.parse_args(argv)
    # Ctrl-C, or SIGTERM (a CI timeout; an ignored SIGINT in a background job): stop
    # cleanly, so no server or replica outlives the campaign.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        runs = run_campaign(
            args.stores.split(","),
            args.seed,
            args.faults,
            args.out,
            parallel=args.parallel,
            max_outage=args.max_outage,
            kinds=args.kinds.split(",") if args.kinds else None,
        )
    except KeyboardInterrupt:
        print(f"stopped; the report of what ran is in {args.out}/. CHAOS_SEED={args.seed}")
        return 130
    failed = [r.store for r in runs if r.account["problems"] or not verdict(r)[0]]
    failed += [s for s in args.stores.split(",") if s not in {r.store for r in runs}]
    print(json.dumps({r.store: r.account["totals"] for r in runs}))
    print(
        f"report in {args.out}/; CHAOS_SEED={args.seed}; " + (f"FAILED: {failed}" if failed else "all passed")
    )
    return 1 if failed else 0


def verdict(run: StoreRun) -> tuple[bool, list[str]]:
    """Whether a store's run meets the bar, and what broke it."""
    broken = [f"{k}={v}" for k, v in run.account["totals"].items() if k in SAFETY and v]
    late = [
        f"fault {f.n} {f.kind}: {run.account['gaps'][f.n]:.2f}s without a leader"
        for f in run.faults
        if f.majority and run.account["gaps"][f.n] > run.lease + 1
    ]
    slow = [
        f"fault {f.n} {f.kind}: healed {f.overrun:.1f}s late" for f in run.faults if f.overrun > HEAL_BOUND
    ]
    stopped = [f"stopped after {len(run.faults)} of {len(run.plans)} faults"] if run.stopped else []
    return not (broken or late or slow or stopped), broken + late + slow + stopped


if __name__ == "__main__":
    sys.exit(main())

"""The faults of the campaign, drawn from a seeded generator and injected one at a time.

A :class:`Plan` is everything random about one fault, drawn before the
campaign starts (so a seed names the whole schedule); :func:`inject` applies
it to whichever replica leads (or follows) at that moment and blocks until
the fault has healed. Each returns a :class:`Fault`: what was done, to whom,
and when on ``CLOCK_BOOTTIME`` it began and healed; ``majority`` says whether
a healthy majority (store and all other candidates) remained meanwhile, in
which case a new leader is due within lease duration + 1 s of the start;
otherwise it is measured from the heal. Every fault must heal within
:data:`HEAL_BOUND` seconds beyond its planned duration.
"""

from __future__ import annotations

import dataclasses
import random
import signal
import time
from typing import Any

from leaderlib.testing.toxiproxy import Proxy, ToxiproxyError

from .ledger import LedgerServer, boottime
from .replicas import Replica
from .stores import SentinelStore, Store

#: Faults every store gets: process and clock faults of one candidate.
PROCESS_FAULTS = ["kill", "pause", "suspend", "wall_step_leader", "wall_step_follower"]
#: Faults through each candidate's own proxies (or all of them: slow_store).
NETWORK_FAULTS = ["delay", "black_hole", "one_way_deliver", "one_way_reset", "reset", "slow_store"]
#: Seconds a fault may take to heal beyond its planned duration (a server's start, a
#: Sentinel failover, a Toxiproxy call that hung and fell back to a reset).
HEAL_BOUND = 20.0


@dataclasses.dataclass(frozen=True)
class Timing:
    lease: float
    renew_deadline: float
    max_outage: float
    """The longest store outage to draw (seconds)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    kind: str
    duration: float
    amount: float = 0.0
    """Wall steps: seconds (negative: back). Delays: seconds per answer."""
    pick: float = 0.0
    """Chooses among followers, members... the same way on a replay."""


@dataclasses.dataclass
class Fault:
    n: int
    store: str
    kind: str
    target: str
    pid: int | None
    """The targeted replica process (None: the store)."""
    start: float
    healed: float
    majority: bool
    detail: str
    planned: float = 0.0
    """The plan's duration: the fault should heal this long after its start."""

    @property
    def overrun(self) -> float:
        """Seconds it took to heal beyond its planned duration."""
        return max(0.0, self.healed - self.start - self.planned)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"overrun": self.overrun}


def catalog(store: Store) -> list[str]:
    return PROCESS_FAULTS + (NETWORK_FAULTS if store.network else []) + store.restarts()


def draw(rng: random.Random, store: Store, timing: Timing, kinds: list[str] | None = None) -> Plan:
    """One fault's every random choice (among ``kinds`` of the store's catalog, if given)."""
    kind = rng.choice([k for k in catalog(store) if kinds is None or k in kinds])
    lease = timing.lease
    if kind in ("pause", "suspend"):
        # Longer than the lease: someone else must have taken over when it wakes.
        return Plan(kind, lease + rng.uniform(0.5, 2.0), pick=rng.random())
    if kind.startswith("wall_step"):
        size = rng.choice([2.0, 7.0, 60.0, 600.0, 3600.0, 4 * 3600.0]) * rng.uniform(0.8, 1.2)
        return Plan(kind, rng.uniform(2.0, 4.0), amount=size * rng.choice([-1, 1]), pick=rng.random())
    if kind == "delay":
        return Plan(kind, lease + rng.uniform(0.5, 1.5), amount=timing.renew_deadline + rng.uniform(0.3, 1.0))
    if kind == "slow_store":
        return Plan(kind, rng.uniform(2.0, 4.0), amount=timing.renew_deadline + rng.uniform(0.2, 0.6))
    if kind in ("black_hole", "one_way_deliver", "one_way_reset"):
        return Plan(kind, lease + rng.uniform(0.5, 2.5))
    if kind == "reset":
        return Plan(kind, rng.uniform(0.3, 1.5))
    if kind == "kill":
        return Plan(kind, 0.0)
    # A store restart: mostly short outages, now and then a long one.
    long = rng.random() < 0.1
    down = rng.uniform(0.3, timing.max_outage) if long else rng.uniform(0.3, min(3.0, timing.max_outage))
    return Plan(kind, down, pick=rng.random())


def _heal(proxy: Proxy, *, deliver: bool) -> bool:
    """Remove the proxy's toxics: held bytes delivered in order (``deliver``), or every
    connection reset with them. Returns False if delivering had to give way to a reset.

    Removing a toxic that holds bytes a client does not take hangs in Toxiproxy
    2.5.0 (seen on a busy gRPC connection; ``test_harness`` reproduces it), and so
    does disabling that proxy; deleting and re-creating it does not.
    """
    if deliver:
        try:
            proxy.heal()
            return True
        except ToxiproxyError:
            pass
    proxy.recreate()
    return not deliver


def _new_term(ledger: LedgerServer, above: int, timeout: float) -> int | None:
    """The token of a term begun with a token above ``above`` (None: none within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tokens = [token for _, token in list(ledger.open_terms.values()) if token > above]
        if tokens:
            return max(tokens)
        time.sleep(0.05)
    return None


def inject(
    n: int, plan: Plan, store: Store, replicas: list[Replica], leader: Replica, ledger: LedgerServer
) -> Fault:
    """Apply ``plan`` (``leader`` is the replica leading now); block until healed."""
    fault = _inject(n, plan, store, replicas, leader, ledger)
    fault.planned = plan.duration
    return fault


def _inject(
    n: int, plan: Plan, store: Store, replicas: list[Replica], leader: Replica, ledger: LedgerServer
) -> Fault:
    kind = plan.kind
    target = leader
    if kind == "wall_step_follower":
        followers = [r for r in replicas if r is not leader and r.alive()]
        target = followers[int(plan.pick * len(followers))] if followers else leader
    start = boottime()
    pid = target.pid
    majority = True
    detail = ""
    if kind == "kill":
        ledger.forget(target.pid)
        target.kill()
        detail = "SIGKILL"
    elif kind == "pause":
        if plan.pick < 0.5:  # half the pauses land inside a run, just after its checked write
            ledger.wait_for_act(target.pid, 2.0)
        start = boottime()
        target.signal(signal.SIGSTOP)
        time.sleep(plan.duration)
        target.signal(signal.SIGCONT)
        detail = f"SIGSTOP {plan.duration:.1f}s"
    elif kind == "suspend":
        # Stopped, and on waking its CLOCK_MONOTONIC reads as if no time had passed,
        # while CLOCK_BOOTTIME (and the store, and the others) moved on.
        if plan.pick < 0.5:
            ledger.wait_for_act(target.pid, 2.0)
        start = boottime()
        target.signal(signal.SIGSTOP)
        time.sleep(plan.duration)
        target.hold_monotonic(boottime() - start)
        target.signal(signal.SIGCONT)
        detail = f"suspend {plan.duration:.1f}s (CLOCK_MONOTONIC held)"
    elif kind.startswith("wall_step"):
        target.step_wall(plan.amount)
        time.sleep(plan.duration)
        target.set_wall(0.0)  # and stepped back again: a second step, the other way
        detail = f"wall {plan.amount:+.0f}s for {plan.duration:.1f}s"
    elif kind in ("delay", "black_hole", "one_way_deliver", "one_way_reset", "reset"):
        proxies = store.proxies[target.slot]
        for proxy in proxies:
            if kind == "delay":
                proxy.delay(plan.amount)
            elif kind == "black_hole":
                proxy.black_hole()
            elif kind.startswith("one_way"):
                proxy.one_way_cut()
            else:
                proxy.reset_peer()
        time.sleep(plan.duration)
        delivered = all(_heal(proxy, deliver=kind != "one_way_reset") for proxy in proxies)
        detail = {
            "delay": f"answers +{plan.amount:.1f}s for {plan.duration:.1f}s",
            "black_hole": f"held both ways {plan.duration:.1f}s, delivered",
            "one_way_deliver": f"answers held {plan.duration:.1f}s, delivered",
            "one_way_reset": f"answers held {plan.duration:.1f}s, connections reset",
            "reset": f"reset_peer {plan.duration:.1f}s",
        }[kind] + ("" if delivered else " (delivery hung in Toxiproxy: reset instead)")
    elif kind == "slow_store":
        target_name = "all"
        for proxies in store.proxies:
            for proxy in proxies:
                proxy.delay(plan.amount)
        time.sleep(plan.duration)
        for proxies in store.proxies:
            for proxy in proxies:
                _heal(proxy, deliver=True)
        majority = False
        detail = f"every answer +{plan.amount:.1f}s for {plan.duration:.1f}s"
        return Fault(n, store.name, kind, target_name, None, start, boottime(), majority, detail)
    elif kind == "sentinel_lost_write":
        assert isinstance(store, SentinelStore)
        _, old_token = ledger.open_terms.get(target.pid, ("", 0))

        def new_term() -> str:
            # Killed, not released: a follower takes the lease when it expires on the master.
            ledger.forget(target.pid)
            target.kill()
            # Sentinel skips a replica whose link has been down for more than ten
            # down-after periods (plus the master's downtime): wait at most half of that
            # for the new term, so the cut-off replica stays promotable (a longer wait
            # left no replica to fail over to, and the harness aborted).
            token = _new_term(ledger, old_token, store.group.down_after_ms * 10 / 1000 / 2)
            return f"leader {target.name} (token {old_token}) killed, " + (
                f"token {token} acquired" if token is not None else "no new term"
            )

        detail = store.lose_write(new_term, plan.duration)
        majority = False
    else:
        majority, detail = store.restart(kind, plan.duration, random.Random(plan.pick))
        return Fault(n, store.name, kind, "store", None, start, boottime(), majority, detail)
    role = "leader" if target is leader else "follower"
    return Fault(n, store.name, kind, f"{target.name} ({role})", pid, start, boottime(), majority, detail)

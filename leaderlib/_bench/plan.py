"""How much a run measures: sample counts, follower and election counts, windows."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Plan:
    samples: int
    """Requests per latency (raw, try_acquire, renew; elector acquisitions on a warm client)."""
    spawn_samples: int
    """Acquisitions of peers that start a process or thread per sample (client-go, kubernetes)."""
    cycles: int
    """Handover/failover cycles per subject (each: one SIGKILL and one graceful stop)."""
    followers: tuple[int, ...]
    """Followers beside the one leader in the load scenario (0 is the baseline)."""
    load_window: float
    elections: tuple[int, ...]
    """Elections in one process in the scale scenario."""
    scale_window: float
    scale_ramp: float
    """At most this long for all elections to lead before the scale window starts."""
    tick_window: float
    tick_interval: float = 0.1


QUICK = Plan(
    samples=20, spawn_samples=3, cycles=1, followers=(0, 2), load_window=1.5,
    elections=(1, 50), scale_window=2.5, scale_ramp=20.0, tick_window=1.0,
)  # fmt: skip

FULL = Plan(
    samples=200, spawn_samples=15, cycles=4, followers=(0, 1, 10, 50), load_window=4.0,
    elections=(1, 100, 1000, 10000), scale_window=8.0, scale_ramp=45.0, tick_window=4.0,
)  # fmt: skip

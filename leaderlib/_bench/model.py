"""What a benchmark run produces: rows (one per store x scenario x subject) and their statistics."""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from typing import Any

#: Every scenario, in the order a run makes them.
SCENARIOS = ("raw", "acquire", "renew", "handover", "failover", "load", "scale", "tick")

#: The stores a full run covers, in report order.
STORES = ("sqlite", "redis", "etcd", "kubernetes")


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(len(ordered), rank) - 1]


@dataclasses.dataclass
class Row:
    """One subject (leaderlib, a peer, the raw round trip) in one scenario on one store.

    ``status`` is ``"ok"`` (measured), ``"n/a"`` (does not apply; ``why`` says
    why) or ``"error"`` (it failed; ``why`` has the error). Latency scenarios
    fill ``samples`` (in ``unit``); load and scale fill ``points``.
    """

    store: str
    scenario: str
    subject: str
    settings: str = ""
    status: str = "ok"
    why: str = ""
    unit: str = "ms"
    samples: list[float] = dataclasses.field(default_factory=list)
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    ratio_to_raw: float | None = None
    """This row's median over the store's raw median (latency rows only)."""

    def stats(self) -> dict[str, float | int | None]:
        """n, median, p90, p99 and max of ``samples`` (None when there are none)."""
        if not self.samples:
            return {"n": 0, "median": None, "p90": None, "p99": None, "max": None}
        ordered = sorted(self.samples)
        return {
            "n": len(ordered),
            "median": round(statistics.median(ordered), 3),
            "p90": round(percentile(ordered, 0.90), 3),
            "p99": round(percentile(ordered, 0.99), 3),
            "max": round(ordered[-1], 3),
        }

    def to_json(self) -> dict[str, Any]:
        """The row as benchmarks/README.md documents it."""
        return {
            "store": self.store,
            "scenario": self.scenario,
            "subject": self.subject,
            "settings": self.settings,
            "status": self.status,
            "why": self.why,
            "unit": self.unit,
            **self.stats(),
            "ratio_to_raw": self.ratio_to_raw,
            "samples": [round(s, 4) for s in self.samples],
            "points": self.points,
            "extra": self.extra,
        }


def not_applicable(store: str, scenario: str, subject: str, why: str, settings: str = "") -> Row:
    """A row for a subject that cannot take part, saying why."""
    return Row(store, scenario, subject, settings=settings, status="n/a", why=why)


def progress(message: str) -> None:
    """One progress line on stderr (the report goes to files and stdout)."""
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()

"""PNG plots of a run (matplotlib, Agg): latency per store, failover timeline, load, scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import STORES, Row

LATENCY_SCENARIOS = ("raw", "acquire", "renew", "handover", "failover", "tick")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib; install it with: pip install 'leaderlib[bench]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict[str, Any], directory: Path) -> list[Path]:
    """Write every plot into ``directory``; returns their paths."""
    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = report["rows"]
    written = []
    for store in STORES:
        store_rows = [r for r in rows if r.store == store]
        if store_rows:
            written.append(_latency(plt, store, store_rows, directory / f"latency-{store}.png"))
    written.append(_timeline(plt, report["timelines"], directory / "failover-timeline.png"))
    written.append(_load(plt, [r for r in rows if r.scenario == "load"], directory / "load.png"))
    written.append(_scale(plt, [r for r in rows if r.scenario == "scale"], directory / "scale.png"))
    return written


def _latency(plt: Any, store: str, rows: list[Row], path: Path) -> Path:
    scenarios = [s for s in LATENCY_SCENARIOS if any(r.scenario == s for r in rows)]
    fig, axes = plt.subplots(
        1, max(1, len(scenarios)), figsize=(4 * max(1, len(scenarios)), 4.5), squeeze=False
    )
    for ax, scenario in zip(axes[0], scenarios, strict=False):
        chosen = [r for r in rows if r.scenario == scenario]
        data = [r.samples if r.samples else [float("nan")] for r in chosen]
        ax.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(chosen) + 1))
        ax.set_xticklabels(
            [r.subject if r.samples else f"{r.subject}\n({r.status})" for r in chosen], rotation=35, ha="right",
            fontsize=7,
        )  # fmt: skip
        if any(s > 0 for r in chosen for s in r.samples):
            ax.set_yscale("log")
        ax.set_title(scenario)
        ax.set_ylabel("ms")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{store}: latency (box: quartiles, whiskers p1-p99)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _timeline(plt: Any, timelines: list[dict[str, Any]], path: Path) -> Path:
    n = max(1, len(timelines))
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.1 * n + 1), squeeze=False, sharex=True)
    colors = {"a": "tab:blue", "b": "tab:orange", "c": "tab:green"}
    for ax, timeline in zip(axes[:, 0], timelines, strict=False):
        events = timeline["events"]
        end = max(at for _, _, at in events) + 0.3
        leads = [(who, at) for who, what, at in events if what == "leads"]
        stops = {who: at for who, what, at in events if what in ("SIGKILL", "SIGTERM")}
        for who, start in leads:
            stop = stops.get(who, end)
            ax.barh(0, stop - start, left=start, color=colors.get(who, "gray"), height=0.6)
            ax.text(start, 0.42, who, fontsize=7)
        for _who, what, at in events:
            if what in ("SIGKILL", "SIGTERM"):
                ax.axvline(at, color="red" if what == "SIGKILL" else "black", lw=1, ls="--")
                ax.text(at, -0.5, what, fontsize=6)
        ax.set_yticks([0])
        ax.set_yticklabels([f"{timeline['store']}: {timeline['subject']}"], fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the first candidate led (bars: who leads; gaps: nobody)")
    fig.suptitle("Who leads when: SIGKILL of the leader (red), then SIGTERM of the next (black)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _load(plt: Any, rows: list[Row], path: Path) -> Path:
    stores = [s for s in STORES if any(r.store == s for r in rows)] or ["none"]
    fig, axes = plt.subplots(1, len(stores), figsize=(4.5 * len(stores), 4), squeeze=False)
    for ax, store in zip(axes[0], stores, strict=False):
        for row in (r for r in rows if r.store == store and r.points):
            xs = [p["followers"] for p in row.points]
            ax.plot(xs, [max(p["requests_per_s"], 0.01) for p in row.points], marker="o", label=row.subject)
        ax.set_yscale("log")
        ax.set_title(store)
        ax.set_xlabel("followers (besides 1 leader)")
        ax.set_ylabel("requests/s at the server")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scale(plt: Any, rows: list[Row], path: Path) -> Path:
    metrics = (("missed_renewals", "missed renewals"), ("cpu_percent", "CPU % of one core"),
               ("rss_mb", "RSS MB"), ("threads", "threads"), ("connections", "connections"))  # fmt: skip
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics, strict=False):
        for row in (r for r in rows if r.points):
            # The line under Python's GC defaults; points under tuned thresholds on their own.
            default = [p for p in row.points if not p.get("gc_tuned")]
            (line,) = ax.plot(
                [p["elections"] for p in default], [p[key] for p in default], marker="o", label=row.store
            )
            for tuned in (p for p in row.points if p.get("gc_tuned")):
                ax.plot([tuned["elections"]], [tuned[key]], marker="*", markersize=11,
                        color=line.get_color(), linestyle="none",
                        label=f"{row.store}, gc {tuned.get('gc', '')}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("elections in one process")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

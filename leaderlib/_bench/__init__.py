"""``leaderlib bench``: leaderlib next to the physical limit and to its peers, on real stores.

    leaderlib bench --servers                     # start Redis, etcd (fsync on), kube-apiserver
    leaderlib bench --backend redis://127.0.0.1:6379/0 --scenario acquire --quick

Writes ``--json FILE`` and ``--report DIR`` (``report.md`` and PNG plots);
prints the Markdown tables on stdout and progress on stderr. Modules:
``scenarios`` (raw, acquire, renew, tick), ``processes`` (handover,
failover), ``load``, ``scale``, ``peers/`` (one module per subject),
``report`` (goals, JSON, Markdown), ``plots``, ``runner``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .model import SCENARIOS, progress
from .peers import PEERS
from .plan import FULL, QUICK
from .stores import Target, real_servers

__all__ = ["add_arguments", "main", "run_command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` options (used by ``leaderlib.cli``)."""
    parser.add_argument(
        "--backend", action="append", default=[], metavar="URL", help="a store to measure (repeatable)"
    )
    parser.add_argument(
        "--servers",
        action="store_true",
        help="start real Redis, etcd (fsync on) and kube-apiserver, and measure them and a SQLite file",
    )
    parser.add_argument("--scenario", action="append", default=[], choices=SCENARIOS, metavar="NAME",
                        help=f"repeatable; default all: {', '.join(SCENARIOS)}")  # fmt: skip
    parser.add_argument("--peer", action="append", default=[], choices=sorted(PEERS), metavar="NAME",
                        help=f"repeatable; default all that apply: {', '.join(sorted(PEERS))}")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="few samples, small N and E (a few minutes)")
    parser.add_argument(
        "--json", metavar="FILE", help="write the report as JSON (schema: benchmarks/README.md)"
    )
    parser.add_argument("--report", metavar="DIR", help="write report.md and the PNG plots here")
    parser.add_argument("--kube-admin-kubeconfig", metavar="FILE", default="",
                        help="kubernetes: a kubeconfig allowed to read /metrics (load counts)")  # fmt: skip


def run_command(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` ask for; returns the exit status."""
    from . import report as reporting
    from .runner import run_sync

    if not args.backend and not args.servers:
        raise SystemExit("leaderlib bench: give --backend URL (repeatable) or --servers")
    # gRPC (aetcd) logs a line at every fork of a child candidate unless fork support is off.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    # The scale scenario overloads stores on purpose: its misses are counted in the
    # report, not logged once per election on stderr, where the progress is.
    logging.getLogger("leaderlib").setLevel(logging.ERROR)
    plan = QUICK if args.quick else FULL
    scenarios = args.scenario or list(SCENARIOS)
    with contextlib.ExitStack() as stack:
        targets = [Target.from_url(url, args.kube_admin_kubeconfig) for url in args.backend]
        if args.servers:
            progress("starting Redis, etcd (fsync on) and kube-apiserver")
            targets += stack.enter_context(real_servers())
        result = run_sync(targets, scenarios, args.peer, plan, args.quick)
    text = reporting.markdown(result)
    if args.json:
        reporting.write_json(result, Path(args.json))
    if args.report:
        from .plots import write_plots

        directory = Path(args.report)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "report.md").write_text(text)
        for path in write_plots(result, directory):
            progress(f"wrote {path}")
    print(text)  # noqa: T201
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leaderlib bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(parser)
    return run_command(parser.parse_args(argv))

"""The ``leaderlib`` command: run a service, show an election, demo a failover, start test servers."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._config import load_settings
from ._errors import LeaderlibError
from ._logging import configure_logging
from ._runtime import Service
from .backends import backend_from_url

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leaderlib",
        description="Leader election for Python services: one replica runs the jobs, a standby takes over.",
        epilog="Backends: sqlite:///PATH (default), memory://, redis://HOST:PORT/DB, "
        "etcd://HOST:PORT[,HOST:PORT], kubernetes://NAMESPACE.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a Service as one replica",
        description="Import MODULE:ATTR (a Service, or a function returning one) and run it as one "
        "replica until SIGTERM/SIGINT. MODULE may be a dotted module or a path to a .py file.",
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="e.g. examples/cron_service.py:service")
    run.add_argument(
        "--backend", metavar="URL", help="backend URL (overrides LEADERLIB_BACKEND and the code)"
    )
    run.add_argument("--config", metavar="FILE", help="TOML file with a [leaderlib] table")
    run.add_argument(
        "--health-port", type=int, metavar="PORT", help="serve /healthz and /leader on this port"
    )
    run.add_argument("--health-host", default="127.0.0.1", metavar="HOST", help="default: 127.0.0.1")
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--log-level", default="INFO", metavar="LEVEL")
    run.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port")

    status = commands.add_parser(
        "status", help="show who holds an election", description="Read one election's lease record."
    )
    status.add_argument("election")
    status.add_argument("--backend", metavar="URL", help="backend URL (default: LEADERLIB_BACKEND or sqlite)")
    status.add_argument("--json", action="store_true", help="print the record as JSON")

    demo = commands.add_parser(
        "demo",
        help="watch replicas fail over on a real backend",
        description="Start N replicas of a demo service, SIGKILL the leader part-way, stop the next "
        "leader gracefully near the end, and report failover and handover times, overlaps and "
        "duplicate ticks measured from the replicas' own logs.",
    )
    demo.add_argument("--replicas", type=int, default=3, metavar="N", help="default: 3")
    demo.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds (default: 30)")
    demo.add_argument("--backend", metavar="URL", help="default: a SQLite file in a temporary directory")
    demo.add_argument("--json", metavar="FILE", help="write the summary here as JSON")
    demo.add_argument("--quiet", action="store_true", help="print only the summary")

    bench = commands.add_parser(
        "bench",
        help="benchmark leaderlib next to the raw round trip and its peers on real stores",
        description="Measure raw, acquire, renew, handover, failover, load, scale and tick on each store, "
        "side by side with client-go, the kubernetes client's LeaseLock, redis-py Lock, tooz and aetcd "
        "Lock; write JSON, Markdown and PNG plots (needs pip install 'leaderlib[bench]').",
    )
    from ._bench import add_arguments as add_bench_arguments

    add_bench_arguments(bench)

    # Listed for --help only: main() hands `testenv ...` to leaderlib.testing.testenv.
    commands.add_parser(
        "testenv", help="start real Redis, etcd, kube-apiserver for tests (see testenv --help)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``leaderlib`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["testenv"]:
        # testenv parses its own options (and passes `-- COMMAND...` through).
        from .testing.testenv import main as testenv_main

        return testenv_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "status":
            return asyncio.run(_status(args))
        if args.command == "bench":
            from ._bench import run_command

            return run_command(args)
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(
                replicas=args.replicas,
                duration=args.duration,
                backend=args.backend,
                json_path=args.json,
                quiet=args.quiet,
            )
    except LeaderlibError as exc:
        print(f"leaderlib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)


def load_target(target: str) -> Service:
    """Import ``MODULE:ATTR`` (dotted module or .py path) and return the Service it names."""
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise _usage(f"{target!r} is not MODULE:ATTR (e.g. examples/cron_service.py:service)")
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise _usage(f"{module_name!r} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise _usage(f"cannot import {module_name!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    try:
        found: Any = getattr(module, attribute)
    except AttributeError:
        raise _usage(f"{module_name!r} has no attribute {attribute!r}") from None
    if callable(found) and not isinstance(found, Service):
        found = found()
    if not isinstance(found, Service):
        raise _usage(f"{target!r} is a {type(found).__name__}, not a leaderlib.Service")
    return found


def _usage(message: str) -> LeaderlibError:
    from ._errors import ConfigError

    return ConfigError(message, field="MODULE:ATTR")


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    service = load_target(args.target)
    # The settings are resolved once more, by the service's own rules, with the flags:
    # --backend wins over the code; the code's config= wins over --config FILE.
    service.configure(file=args.config, backend=args.backend)
    if args.metrics_port:
        _serve_metrics(args.metrics_port)
    health = (args.health_host, args.health_port) if args.health_port is not None else None
    return service.run_forever(health_address=health)


def _serve_metrics(port: int) -> None:
    """Configure the OpenTelemetry SDK with a Prometheus endpoint (needs leaderlib[cli])."""
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import start_http_server
    except ImportError as exc:
        from ._errors import BackendNotInstalled

        raise BackendNotInstalled(
            f"--metrics-port needs {exc.name}; install it with: pip install 'leaderlib[cli]'"
        ) from exc
    start_http_server(port, addr="127.0.0.1")
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))


async def _status(args: argparse.Namespace) -> int:
    settings = load_settings(backend=args.backend)
    backend = backend_from_url(settings.backend)
    try:
        record = await backend.get(args.election)
    finally:
        await backend.aclose()
    if args.json:
        payload: dict[str, Any] | None = None
        if record is not None:
            payload = {key: value for key, value in dataclasses.asdict(record).items()}
            for key in ("acquire_time", "renew_time"):
                if payload[key] is not None:
                    payload[key] = payload[key].isoformat()
        print(
            json.dumps({"election": args.election, "backend": settings.backend, "record": payload}, indent=2)
        )
        return 0
    if record is None or not record.is_held:
        print(f"{args.election}: no leader ({settings.backend})")
        return 0
    print(f"election:       {args.election}")
    print(f"holder:         {record.holder}")
    print(f"since:          {record.acquire_time.isoformat() if record.acquire_time else '-'}")
    print(f"renewed:        {record.renew_time.isoformat() if record.renew_time else '-'}")
    print(f"lease duration: {record.lease_duration:g}s")
    print(f"fencing token:  {record.fencing_token}")
    print(f"transitions:    {record.transitions}")
    print(f"backend:        {settings.backend}")
    return 0

"""The ``leaderlib`` command: run a service, show an election, demo a failover, start test servers."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._config import load_settings
from ._errors import BackendError, ConfigError, LeaderlibError
from ._logging import configure_logging, get_logger
from ._runtime import Service
from ._sdk import configure_sdk
from .backends import Backend, JobRun, LeaseRecord, backend_from_url

__all__ = ["load_target", "main", "redact_url"]

logger = get_logger("leaderlib.cli")

#: Exit statuses, as docs/bad-input.md states them.
EXIT_OK = 0
EXIT_ABANDONED_RUN = 1  # a job run had to be abandoned at shutdown (Service.run_forever)
EXIT_USAGE = 2  # bad usage or configuration: nothing was started
EXIT_REFUSED = 3  # the store refused the credentials or permissions
EXIT_INTERRUPTED = 130

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _version() -> str:
    try:
        return importlib.metadata.version("leaderlib")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _port(text: str) -> int:
    """argparse type of a TCP port to listen on: 1-65535 (0, "any free port", is no use to a probe)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1-65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leaderlib",
        description="Leader election for Python services: one replica runs the jobs, a standby takes over.",
        epilog="Backends: sqlite:///PATH (default), memory://, redis://HOST:PORT/DB, "
        "etcd://HOST:PORT[,HOST:PORT], kubernetes://NAMESPACE.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a Service as one replica",
        description="Import MODULE:ATTR and run it as one replica until SIGTERM/SIGINT. MODULE is a "
        "path to a .py file or a dotted module (importable from the working directory, as with "
        "uvicorn). ATTR is a leaderlib.Service, or a function annotated '-> Service' that makes one; "
        "nothing else is called. Exit status: 0 stopped cleanly; 1 a job run had to be abandoned at "
        "shutdown; 2 bad usage or configuration; 3 the store refused the credentials or "
        "permissions; 130 interrupted.",
    )
    run.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="e.g. examples/cron_service.py:service, or mysvc:service from mysvc.py's directory",
    )
    run.add_argument(
        "--backend", metavar="URL", help="backend URL (overrides LEADERLIB_BACKEND and the code)"
    )
    run.add_argument("--config", metavar="FILE", help="TOML file with a [leaderlib] table")
    run.add_argument(
        "--health-port", type=_port, metavar="PORT", help="serve /healthz and /leader on this port"
    )
    run.add_argument("--health-host", default="127.0.0.1", metavar="HOST", help="default: 127.0.0.1")
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default) or json: one JSON object a line, a fatal error included",
    )
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=_LOG_LEVELS,
        default="INFO",
        metavar="LEVEL",
        help="DEBUG, INFO (default), WARNING, ERROR or CRITICAL",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on this port (needs leaderlib[cli]); OTLP export follows the "
        "standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT...; needs leaderlib[otlp])",
    )
    run.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        metavar="HOST",
        help="address for --metrics-port (default: 0.0.0.0, every interface, so Prometheus can "
        "scrape a pod; 127.0.0.1 keeps the metrics on this host)",
    )

    status = commands.add_parser(
        "status",
        help="show who holds an election",
        description="Read one election's lease record and its jobs' last recorded runs (jobs with "
        "misfire_grace record theirs: tick, who ran it, outcome, duration, next tick); never "
        "creates a store. Passwords in the backend URL are shown as ***. Exit status: 0 shown; 2 bad usage or configuration; 3 the "
        "store refused the credentials or permissions, or could not be read.",
    )
    status.add_argument("election")
    status.add_argument("--backend", metavar="URL", help="backend URL (default: LEADERLIB_BACKEND or sqlite)")
    status.add_argument("--json", action="store_true", help="print the record and the job runs as JSON")

    demo = commands.add_parser(
        "demo",
        help="watch replicas fail over on a real backend",
        description="Start N replicas of a demo service, SIGKILL the leader part-way, stop the next "
        "leader gracefully near the end, and report failover and handover times, overlaps and "
        "duplicate ticks measured from the replicas' own logs.",
    )
    demo.add_argument(
        "--replicas",
        type=int,
        default=3,
        metavar="N",
        help="at least 2 (default: 3; the graceful handover needs 3)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds, at least 20: a failover waits out the killed leader's lease (default: 30)",
    )
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
        try:
            from .testing.testenv import main as testenv_main
        except ImportError as exc:
            # leaderlib.testing's own message names the extra to install.
            print(f"leaderlib testenv: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
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
        return _fail(args, exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    raise AssertionError(args.command)


def _fail(args: argparse.Namespace, exc: LeaderlibError) -> int:
    """Report a fatal error in one line (one JSON record under ``run --log-format json``)."""
    # AccessDenied is the common case; status can also fail to read a store at all.
    status = EXIT_REFUSED if isinstance(exc, BackendError) else EXIT_USAGE
    urls = [url for url in (getattr(args, "backend", None), os.environ.get("LEADERLIB_BACKEND")) if url]
    message = str(exc)
    for url in urls:
        message = message.replace(url, redact_url(url))
    if args.command == "run" and args.log_format == "json" and logging.getLogger().handlers:
        logger.error(
            "leaderlib run failed",
            extra={"error": message, "error_type": type(exc).__name__, "exit_status": status},
        )
    else:
        print(f"leaderlib {args.command}: error: {message}", file=sys.stderr)
    return status


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
        module = _import(module_name)
    try:
        found: Any = getattr(module, attribute)
    except AttributeError:
        raise _usage(f"{module_name!r} has no attribute {attribute!r}") from None
    if isinstance(found, Service):
        return found
    if _is_service_factory(found):
        made = found()
        if not isinstance(made, Service):
            raise _usage(f"{target!r} is annotated to return a Service but returned a {type(made).__name__}")
        return made
    # Anything else is not called: MODULE:ATTR may name any callable (json:dumps),
    # and calling one for its side effects would be a surprise.
    raise _usage(
        f"{target!r} is {_describe(found)}; it must name a leaderlib.Service, or a function "
        "annotated '-> Service' (the only kind leaderlib run calls)"
    )


def _import(module_name: str) -> Any:
    """Import a dotted module, from the working directory too, as uvicorn does."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or not (module_name == missing or module_name.startswith(missing + ".")):
            raise  # the module exists but imports something missing: its traceback says where
        raise _usage(
            f"no module named {missing!r} in {cwd} or on sys.path; "
            "name a dotted module or a path to a .py file"
        ) from None


def _is_service_factory(found: Any) -> bool:
    """True for a plain (not async) function whose return annotation is Service or a subclass."""
    if not inspect.isfunction(found) or inspect.iscoroutinefunction(found):
        return False
    try:
        returned = typing.get_type_hints(found).get("return")
    except Exception:  # an annotation that does not resolve: read it as written
        written = found.__annotations__.get("return")
        return isinstance(written, str) and written.rpartition(".")[2] == "Service"
    return isinstance(returned, type) and issubclass(returned, Service)


def _describe(found: Any) -> str:
    if inspect.isclass(found):
        return f"the class {found.__name__}"
    if inspect.iscoroutinefunction(found):
        return "an async function"
    if inspect.isfunction(found):
        return "a function not annotated '-> Service'"
    return f"a {type(found).__name__}"


def _usage(message: str) -> LeaderlibError:
    return ConfigError(message, field="MODULE:ATTR")


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***``: ``redis://app:***@host``, ``?password=***``."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return url
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.partition(":")[0]
        url = url.replace(f"{netloc}", f"{user}:***@{host}", 1)
    return re.sub(r"([?&](?:password|token|secret)=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    service = load_target(args.target)
    # The settings are resolved once more, by the service's own rules, with the flags:
    # --backend wins over the code; the code's config= wins over --config FILE.
    service.configure(file=args.config, backend=args.backend)
    # Prometheus (--metrics-port) and OTLP (the standard OTEL_* variables) are the
    # command's choice: the library only records through the OpenTelemetry API.
    prometheus = (args.metrics_host, args.metrics_port) if args.metrics_port else None
    configure_sdk(service_name=service.name, prometheus=prometheus)
    health = (args.health_host, args.health_port) if args.health_port is not None else None
    return service.run_forever(health_address=health)


async def _status(args: argparse.Namespace) -> int:
    settings = load_settings(backend=args.backend)
    shown = redact_url(settings.backend)
    backend = backend_from_url(settings.backend)
    try:
        _refuse_to_create(backend)
        lease = backend.lease(args.election)
        record = await lease.get()
        runs = await lease.last_runs()
    finally:
        await backend.aclose()
    if args.json:
        payload = {
            "election": args.election,
            "backend": shown,
            "record": None if record is None else _jsonable(dataclasses.asdict(record)),
            "jobs": {job: _jsonable(dataclasses.asdict(run)) for job, run in sorted(runs.items())},
        }
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    if record is None:
        print(f"{args.election}: no leader, and no lease record yet ({shown})")
    else:
        _print_record(args.election, record, shown)
    _print_runs(runs)
    return EXIT_OK


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    """A record's fields with times as ISO 8601 strings."""
    return {
        key: value.isoformat() if isinstance(value, dt.datetime) else value for key, value in fields.items()
    }


def _print_runs(runs: dict[str, JobRun]) -> None:
    if not runs:
        print("jobs:           no runs recorded (only jobs with misfire_grace record theirs)")
        return
    print("jobs:           last recorded run of each")
    width = max(len(job) for job in runs)
    for job, run in sorted(runs.items()):
        if run.outcome is None:
            outcome = "started, no end recorded (still running, or its leader died)"
        else:
            outcome = f"{run.outcome} in {run.duration:.3f}s" if run.duration is not None else run.outcome
        following = run.next_tick.isoformat() if run.next_tick else "-"
        print(
            f"  {job:<{width}}  tick {run.tick.isoformat()}  by {run.identity} (token {run.fencing_token})  "
            f"{outcome}  next tick {following}"
        )


def _print_record(election: str, record: LeaseRecord, backend: str) -> None:
    # A released record still has the last term's token and the count of
    # transitions: both say what happened, so they are shown without a holder too.
    print(f"election:       {election}")
    print(f"holder:         {record.holder if record.is_held else '- (no leader: the lease was released)'}")
    print(f"since:          {record.acquire_time.isoformat() if record.acquire_time else '-'}")
    print(f"renewed:        {record.renew_time.isoformat() if record.renew_time else '-'}")
    print(f"lease duration: {record.lease_duration:g}s")
    print(f"fencing token:  {record.fencing_token}")
    print(f"transitions:    {record.transitions}")
    print(f"backend:        {backend}")


def _refuse_to_create(backend: Backend) -> None:
    """status only reads: a SQLite path that does not exist would be created by opening it."""
    from .backends.sqlite import SQLiteBackend

    if isinstance(backend, SQLiteBackend) and not os.path.exists(backend.path):
        raise ConfigError(
            f"{backend.path} does not exist; status reads a store and never creates one "
            "(is it the path the replicas use?)",
            field="backend",
        )

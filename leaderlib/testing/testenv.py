"""``leaderlib testenv``: run real test servers and hand their settings to a command.

    leaderlib testenv --redis --etcd              # print settings, serve until Ctrl-C
    leaderlib testenv --all -- pytest tests/      # run a command against all servers

Settings are printed on stdout as ``KEY=value`` lines (shell- and
``.env``-friendly) and, with a command, set in its environment:

=====================================  =============================================
LEADERLIB_TEST_REDIS_URL               ``redis://127.0.0.1:PORT``
LEADERLIB_TEST_ETCD_URL                ``etcd://127.0.0.1:PORT``
LEADERLIB_TEST_ETCD_CLUSTER_URL        ``etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``
LEADERLIB_TEST_KUBECONFIG              kubeconfig of the least-privileged ``elector`` user
LEADERLIB_TEST_KUBE_ADMIN_KUBECONFIG   kubeconfig of ``admin`` (system:masters)
LEADERLIB_TEST_KUBE_NAMESPACE          namespace where ``elector`` may manage leases
LEADERLIB_TEST_TOXIPROXY_URL           ``http://127.0.0.1:PORT``: a Toxiproxy API (no proxies yet)
=====================================  =============================================
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from leaderlib.testing.servers import (
    BinaryNotFoundError,
    EtcdCluster,
    EtcdServer,
    KubeAPIServer,
    RedisServer,
    ServerError,
)
from leaderlib.testing.toxiproxy import ToxiproxyServer

log = logging.getLogger("leaderlib.testing")

_EPILOG = """\
environment printed / passed to COMMAND:
  LEADERLIB_TEST_REDIS_URL              redis://127.0.0.1:PORT
  LEADERLIB_TEST_ETCD_URL               etcd://127.0.0.1:PORT
  LEADERLIB_TEST_ETCD_CLUSTER_URL       etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
  LEADERLIB_TEST_KUBECONFIG             kubeconfig of the unprivileged 'elector' user
  LEADERLIB_TEST_KUBE_ADMIN_KUBECONFIG  kubeconfig of 'admin' (system:masters)
  LEADERLIB_TEST_KUBE_NAMESPACE         namespace where 'elector' may manage leases
  LEADERLIB_TEST_TOXIPROXY_URL          http://127.0.0.1:PORT (Toxiproxy API; create proxies there)

The server binaries come from backends/install (cached in ~/.cache/leaderlib/bin).

examples:
  leaderlib testenv --redis --etcd
  leaderlib testenv --all -- env
  leaderlib testenv --kubernetes -- pytest tests/integration -k kubernetes
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``leaderlib testenv`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="leaderlib testenv",
        description=(
            "Start real Redis, etcd and Kubernetes API servers (and Toxiproxy) on free loopback ports, "
            "print their connection settings as KEY=value lines, then run COMMAND with "
            "those settings in its environment (exiting with its status), or without "
            "COMMAND serve until interrupted (Ctrl-C). Everything is torn down on exit."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--redis", action="store_true", help="a standalone redis-server")
    parser.add_argument("--etcd", action="store_true", help="a single-member etcd")
    parser.add_argument("--etcd-cluster", action="store_true", help="a 3-member etcd cluster on loopback")
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help="a kube-apiserver (with its own etcd), RBAC, test namespace and kubeconfigs",
    )
    parser.add_argument(
        "--toxiproxy", action="store_true", help="a toxiproxy-server (network faults), no proxies yet"
    )
    parser.add_argument("--all", action="store_true", help="all of the above")
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="let etcd fsync (default: --unsafe-no-fsync, fine for functional tests only)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the servers' directories (data, logs) after exit",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log server start-up on stderr")
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="command to run with the settings in its environment",
    )
    return parser


def _emit(line: str, *, err: bool = False) -> None:
    """CLI output: settings on stdout (for eval/.env), messages on stderr."""
    stream = sys.stderr if err else sys.stdout
    stream.write(line + "\n")
    stream.flush()


class _Interrupted(Exception):
    """SIGTERM/SIGHUP arrived: unwind so the servers are stopped."""


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    """Run ``leaderlib testenv`` with ``argv`` (without the program name); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.all:
        args.redis = args.etcd = args.etcd_cluster = args.kubernetes = args.toxiproxy = True
    if not (args.redis or args.etcd or args.etcd_cluster or args.kubernetes or args.toxiproxy):
        parser.error(
            "choose at least one server: --redis --etcd --etcd-cluster --kubernetes --toxiproxy --all"
        )
    if args.verbose and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="testenv: %(message)s", stream=sys.stderr)

    no_fsync = not args.fsync
    redis = RedisServer() if args.redis else None
    etcd = EtcdServer(unsafe_no_fsync=no_fsync) if args.etcd else None
    cluster = EtcdCluster(unsafe_no_fsync=no_fsync) if args.etcd_cluster else None
    kube = KubeAPIServer() if args.kubernetes else None
    toxi = ToxiproxyServer() if args.toxiproxy else None

    # SIGTERM (e.g. from a CI runner or `timeout`) must tear down like Ctrl-C does.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupted)
        # A shell starts background jobs with SIGINT ignored, and Python keeps
        # that; testenv must still stop on SIGINT, wherever it was started from.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGHUP, _raise_interrupted)

    env: dict[str, str] = {}
    # Every server made, started or not: each owns a temp directory to remove.
    servers = [s for s in (redis, etcd, cluster, kube, toxi) if s is not None]
    keep = args.keep
    try:
        if redis is not None:
            redis.start()
            env["LEADERLIB_TEST_REDIS_URL"] = redis.url
        if etcd is not None:
            etcd.start()
            env["LEADERLIB_TEST_ETCD_URL"] = etcd.url
        if cluster is not None:
            cluster.start()
            env["LEADERLIB_TEST_ETCD_CLUSTER_URL"] = cluster.url
        if kube is not None:
            kube.start()
            env["LEADERLIB_TEST_KUBECONFIG"] = str(kube.kubeconfig)
            env["LEADERLIB_TEST_KUBE_ADMIN_KUBECONFIG"] = str(kube.admin_kubeconfig)
            env["LEADERLIB_TEST_KUBE_NAMESPACE"] = kube.namespace
        if toxi is not None:
            toxi.start()
            env["LEADERLIB_TEST_TOXIPROXY_URL"] = toxi.url
        for key, value in env.items():
            _emit(f"{key}={value}")
        if command:
            return _run(command, env)
        _emit("# servers running; Ctrl-C to stop", err=True)
        threading.Event().wait()
        return 0
    except ServerError as exc:
        _emit(f"leaderlib testenv: {exc}", err=True)
        # Keep the logs of a server that ran and failed; a missing binary left none.
        keep = keep or not isinstance(exc, BinaryNotFoundError)
        return 1
    except (KeyboardInterrupt, _Interrupted):
        return 130
    finally:
        for server in reversed(servers):
            server.stop(keep=keep)
            if keep and server.directory.exists():
                _emit(f"# kept {server.directory}", err=True)


def _run(command: Sequence[str], env: dict[str, str]) -> int:
    """Run ``command`` with ``env`` added; returns its exit status (128+N for signal N)."""
    try:
        proc = subprocess.Popen(list(command), env={**os.environ, **env})
    except OSError as exc:
        _emit(f"leaderlib testenv: cannot run {command[0]!r}: {exc}", err=True)
        return 127
    try:
        status = proc.wait()
    except BaseException:
        # Interrupted ourselves: the command shares our terminal and got the
        # same Ctrl-C; give it a moment to finish before the servers go away.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

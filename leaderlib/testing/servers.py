"""Real Redis, etcd and Kubernetes API servers as plain local processes, for tests.

Each server class is a context manager: it takes free loopback ports and a
temporary directory, starts the real binary in its own process group, waits
until the server answers, and on exit kills the whole group. Every process
started here is also killed at interpreter exit, so a failing or interrupted
test leaves no orphans behind.

    with EtcdServer() as etcd:
        url = etcd.url                  # "etcd://127.0.0.1:PORT"

The binaries come from ``backends/install``, which caches them under
``~/.cache/leaderlib/bin/<name>-<version>``; :func:`find_binary` locates them
and honours ``LEADERLIB_<NAME>`` environment overrides (``LEADERLIB_ETCD``,
``LEADERLIB_ETCDCTL``, ``LEADERLIB_KUBE_APISERVER``, ``LEADERLIB_REDIS_SERVER``,
``LEADERLIB_TOXIPROXY_SERVER``, ``LEADERLIB_CLIENTGO_ELECTOR``). Toxiproxy
(:mod:`leaderlib.testing.toxiproxy`) and the client-go elector
(:mod:`leaderlib.testing.clientgo`) live in modules of their own.

Stopping a server removes its directory (data, certificates, log) unless
``stop(keep=True)`` is asked for or the server failed to start; a failed start
raises :class:`ServerStartError`, whose message ends with the log's tail and
whose ``log_path`` names the full log.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from leaderlib.testing._pki import CertificateAuthority, CertPair, rsa_key_pair

__all__ = [
    "CLIENTGO_VERSION",
    "ETCD_VERSION",
    "KUBE_VERSION",
    "TOXIPROXY_VERSION",
    "TRANSIENT_ERRORS",
    "BinaryNotFoundError",
    "EtcdCluster",
    "EtcdServer",
    "KubeAPIServer",
    "NotYet",
    "RedisACLUser",
    "RedisServer",
    "ServerError",
    "ServerStartError",
    "ServerUnreachable",
    "cache_dir",
    "find_binary",
    "forget_at_exit",
    "free_port",
    "kill_at_exit",
    "poll",
]

log = logging.getLogger("leaderlib.testing")

ETCD_VERSION = "v3.6.16"
"""The etcd release ``backends/install`` builds (pinned in ``backends/etcd/go.mod``)."""

KUBE_VERSION = "v1.36.3"
"""The kube-apiserver release ``backends/install`` builds (``backends/kube-apiserver/go.mod``)."""

TOXIPROXY_VERSION = "v2.5.0"
"""The Toxiproxy release ``backends/install`` builds (``backends/toxiproxy/go.mod``)."""

CLIENTGO_VERSION = "v0.36.3"
"""The client-go release of ``clientgo-elector`` (``backends/clientgo-elector/go.mod``)."""

_VERSIONS = {
    "etcd": ETCD_VERSION,
    "etcdctl": ETCD_VERSION,
    "kube-apiserver": KUBE_VERSION,
    "toxiproxy-server": TOXIPROXY_VERSION,
    "clientgo-elector": CLIENTGO_VERSION,
}

LOOPBACK = "127.0.0.1"

# Starts that fail on "address already in use" are retried on new ports this often.
_BIND_ATTEMPTS = 3

# How much of a log a start error carries; the full log stays on disk.
_LOG_TAIL_LINES = 40


class ServerError(RuntimeError):
    """A test server could not be found, started or used."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path
        """The server's log file, kept on disk for inspection (None if none was written)."""


class BinaryNotFoundError(ServerError):
    """A server binary is missing: run ``backends/install``."""


class ServerStartError(ServerError):
    """A server process exited or did not become ready in time."""


class ServerUnreachable(ServerError):
    """A server did not answer this time: the connection was refused, reset or closed, or no
    answer came in time (a paused or failing-over server); :func:`poll` asks again."""


class NotYet(Exception):
    """Raised by a :func:`poll` probe: not yet; the message says what it saw instead."""


#: What a :func:`poll` counts as "not yet" rather than a failure: the server was
#: unreachable this time (``OSError`` covers a socket's refused, reset, EOF and
#: timeout, ``ConnectionError`` included; ``ServerUnreachable`` is ``redis-cli``'s).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, subprocess.TimeoutExpired, ServerUnreachable)


# --------------------------------------------------------------------------- binaries


def cache_dir() -> Path:
    """The cache ``backends/install`` writes to (``$LEADERLIB_CACHE_DIR`` or ``~/.cache/leaderlib``)."""
    configured = os.environ.get("LEADERLIB_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "leaderlib"


def find_binary(name: str) -> Path:
    """Return the path of server binary ``name``, or raise :class:`BinaryNotFoundError`.

    Looks, in order, at ``$LEADERLIB_<NAME>`` (``kube-apiserver`` ->
    ``LEADERLIB_KUBE_APISERVER``), then the versioned binary in the cache
    (``etcd``, ``etcdctl``, ``kube-apiserver``, ``toxiproxy-server``,
    ``clientgo-elector``), then ``PATH`` (for Debian's
    ``redis-server`` and ``redis-cli``).
    """
    env = "LEADERLIB_" + name.upper().replace("-", "_")
    override = os.environ.get(env)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinaryNotFoundError(f"${env} is set to {override!r}, which is not an executable")
        return path
    version = _VERSIONS.get(name)
    if version is not None:
        path = cache_dir() / "bin" / f"{name}-{version}"
        if path.is_file() and os.access(path, os.X_OK):
            return path
        where = str(path)
    else:
        found = shutil.which(name)
        if found:
            return Path(found)
        where = f"{name} on PATH"
    raise BinaryNotFoundError(
        f"{name} not found ({where}); build or install it with `backends/install` "
        f"from the leaderlib repository, or point ${env} at a binary"
    )


# --------------------------------------------------------------------------- ports

_ports_lock = threading.Lock()
_ports_given: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it; the port is then closed and handed to a server, so
    another process could take it in between. Ports already handed out by
    this process are never handed out twice, which rules out the common case
    (two servers of one test session colliding).
    """
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port: int = sock.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise ServerError("no free loopback port found")


# --------------------------------------------------------------------------- processes


class _Killable(Protocol):
    def kill(self) -> Any: ...


_live: set[_Killable] = set()
_live_lock = threading.Lock()


def kill_at_exit(process: _Killable) -> None:
    """Kill ``process`` at interpreter exit unless :func:`forget_at_exit` is called first.

    One registry for every process leaderlib.testing starts (servers, the
    client-go elector), so a failing test leaves no orphans behind.
    """
    with _live_lock:
        _live.add(process)


def forget_at_exit(process: _Killable) -> None:
    """The process has ended: nothing to kill at exit."""
    with _live_lock:
        _live.discard(process)


def _kill_all_at_exit() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.kill()


atexit.register(_kill_all_at_exit)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread that started it exits.

    For a child to call on itself (as ``leaderlib._bench.child`` does); a
    server is started through :func:`dying_with_parent` instead.
    """
    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv``, run so that Linux SIGKILLs it when the starting thread exits (where it can).

    This covers what atexit cannot: the test runner being SIGKILLed. It is only
    done from the main thread, because the signal follows the *thread* that
    started the child, and a worker thread may end long before the test
    session does. ``setpriv --pdeathsig`` (util-linux) sets it and execs
    ``argv``; a ``preexec_fn`` cannot: it makes subprocess fork this
    multithreaded process (not vfork), and grpcio's fork handlers crash such a
    child before exec now and then (SIGSEGV, an empty log: etcd servers
    "exited with status -11" after the etcd tests' clients had run).
    """
    setpriv = shutil.which("setpriv")
    if (
        sys.platform != "linux"
        or setpriv is None
        or threading.current_thread() is not threading.main_thread()
    ):
        return list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


class _Process:
    """One server process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log.debug("starting %s: %s (log: %s)", name, " ".join(self.argv), log_path)
        with open(log_path, "ab") as out:
            self.popen = subprocess.Popen(
                dying_with_parent(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                # Own session = own process group, so stop() reaches any
                # child the server forks, and Ctrl-C in a terminal goes to the
                # test runner (which then tears down) rather than the servers.
                start_new_session=True,
            )
        kill_at_exit(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL it after ``timeout`` seconds; reap the process."""
        if self.running():
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, self.pid)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, not a shutdown) and reap it."""
        # The group may outlive its leader (a forked child), so signal it even
        # when the leader has already exited.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5.0)
        forget_at_exit(self)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


_T = TypeVar("_T")


def poll(
    what: str,
    probe: Callable[[], _T],
    timeout: float,
    *,
    procs: Sequence[_Process] = (),
    log_path: Path | None = None,
    error: type[ServerError] = ServerError,
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    interval: float = 0.5,
) -> _T:
    """Call ``probe`` until it returns something true; returns that.

    A false result, :class:`NotYet` or a ``transient`` error (a server that did
    not answer this time: reset, refused, closed, timed out) means "not yet":
    the probe is called again, 20 ms later at first, backing off to
    ``interval``. Any other exception propagates. After ``timeout`` seconds,
    or as soon as one of ``procs`` exits, raises ``error`` saying what was
    waited for ("waited 15 s for {what}"), the last :class:`NotYet` and the
    last transient error seen, and ``log_path``'s tail.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    seen = failure = ""
    while True:
        for proc in procs:
            if not proc.running():
                raise error(
                    f"{proc.name} exited with status {proc.popen.returncode} while waiting for {what}; "
                    f"log {proc.log_path}:\n{_tail(proc.log_path)}",
                    proc.log_path,
                )
        try:
            result = probe()
            if result:
                return result
        except NotYet as exc:
            seen = str(exc)
        except transient as exc:
            failure = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            message = f"waited {timeout:g} s for {what}"
            message += f"; last seen: {seen}" if seen else ""
            message += f"; last error: {failure or 'none'}"
            if log_path is not None:
                message += f"; log {log_path}:\n{_tail(log_path)}"
            raise error(message, log_path)
        time.sleep(delay)
        delay = min(delay * 1.5, interval)


def _wait_until(
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    procs: Sequence[_Process],
    log_path: Path,
) -> None:
    """:func:`poll` for a server's start: raises ServerStartError on an exit or the deadline
    (``ValueError``, a half-written health answer, counts as not yet too)."""
    poll(
        f"{what} to be ready",
        ready,
        timeout,
        procs=procs,
        log_path=log_path,
        error=ServerStartError,
        transient=(*TRANSIENT_ERRORS, ValueError),
    )


# --------------------------------------------------------------------------- base class


class _Server:
    """Lifecycle shared by every server: temp dir, start/ready, stop, context manager."""

    kind = "server"

    def __init__(self, *, directory: Path | None = None, start_timeout: float = 30.0) -> None:
        self._own_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix=f"leaderlib-{self.kind}-")) if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        """Seconds from spawning the process(es) to ready, once started."""
        self._started = False

    @property
    def log_path(self) -> Path:
        """The server's main log file (kept on failure, see :meth:`stop`)."""
        return self.directory / f"{self.kind}.log"

    def start(self) -> Self:
        """Start the server and wait until it is ready; returns self.

        On failure everything started is killed, the directory is kept, and
        :class:`ServerStartError` says why and where the log is.
        """
        if self._started:
            if self.running():
                return self
            # Something died on its own: reap what is left, then start afresh.
            self._kill_processes()
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            t0 = time.monotonic()
            try:
                self._start()
                break
            except BaseException as exc:
                self._kill_processes()
                # free_port() cannot reserve a port: another process (often an
                # outgoing connection's ephemeral port) may take it before the
                # server binds. That is worth another try on fresh ports.
                if (
                    isinstance(exc, ServerStartError)
                    and "address already in use" in str(exc).lower()
                    and attempt < _BIND_ATTEMPTS
                    and self._new_ports()
                ):
                    log.warning("%s: a port was taken before it could bind; retrying", self.kind)
                    continue
                if isinstance(exc, BinaryNotFoundError) and self._own_directory:
                    # Nothing ran, so there is no log worth keeping.
                    shutil.rmtree(self.directory, ignore_errors=True)
                else:
                    log.error("%s failed to start; files kept in %s", self.kind, self.directory)
                raise
        self.startup_seconds = time.monotonic() - t0
        self._started = True
        log.info("%s ready in %.2f s (%s)", self.kind, self.startup_seconds, self.directory)
        return self

    def running(self) -> bool:
        """True if the server was started and all its processes are still alive."""
        procs = self._processes()
        return self._started and bool(procs) and all(p.running() for p in procs)

    def stop(self, *, keep: bool = False) -> None:
        """Stop every process; remove the directory unless ``keep`` (logs for a failure)."""
        self._stop_processes()
        self._started = False
        if keep or not self._own_directory:
            log.info("%s stopped; files kept in %s", self.kind, self.directory)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(keep=exc is not None)

    def _new_ports(self) -> bool:
        """Pick fresh ports after a bind conflict; False if this server cannot."""
        return False

    # Subclasses implement these.
    def _start(self) -> None:
        raise NotImplementedError

    def _processes(self) -> list[_Process]:
        raise NotImplementedError

    def _stop_processes(self) -> None:
        for proc in self._processes():
            proc.stop()

    def _kill_processes(self) -> None:
        for proc in self._processes():
            proc.kill()


# --------------------------------------------------------------------------- Redis


@dataclass(frozen=True)
class RedisACLUser:
    """A Redis ACL user, written to the server's config as a ``user`` line.

    The default grants every command on keys matching ``key_patterns`` and on
    Pub/Sub channels matching ``channel_patterns``, which is what one
    election prefix needs (keys ``leaderlib:*``, release channel included).
    """

    name: str
    password: str
    key_patterns: tuple[str, ...] = ("*",)
    channel_patterns: tuple[str, ...] = ("*",)
    commands: str = "+@all"

    def acl_rule(self) -> str:
        """The ``ACL SETUSER``/config rule string for this user."""
        keys = " ".join(f"~{p}" for p in self.key_patterns)
        chans = " ".join(f"&{p}" for p in self.channel_patterns)
        return f"{self.name} on >{self.password} resetkeys {keys} resetchannels {chans} {self.commands}"


#: redis-cli's words (on stderr, exit status 1) for a server that did not answer.
_CLI_UNREACHABLE = re.compile(
    r"^(Could not connect to Redis at |Error: (Connection reset by peer|Server closed the connection"
    r"|Broken pipe|Connection refused|Connection timed out))",
    re.MULTILINE,
)

#: How long one probe of a :func:`poll` waits for a server's answer (a paused one never answers).
_PROBE_TIMEOUT = 5.0


def _info_fields(info: str, line: str) -> str:
    """The ``INFO`` field(s) named as ``line``'s is (``role:slave`` -> ``role:master``), else all of it."""
    name = line.partition(":")[0] + ":"
    fields = [field for field in info.splitlines() if field.startswith(name)]
    return ", ".join(fields) if fields else repr(info.strip())


class RedisServer(_Server):
    """A standalone ``redis-server`` on a free loopback port, no persistence.

    ``tls=True`` serves TLS only (``rediss://``) with certificates from a
    generated CA (:attr:`ca_file`); ``tls_client_auth=True`` also requires a
    client certificate (:attr:`client_cert`). ``acl_users`` adds ACL users;
    ``password`` protects the default user. ``config_lines`` are appended to
    the generated redis.conf and ``extra_args`` to the command line, for
    anything else.
    """

    kind = "redis"

    def __init__(
        self,
        *,
        tls: bool = False,
        tls_client_auth: bool = False,
        password: str | None = None,
        acl_users: Sequence[RedisACLUser] = (),
        config_lines: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        directory: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(directory=directory, start_timeout=start_timeout)
        self.tls = tls
        self.tls_client_auth = tls_client_auth
        self.password = password
        self.acl_users = tuple(acl_users)
        self.config_lines = tuple(config_lines)
        self.extra_args = tuple(extra_args)
        self.host = LOOPBACK
        self.port = free_port()
        self.ca_file: Path | None = None
        """CA certificate to verify the server with (TLS mode)."""
        self.client_cert: CertPair | None = None
        """A client certificate the server accepts (TLS mode)."""
        self._server_cert: CertPair | None = None
        self._proc: _Process | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` or ``rediss://...`` in TLS mode (default user's password included)."""
        return self.url_for(None, self.password)

    def url_for(self, username: str | None, password: str | None) -> str:
        """The server's URL with the given credentials (``None`` for none)."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if password is not None:
            auth = f"{username or ''}:{password}@"
        elif username is not None:
            auth = f"{username}@"
        return f"{scheme}://{auth}{self.host}:{self.port}"

    def _config(self) -> str:
        lines = [
            f"bind {LOOPBACK}",
            f"dir {self.directory}",
            "daemonize no",
            'logfile ""',
            # A test server: nothing survives it, so it must not spend time on disk.
            'save ""',
            "appendonly no",
        ]
        if self.tls:
            ca = CertificateAuthority(self.directory / "pki", "leaderlib redis test CA")
            self._server_cert = ca.issue("server", "localhost", server=True, hosts=(LOOPBACK, "localhost"))
            self.client_cert = ca.issue("client", "leaderlib-test-client", client=True)
            self.ca_file = ca.cert
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self._server_cert.cert}",
                f"tls-key-file {self._server_cert.key}",
                f"tls-ca-cert-file {ca.cert}",
                f"tls-auth-clients {'yes' if self.tls_client_auth else 'no'}",
            ]
        else:
            lines.append(f"port {self.port}")
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        lines += [f"user {user.acl_rule()}" for user in self.acl_users]
        lines += self.config_lines
        return "\n".join(lines) + "\n"

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.ca_file is not None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if self.client_cert is not None:
            ctx.load_cert_chain(str(self.client_cert.cert), str(self.client_cert.key))
        return ctx

    def _ping(self) -> bool:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((self.host, self.port), timeout=1.0))
            if self.tls:
                sock = stack.enter_context(self._ssl_context().wrap_socket(sock, server_hostname=self.host))
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
        # -NOAUTH: the server is up, it only wants a password first.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _new_ports(self) -> bool:
        self.port = free_port()
        return True

    def _start(self) -> None:
        conf = self.directory / "redis.conf"
        conf.write_text(self._config())
        self._proc = _Process(
            "redis-server",
            [str(find_binary("redis-server")), str(conf), *self.extra_args],
            self.log_path,
            self.directory,
        )
        _wait_until("redis-server", self._ping, self.start_timeout, [self._proc], self.log_path)

    def _processes(self) -> list[_Process]:
        return [self._proc] if self._proc is not None else []

    def redis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis(**kwargs)`` (TLS files and password included)."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.password is not None:
            kwargs["password"] = self.password
        if self.tls:
            kwargs["ssl"] = True
            kwargs["ssl_ca_certs"] = str(self.ca_file)
            if self.client_cert is not None:
                kwargs["ssl_certfile"] = str(self.client_cert.cert)
                kwargs["ssl_keyfile"] = str(self.client_cert.key)
        return kwargs

    def cli(
        self, *args: str, user: str | None = None, password: str | None = None, timeout: float = 30.0
    ) -> str:
        """Run ``redis-cli`` against the server; returns its output (raises on failure).

        Handy for admin steps at run time, e.g.
        ``server.cli("ACL", "SETUSER", *RedisACLUser(...).acl_rule().split())``.
        A server that did not answer (refused, reset or closed the connection,
        or nothing within ``timeout`` seconds: paused) raises :class:`ServerUnreachable`.
        """
        argv = [str(find_binary("redis-cli")), "-h", self.host, "-p", str(self.port)]
        if self.tls:
            argv += ["--tls", "--cacert", str(self.ca_file)]
            if self.client_cert is not None:
                argv += ["--cert", str(self.client_cert.cert), "--key", str(self.client_cert.key)]
        if user is not None:
            argv += ["--user", user]
        password = password if password is not None else (None if user else self.password)
        env = dict(os.environ)
        if password is not None:
            # REDISCLI_AUTH keeps the password off the command line (and the warning off stderr).
            env["REDISCLI_AUTH"] = password
        command = f"redis-cli {' '.join(args)} on port {self.port}"
        try:
            done = subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ServerUnreachable(f"{command}: no answer within {timeout:g} s", self.log_path) from exc
        if done.returncode != 0 and _CLI_UNREACHABLE.search(done.stderr):
            raise ServerUnreachable(f"{command}: {done.stderr.strip()}", self.log_path)
        if done.returncode != 0 or done.stdout.startswith(("ERR", "NOPERM", "WRONGPASS")):
            raise ServerError(f"redis-cli {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def check_info(self, line: str, section: str = "replication") -> str:
        """``INFO section`` if it has ``line`` (say ``role:master``), else :class:`NotYet`: a
        :func:`poll` probe (:class:`ServerUnreachable` without an answer in 5 s)."""
        text = self.cli("INFO", section, timeout=_PROBE_TIMEOUT)
        if line not in text.splitlines():
            raise NotYet(f"port {self.port} reports {_info_fields(text, line)}")
        return text

    def wait_for_info(self, line: str, section: str = "replication", timeout: float = 30.0) -> str:
        """Poll ``INFO section`` until it has ``line`` (say ``role:slave`` or
        ``master_link_status:up``); returns that INFO. A server that does not answer
        meanwhile (paused, resetting its clients) is asked again (:func:`poll`)."""
        return poll(
            f"{line} in port {self.port}'s INFO {section}",
            lambda: self.check_info(line, section),
            timeout,
            log_path=self.log_path,
        )


# --------------------------------------------------------------------------- etcd


class EtcdServer(_Server):
    """One etcd member: a single-member cluster by default, or one member of :class:`EtcdCluster`.

    ``unsafe_no_fsync`` (default True) skips fsync, which makes writes fast and
    is fine for functional tests; never use it where etcd latency is measured.
    ``tls=True`` serves clients over TLS with a generated CA
    (:attr:`ca_file`, :attr:`client_cert`); ``client_cert_auth=True`` then
    requires the client certificate. Auth (users, roles) is set up with
    :meth:`enable_auth` or raw :meth:`etcdctl` calls.
    """

    kind = "etcd"

    def __init__(
        self,
        *,
        unsafe_no_fsync: bool = True,
        tls: bool = False,
        client_cert_auth: bool = False,
        extra_args: Sequence[str] = (),
        directory: Path | None = None,
        start_timeout: float = 30.0,
        name: str = "default",
        initial_cluster: str | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
    ) -> None:
        super().__init__(directory=directory, start_timeout=start_timeout)
        self.unsafe_no_fsync = unsafe_no_fsync
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        self.extra_args = tuple(extra_args)
        self.name = name
        self.host = LOOPBACK
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        # A member of an EtcdCluster cannot move ports alone: its peers know them.
        self._standalone = initial_cluster is None
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.ca_file: Path | None = None
        """CA certificate to verify the server with (TLS mode)."""
        self.client_cert: CertPair | None = None
        """A client certificate the server accepts (TLS mode)."""
        self.root_password: str | None = None
        """The root user's password once :meth:`enable_auth` ran."""
        self._proc: _Process | None = None
        if tls:
            ca = CertificateAuthority(self.directory / "pki", "leaderlib etcd test CA")
            self._server_cert = ca.issue(
                "server", "localhost", server=True, client=True, hosts=(LOOPBACK, "localhost")
            )
            self.client_cert = ca.issue("client", "leaderlib-test-client", client=True)
            self.ca_file = ca.cert

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, the client endpoint."""
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        """``http(s)://127.0.0.1:PORT``, the client URL as etcd itself spells it."""
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def url(self) -> str:
        """The leaderlib backend URL: ``etcd://127.0.0.1:PORT`` (``etcds://`` with TLS)."""
        return f"{'etcds' if self.tls else 'etcd'}://{self.endpoint}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def _argv(self) -> list[str]:
        argv = [
            str(find_binary("etcd")),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=leaderlib-test",
            # No metrics/pprof listener: nothing else to collide on a port.
            "--listen-metrics-urls=",
            "--log-level=info",
        ]
        if self.unsafe_no_fsync:
            argv.append("--unsafe-no-fsync")
        if self.tls:
            assert self.ca_file is not None
            argv += [
                f"--cert-file={self._server_cert.cert}",
                f"--key-file={self._server_cert.key}",
                f"--trusted-ca-file={self.ca_file}",
            ]
            if self.client_cert_auth:
                argv.append("--client-cert-auth")
        return [*argv, *self.extra_args]

    def _new_ports(self) -> bool:
        if not self._standalone or self.startup_seconds is not None:
            return False
        self.client_port, self.peer_port = free_port(), free_port()
        self.initial_cluster = f"{self.name}={self.peer_url}"
        # The failed attempt may have begun a data dir naming the old peer URL.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return True

    def _spawn(self) -> None:
        self._proc = _Process(f"etcd {self.name}", self._argv(), self.log_path, self.directory)

    def healthy(self) -> bool:
        """True if this member answers ``/health`` with ``"health": "true"`` (it has a leader)."""
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            if self.client_cert is not None:
                context.load_cert_chain(str(self.client_cert.cert), str(self.client_cert.key))
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=2.0, context=context) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            # With auth enabled /health is 503 + "health": "false" only when
            # unhealthy; any other HTTP error means the server is up but busy.
            body = json.loads(exc.read() or b"{}")
        return bool(body.get("health") == "true")

    def _wait_ready(self, procs: Sequence[_Process]) -> None:
        _wait_until(f"etcd {self.name}", self.healthy, self.start_timeout, procs, self.log_path)

    def _start(self) -> None:
        self._spawn()
        assert self._proc is not None
        self._wait_ready([self._proc])

    def _processes(self) -> list[_Process]:
        return [self._proc] if self._proc is not None else []

    def kill(self) -> None:
        """SIGKILL this member (a crash); :meth:`start` brings it back on the same data."""
        self._kill_processes()
        self._started = False

    def etcdctl_argv(self, *, user: str | None = None, password: str | None = None) -> list[str]:
        """The ``etcdctl`` command line prefix for this server (endpoint, TLS, credentials)."""
        argv = [str(find_binary("etcdctl")), f"--endpoints={self.client_url}"]
        if self.tls:
            argv.append(f"--cacert={self.ca_file}")
            if self.client_cert is not None:
                argv += [f"--cert={self.client_cert.cert}", f"--key={self.client_cert.key}"]
        if user is None and self.root_password is not None:
            user, password = "root", self.root_password
        if user is not None:
            argv += [f"--user={user}", f"--password={password or ''}"]
        return argv

    def etcdctl(
        self, *args: str, user: str | None = None, password: str | None = None, timeout: float = 30
    ) -> str:
        """Run ``etcdctl ARGS`` against this server (as root once auth is on); returns stdout."""
        argv = [*self.etcdctl_argv(user=user, password=password), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ServerError(
                f"etcdctl {' '.join(args)} failed (exit {done.returncode}): {done.stdout}{done.stderr}"
            )
        return done.stdout

    def enable_auth(
        self,
        *,
        root_password: str | None = None,
        users: Sequence[tuple[str, str, str]] = (),
    ) -> str:
        """Create root, then one user + role per ``(user, password, key_prefix)``, then enable auth.

        Each user gets a role of its own name with readwrite on ``key_prefix``
        (a prefix grant, as an election prefix needs). Returns the root password;
        later :meth:`etcdctl` calls authenticate as root.
        """
        root_password = root_password or secrets.token_hex(8)
        self.etcdctl("user", "add", f"root:{root_password}")
        self.etcdctl("user", "grant-role", "root", "root")
        for user, password, prefix in users:
            self.etcdctl("role", "add", user)
            self.etcdctl("role", "grant-permission", user, "--prefix=true", "readwrite", prefix)
            self.etcdctl("user", "add", f"{user}:{password}")
            self.etcdctl("user", "grant-role", user, user)
        self.etcdctl("auth", "enable")
        self.root_password = root_password
        return root_password


class EtcdCluster(_Server):
    """A ``size``-member etcd cluster (default 3) on loopback, for member-loss tests.

    ``cluster.kill(i)`` crashes member ``i``; ``cluster.restart(i)`` brings it
    back on its own data. :attr:`url` lists every member's endpoint.
    """

    kind = "etcd-cluster"

    def __init__(
        self,
        size: int = 3,
        *,
        unsafe_no_fsync: bool = True,
        extra_args: Sequence[str] = (),
        directory: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(directory=directory, start_timeout=start_timeout)
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"member{i}=http://{LOOPBACK}:{peer}" for i, (_, peer) in enumerate(ports))
        self.members = [
            EtcdServer(
                name=f"member{i}",
                unsafe_no_fsync=unsafe_no_fsync,
                extra_args=extra_args,
                directory=self.directory / f"member{i}",
                start_timeout=start_timeout,
                initial_cluster=initial,
                client_port=client,
                peer_port=peer,
            )
            for i, (client, peer) in enumerate(ports)
        ]

    @property
    def endpoints(self) -> list[str]:
        """``127.0.0.1:PORT`` of every member, in member order."""
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """``etcd://127.0.0.1:P0,127.0.0.1:P1,127.0.0.1:P2``."""
        return "etcd://" + ",".join(self.endpoints)

    @property
    def log_path(self) -> Path:
        """Member 0's log; each member logs to ``member<i>/etcd.log``."""
        return self.members[0].log_path

    def _start(self) -> None:
        self._start_together(self.members)

    def _start_together(self, members: Sequence[EtcdServer]) -> None:
        # All members must run before any can be healthy: each waits for a quorum.
        for member in members:
            member._spawn()
        procs = [p for m in members for p in m._processes()]
        for member in members:
            member._wait_ready(procs)
        for member in members:
            member._started = True

    def _processes(self) -> list[_Process]:
        return [p for m in self.members for p in m._processes()]

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` (a crash, no clean shutdown)."""
        self.members[index].kill()

    def restart(self, index: int) -> None:
        """Start member ``index`` again on its data and wait until it is healthy."""
        self.members[index].start()

    def kill_all(self) -> None:
        """SIGKILL every member at once (the whole cluster crashes)."""
        for member in self.members:
            member.kill()

    def restart_all(self) -> None:
        """Start every stopped member again, all at once (one alone has no quorum), and
        wait until each is healthy."""
        self._start_together([m for m in self.members if not m.running()])

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running member reports a leader (e.g. after :meth:`kill`).

        A write sent while the cluster elects a new leader can time out; tests
        that write right after a kill should wait here first.
        """
        running = [m for m in self.members if m._started]
        procs = [p for m in running for p in m._processes()]
        for member in running:
            _wait_until(f"etcd {member.name}", member.healthy, timeout, procs, member.log_path)


# --------------------------------------------------------------------------- Kubernetes


class KubeAPIServer(_Server):
    """A real kube-apiserver with its own etcd, generated PKI, static tokens and RBAC.

    Users (static token file):

    * ``admin`` in group ``system:masters`` (:attr:`admin_kubeconfig`);
    * ``elector``, unprivileged except for a Role in :attr:`namespace` that
      allows exactly get/list/watch/create/update on ``leases``
      (:attr:`kubeconfig`).

    Ready means ``/readyz`` answers 200 to the admin token; then the namespace,
    Role and RoleBinding are created. No controller-manager or scheduler runs:
    objects are stored and served, nothing reconciles them.

    :attr:`elector_url` is the backend URL as ``elector``. :meth:`admin_request` calls the
    API as admin; :meth:`admin_get_lease` and :meth:`admin_put_lease` read and write a Lease
    as another program would (:meth:`lease_path` is its API path).

    :meth:`stop_apiserver` and :meth:`start_apiserver` (or :meth:`restart_apiserver`)
    take the API server alone down and up again on the same port, certificates,
    tokens and etcd, as a control-plane restart does: clients keep their
    kubeconfig and every object survives.
    """

    kind = "kube-apiserver"

    def __init__(
        self,
        *,
        namespace: str = "leaderlib-test",
        extra_args: Sequence[str] = (),
        directory: Path | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        super().__init__(directory=directory, start_timeout=start_timeout)
        self.namespace = namespace
        self.extra_args = tuple(extra_args)
        self.host = LOOPBACK
        self.port = free_port()
        self.admin_token = secrets.token_hex(16)
        self.elector_token = secrets.token_hex(16)
        self.etcd = EtcdServer(directory=self.directory / "etcd", start_timeout=30.0)
        self._proc: _Process | None = None
        self._apiserver_argv: list[str] = []
        self.ca_file = self.directory / "pki" / "ca.crt"
        """CA certificate that signed the serving certificate."""

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT``."""
        return f"https://{self.host}:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """Kubeconfig of the unprivileged ``elector`` user, namespace set."""
        return self.directory / "elector.kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        """Kubeconfig of ``admin`` (``system:masters``)."""
        return self.directory / "admin.kubeconfig"

    @property
    def backend_url(self) -> str:
        """The leaderlib backend URL: ``kubernetes://NAMESPACE``."""
        return f"kubernetes://{self.namespace}"

    @property
    def elector_url(self) -> str:
        """The backend URL as the ``elector`` user: ``kubernetes://NAMESPACE?kubeconfig=PATH``."""
        return f"{self.backend_url}?kubeconfig={self.kubeconfig}"

    def _write_pki(self) -> tuple[CertPair, CertPair]:
        ca = CertificateAuthority(self.directory / "pki", "leaderlib kube test CA")
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            # 10.0.0.1 is the first address of --service-cluster-ip-range: the
            # in-cluster "kubernetes" service, which the server adds itself.
            hosts=(
                "localhost",
                LOOPBACK,
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ),
        )
        return serving, rsa_key_pair(self.directory / "pki", "service-account")

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        # JSON is YAML: every kubeconfig reader (kubectl, client-go, the Python
        # client) accepts it, and json.dumps quotes everything correctly.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "leaderlib-test",
                    "cluster": {"server": self.url, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": user,
                    "context": {
                        "cluster": "leaderlib-test",
                        "user": user,
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": user,
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)

    def _argv(self, serving: CertPair, sa: CertPair, tokens: Path) -> list[str]:
        return [
            str(find_binary("kube-apiserver")),
            f"--etcd-servers={self.etcd.client_url}",
            # The etcd is private to this server; a prefix keeps keys tidy for debugging.
            "--etcd-prefix=/registry",
            f"--secure-port={self.port}",
            # Loopback only; without --advertise-address it looks for a default
            # route and fails on a machine without one.
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--cert-dir={self.directory / 'pki'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            # The "kubernetes" service endpoints would point at 127.0.0.1, which
            # the Endpoints validation rejects (loopback); nothing here needs them.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            *self.extra_args,
        ]

    def _request(
        self, method: str, path: str, token: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One API call; returns (HTTP status, decoded JSON body)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10.0, context=context) as resp:
                raw: bytes = resp.read()
                status: int = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"raw": raw.decode(errors="replace")}
        return status, decoded if isinstance(decoded, dict) else {"value": decoded}

    def admin_request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call the API as admin; returns the JSON body, raises ServerError unless 2xx."""
        status, result = self._request(method, path, self.admin_token, body)
        if not 200 <= status < 300:
            raise ServerError(f"{method} {path} -> {status}: {result}", self.log_path)
        return result

    def lease_path(self, name: str | None = None, *, namespace: str | None = None) -> str:
        """The API path of the Leases in ``namespace`` (default :attr:`namespace`), or of Lease ``name``."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace or self.namespace}/leases"
        return path if name is None else f"{path}/{name}"

    def admin_get_lease(self, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        """Lease ``name`` as admin reads it (the whole object); raises ServerError unless it exists."""
        return self.admin_request("GET", self.lease_path(name, namespace=namespace))

    def admin_put_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        """Create ``lease`` as admin (its ``metadata`` names it and its namespace), or replace
        the Lease of that name whatever its version, as another program would; returns the
        object stored."""
        name, namespace = lease["metadata"]["name"], lease["metadata"]["namespace"]
        status, current = self._request("GET", self.lease_path(name, namespace=namespace), self.admin_token)
        if status == 404:
            return self.admin_request("POST", self.lease_path(namespace=namespace), lease)
        version = current["metadata"]["resourceVersion"]
        lease = {**lease, "metadata": {**lease["metadata"], "resourceVersion": version}}
        return self.admin_request("PUT", self.lease_path(name, namespace=namespace), lease)

    def _ready(self) -> bool:
        status, _ = self._request("GET", "/readyz", self.admin_token)
        return status == 200

    def _setup_rbac(self) -> None:
        ns = self.namespace
        self.admin_request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        self.admin_request(
            "POST",
            f"{rbac}/namespaces/{ns}/roles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "leaderlib-elector", "namespace": ns},
                "rules": [
                    {
                        "apiGroups": ["coordination.k8s.io"],
                        "resources": ["leases"],
                        "verbs": ["get", "list", "watch", "create", "update"],
                    }
                ],
            },
        )
        self.admin_request(
            "POST",
            f"{rbac}/namespaces/{ns}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "leaderlib-elector", "namespace": ns},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "leaderlib-elector",
                },
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "elector"}],
            },
        )

    def _new_ports(self) -> bool:
        self.port = free_port()
        return True

    def _start(self) -> None:
        find_binary("kube-apiserver")  # fail fast, before etcd starts
        serving, sa = self._write_pki()
        tokens = self.directory / "tokens.csv"
        # token,user,uid,"group1,group2"; elector gets only system:authenticated (implicit).
        tokens.write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n{self.elector_token},elector,elector\n'
        )
        tokens.chmod(0o600)
        self._apiserver_argv = self._argv(serving, sa, tokens)
        self.etcd.start()
        self._spawn_apiserver()
        self._write_kubeconfig(self.admin_kubeconfig, "admin", self.admin_token)
        self._write_kubeconfig(self.kubeconfig, "elector", self.elector_token)
        self._setup_rbac()

    def _spawn_apiserver(self, *, wait: bool = True) -> None:
        self._proc = _Process("kube-apiserver", self._apiserver_argv, self.log_path, self.directory)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the API server answers ``/readyz``; ServerStartError if it exits or times out."""
        procs = [self._proc] if self._proc is not None else []
        _wait_until("kube-apiserver", self._ready, timeout or self.start_timeout, procs, self.log_path)

    def stop_apiserver(self, *, kill: bool = False) -> None:
        """Stop the API server alone (SIGTERM, or SIGKILL if ``kill``); etcd and all files stay."""
        if self._proc is not None:
            if kill:
                self._proc.kill()
            else:
                self._proc.stop()

    def start_apiserver(self, *, wait: bool = True, warm_up: float = 0.0) -> float:
        """Start the stopped API server again as it was (port, PKI, tokens, etcd; RBAC is
        in etcd already); unless ``wait`` is false, wait until it is ready (:meth:`wait_ready`).

        Returns the seconds that took. Until it is ready the server may
        already answer, refusing every user but admin (403) while its RBAC
        authorizer fills its cache from etcd. That lasts some 20 ms here but
        seconds on a loaded machine; ``warm_up`` makes it last that many
        seconds: when the server first refuses the ``elector`` user, etcd is
        frozen (SIGSTOP) for ``warm_up`` seconds so the cache cannot fill,
        then continued. Requests that need etcd (any admin call) hang
        meanwhile.
        """
        if not self._started:
            raise ServerError("start() the kube-apiserver before restarting it", self.log_path)
        if self._proc is not None and self._proc.running():
            raise ServerError("the kube-apiserver is running; stop_apiserver() first", self.log_path)
        started = time.monotonic()
        self._spawn_apiserver(wait=wait and not warm_up)
        if warm_up:
            self._hold_warm_up(warm_up)
            if wait:
                self.wait_ready()
        return time.monotonic() - started

    def _hold_warm_up(self, seconds: float) -> None:
        """Freeze etcd for ``seconds`` from the server's first 403 to the ``elector`` user."""
        assert self._proc is not None
        etcd = self.etcd._proc
        assert etcd is not None
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        deadline = time.monotonic() + self.start_timeout
        # Polled every few ms, not with _wait_until's backoff: the window is short.
        while True:
            if not self._proc.running() or time.monotonic() > deadline:
                raise ServerStartError(
                    f"kube-apiserver never refused the elector while warming up; log {self.log_path}:\n"
                    f"{_tail(self.log_path)}",
                    self.log_path,
                )
            try:
                status, _ = self._request("GET", leases, self.elector_token)
            except (OSError, ssl.SSLError):
                time.sleep(0.002)  # not serving yet
                continue
            if status == 403:
                break
            raise ServerError(f"the restarted kube-apiserver answered {status} before any 403", self.log_path)
        etcd._signal_group(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            etcd._signal_group(signal.SIGCONT)

    def restart_apiserver(self, *, kill: bool = False, down_for: float = 0.0, warm_up: float = 0.0) -> float:
        """:meth:`stop_apiserver`, wait ``down_for`` seconds, :meth:`start_apiserver` (which
        see for ``warm_up``) and wait until ready; returns the start's seconds."""
        self.stop_apiserver(kill=kill)
        time.sleep(down_for)
        return self.start_apiserver(warm_up=warm_up)

    def _processes(self) -> list[_Process]:
        own = [self._proc] if self._proc is not None else []
        # The API server first, then its storage.
        return [*own, *self.etcd._processes()]

    def version(self) -> dict[str, Any]:
        """The server's ``/version`` document."""
        return self.admin_request("GET", "/version")

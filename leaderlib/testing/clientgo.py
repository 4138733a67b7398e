"""A real client-go leader elector as a child process, for mixed elections on one Lease.

``backends/clientgo-elector`` is a small Go program around client-go's
``tools/leaderelection`` with a ``resourcelock.LeaseLock`` (built by
``backends/install clientgo-elector``). :class:`ClientGoElector` runs it and
parses the JSON line it prints per event:

    with ClientGoElector(kube.kubeconfig, kube.namespace, "jobs", "go-1",
                         lease_duration=3, renew_deadline=2, retry_period=0.5) as go:
        started = go.wait_for("started_leading", timeout=10)
        go.terminate()                       # SIGTERM: client-go releases the Lease

Each :class:`ElectorEvent` carries the elector's own ``CLOCK_MONOTONIC``
(``monotonic``, the clock of Python's ``time.monotonic()``) and
``CLOCK_BOOTTIME`` (``boottime``) readings, so its terms compare directly with
leaderlib replicas' stamps on the same host. Events:

=================  ==============================================================
``new_leader``     client-go observed a new holder (``leader``; may be itself)
``started_leading``  OnStartedLeading ran: its work may start
``stopped_leading``  the work context was cancelled (``reason``: ``signal`` or
                   ``lost``); with ReleaseOnCancel client-go cancels it only
                   after its release attempt, which after a failed renewal can
                   take up to ``renew_deadline`` more
``released``       the Lease was written with an empty holder
=================  ==============================================================

Exit statuses: 0 after SIGTERM/SIGINT, 3 when leadership was lost without a
signal (as client-go programs exit), 2 for bad flags or configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from leaderlib.testing.servers import (
    CLIENTGO_VERSION,
    _tail,
    dying_with_parent,
    find_binary,
    forget_at_exit,
    kill_at_exit,
)

__all__ = ["CLIENTGO_VERSION", "ClientGoElector", "ElectorEvent", "ElectorExited"]

log = logging.getLogger("leaderlib.testing")

EXIT_LOST = 3
"""The elector's exit status when it lost leadership without being signalled."""


class ElectorExited(RuntimeError):
    """The elector process ended (or a wait timed out) before the awaited event."""


@dataclass(frozen=True)
class ElectorEvent:
    """One event line of the elector; clocks in seconds, read by the elector itself."""

    event: str
    identity: str
    leader: str
    monotonic: float
    """CLOCK_MONOTONIC (Python's ``time.monotonic()``)."""
    boottime: float
    """CLOCK_BOOTTIME (``time.clock_gettime(time.CLOCK_BOOTTIME)``)."""
    wall: float
    """Unix time."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other fields (``reason`` on ``stopped_leading``)."""

    @classmethod
    def parse(cls, line: str) -> ElectorEvent:
        """Decode one JSON event line; raises ValueError/KeyError on anything else."""
        data = json.loads(line)
        known = {k: data.pop(k) for k in ("event", "identity", "leader", "monotonic", "boottime", "wall")}
        return cls(
            event=str(known["event"]),
            identity=str(known["identity"]),
            leader=str(known["leader"]),
            monotonic=float(known["monotonic"]),
            boottime=float(known["boottime"]),
            wall=float(known["wall"]),
            extra=data,
        )


def _seconds(value: float) -> str:
    # Float seconds are a form the Go flag accepts; repr keeps full precision.
    return repr(float(value))


class ClientGoElector:
    """``clientgo-elector`` campaigning for Lease ``namespace/name`` as ``identity``.

    A context manager: ``__enter__`` starts the process (in its own process
    group, SIGKILLed at interpreter exit if still alive); ``__exit__``
    terminates it (SIGTERM, SIGKILL after ``stop_timeout``). Its stderr
    (client-go's klog) goes to :attr:`log_path`; its stdout is read by a
    thread into :attr:`events`.
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str],
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        *,
        release_on_cancel: bool = True,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self.extra_args = tuple(extra_args)
        self.stop_timeout = stop_timeout
        if log_path is None:
            fd, raw = tempfile.mkstemp(
                prefix=f"leaderlib-clientgo-{identity.replace('/', '_')}-", suffix=".log"
            )
            os.close(fd)
            log_path = Path(raw)
        self.log_path = log_path
        """client-go's log (stderr); kept after exit for inspection."""
        self._popen: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._events: list[ElectorEvent] = []
        self._stray: list[str] = []
        self._eof = False
        self._cond = threading.Condition()

    # ------------------------------------------------------------ lifecycle

    def argv(self) -> list[str]:
        """The command line :meth:`start` runs."""
        return [
            str(find_binary("clientgo-elector")),
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
            f"--name={self.name}",
            f"--identity={self.identity}",
            f"--lease-duration={_seconds(self.lease_duration)}",
            f"--renew-deadline={_seconds(self.renew_deadline)}",
            f"--retry-period={_seconds(self.retry_period)}",
            f"--release-on-cancel={'true' if self.release_on_cancel else 'false'}",
            *self.extra_args,
        ]

    def start(self) -> Self:
        """Start the process (it campaigns at once); returns self. Raises BinaryNotFoundError if unbuilt."""
        if self._popen is not None:
            raise RuntimeError(f"clientgo-elector {self.identity} was already started")
        argv = self.argv()
        with open(self.log_path, "ab") as err:
            self._popen = subprocess.Popen(
                dying_with_parent(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                # Own process group: signals from a terminal's Ctrl-C reach the
                # test runner only, and kill() reaches the whole group.
                start_new_session=True,
            )
        kill_at_exit(self)
        assert self._popen.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self._popen.stdout,), name=f"clientgo-{self.identity}", daemon=True
        )
        self._reader.start()
        log.debug("started clientgo-elector %s: %s (log: %s)", self.identity, " ".join(argv), self.log_path)
        return self

    def _read(self, stdout: IO[bytes]) -> None:
        # The reader owns the pipe: it reads until the process closes it
        # (exit), then closes our end.
        with stdout:
            for raw in stdout:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                try:
                    event = ElectorEvent.parse(line)
                except (ValueError, KeyError, TypeError):
                    log.warning("clientgo-elector %s printed a non-event line: %r", self.identity, line)
                    with self._cond:
                        self._stray.append(line)
                    continue
                log.debug("clientgo-elector %s: %s (leader %r)", self.identity, event.event, event.leader)
                with self._cond:
                    self._events.append(event)
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate(self.stop_timeout)

    @property
    def pid(self) -> int:
        """The process id (the elector was started)."""
        if self._popen is None:
            raise RuntimeError(f"clientgo-elector {self.identity} was not started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited, else None (negative: killed by that signal)."""
        return None if self._popen is None else self._popen.poll()

    def running(self) -> bool:
        """True while the process exists (a SIGSTOPped one counts as running)."""
        return self._popen is not None and self._popen.poll() is None

    def _signal(self, sig: signal.Signals) -> None:
        if self._popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, sig)

    def _finish(self, timeout: float) -> int:
        """Wait for the exit and for the reader to drain stdout; returns the exit status."""
        assert self._popen is not None
        status = self._popen.wait(timeout)
        if self._reader is not None:
            self._reader.join(5.0)
        forget_at_exit(self)
        return status

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM (client-go cancels its context and releases); SIGKILL after ``timeout`` s.

        Returns the exit status: 0 for a clean stop, -9 if it had to be killed.
        A stopped (SIGSTOP) process is continued first so it can act on SIGTERM.
        """
        if self._popen is None:
            return 0
        if self.running():
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)
            try:
                return self._finish(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "clientgo-elector %s ignored SIGTERM for %.0f s; killing it", self.identity, timeout
                )
        return self.kill()

    def kill(self) -> int:
        """SIGKILL the process group at once (a crash: no release); returns the exit status."""
        if self._popen is None:
            return 0
        self._signal(signal.SIGKILL)
        try:
            return self._finish(5.0)
        except subprocess.TimeoutExpired:
            log.error("clientgo-elector %s (pid %d) survived SIGKILL", self.identity, self._popen.pid)
            return -int(signal.SIGKILL)

    def stop_process(self) -> None:
        """SIGSTOP the process: client-go freezes mid-term, as under a GC pause or VM freeze."""
        self._signal(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT a process stopped by :meth:`stop_process`."""
        self._signal(signal.SIGCONT)

    # ------------------------------------------------------------ events

    @property
    def events(self) -> list[ElectorEvent]:
        """A copy of every event read so far, in order."""
        with self._cond:
            return list(self._events)

    def wait_for(
        self,
        event: str,
        timeout: float,
        *,
        after: int = 0,
        leader: str | None = None,
    ) -> ElectorEvent:
        """Return the first ``event`` at index ``>= after`` in :attr:`events` (and, if given, for ``leader``).

        Waits up to ``timeout`` seconds for it; raises :class:`ElectorExited`
        (with the log's tail) if the process ends without it or time runs out.
        Pass ``after=len(elector.events)`` to wait for a new one.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for found in self._events[after:]:
                    if found.event == event and (leader is None or found.leader == leader):
                        return found
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        why = "exited" if self._eof else f"did not report it within {timeout:.1f} s"
        seen = [e.event for e in self.events]
        raise ElectorExited(
            f"clientgo-elector {self.identity} {why} (waiting for {event!r}, status "
            f"{self.returncode}, events {seen}); log {self.log_path}:\n{_tail(self.log_path)}"
        )

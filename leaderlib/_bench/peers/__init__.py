"""The subjects a run compares: leaderlib and the libraries people would use instead.

Each :class:`Peer` measures itself the same way: ``acquire_samples`` (an
uncontended election from start to leading, on a warm client),
``renew_samples`` (one heartbeat), ``campaign`` (a candidate that runs until
cancelled, emitting ``leading`` and ``renew`` events; cancelling it is a
graceful stop), and ``spawn`` (the same campaign in a child process, for
handover and failover). Where a peer cannot take part in a scenario,
``unsupported`` says why; the report shows that row as "n/a (why)".
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import ClassVar

from ..stores import Target

__all__ = ["BENCH_TIMING", "PEERS", "Candidate", "Emit", "Peer", "PythonCandidate", "Timing", "peers_for"]

Emit = Callable[[str], None]
"""Report an event (``leading``, ``renew``, ``started``); the receiver stamps ``time.monotonic()``."""


@dataclasses.dataclass(frozen=True)
class Timing:
    """Election timing, seconds. ``BENCH_TIMING`` is what handover, failover and load use,
    for leaderlib and (as "matched") for the peers: a short lease keeps failover runs short."""

    lease: float = 3.0
    renew_deadline: float = 2.0
    renew_interval: float = 1.0
    retry: float = 2.0


BENCH_TIMING = Timing()


class Candidate:
    """A candidate running in a child process; its events carry CLOCK_MONOTONIC stamps."""

    identity: str

    def stamps(self, event: str) -> list[float]:
        raise NotImplementedError

    def wait(self, event: str, timeout: float, *, after: float = 0.0) -> float | None:
        """The first ``event`` stamped after ``after``, waiting up to ``timeout`` s; None if none came."""
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in self.stamps(event) if s > after]
            if found:
                return found[0]
            if time.monotonic() >= deadline or not self.running():
                return None
            time.sleep(0.0005)

    def running(self) -> bool:
        raise NotImplementedError

    def terminate(self) -> None:
        """SIGTERM: a graceful stop (the candidate releases if it can)."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL: a crash."""
        raise NotImplementedError

    def close(self, timeout: float = 5.0) -> None:
        """End the process (SIGTERM, then SIGKILL after ``timeout``) and reap it."""
        raise NotImplementedError


class PythonCandidate(Candidate):
    """``python -m leaderlib._bench.child PEER TARGET ELECTION IDENTITY`` and its event lines."""

    _live: ClassVar[set[PythonCandidate]] = set()

    def __init__(self, peer: str, target: Target, election: str, identity: str) -> None:
        self.identity = identity
        # The child asks to die with this process itself (leaderlib._bench.child).
        argv = [sys.executable, "-m", "leaderlib._bench.child", peer, target.to_json(), election, identity]
        self._popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self._events: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"bench-child-{identity}")
        self._reader.start()
        PythonCandidate._live.add(self)

    def _read(self) -> None:
        assert self._popen.stdout is not None
        with self._popen.stdout as stdout:
            for line in stdout:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    data = json.loads(line)
                    with self._lock:
                        self._events.append((str(data["event"]), float(data["mono"])))

    def stamps(self, event: str) -> list[float]:
        with self._lock:
            return [mono for name, mono in self._events if name == event]

    def running(self) -> bool:
        return self._popen.poll() is None

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def close(self, timeout: float = 5.0) -> None:
        if self.running():
            self.terminate()
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()  # the whole group, should the child have left anything behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(5.0)
        self._reader.join(2.0)
        PythonCandidate._live.discard(self)


@atexit.register
def _kill_all_at_exit() -> None:
    for candidate in list(PythonCandidate._live):
        candidate.kill()


class Peer:
    """One subject on one store. Subclasses set the class attributes and the methods they support."""

    key: ClassVar[str]
    """Its ``--peer`` name."""
    subject: ClassVar[str]
    """Its name in the report."""
    settings: ClassVar[str] = ""
    """What timing it runs with, and whether those are its documented defaults."""
    timing: ClassVar[Timing] = BENCH_TIMING
    unsupported: ClassVar[dict[str, str]] = {}
    """Scenario -> why it does not apply."""

    def __init__(self, store: str) -> None:
        self.store = store

    async def acquire_samples(self, target: Target, n: int) -> list[float]:
        """Seconds from start to leading, each on a fresh election, uncontended."""
        raise NotImplementedError

    async def renew_samples(self, target: Target, n: int) -> list[float]:
        """Seconds per heartbeat of a held election."""
        raise NotImplementedError

    async def campaign(self, target: Target, election: str, identity: str, emit: Emit) -> None:
        """Campaign (and lead) until cancelled; cancellation is a graceful stop."""
        raise NotImplementedError

    def spawn(self, target: Target, election: str, identity: str) -> Candidate:
        """The campaign in a child process."""
        return PythonCandidate(self.key, target, election, identity)

    def last_renewal(self, target: Target, election: str, killed: Candidate) -> float | None:
        """CLOCK_MONOTONIC time the killed leader last sent a renewal (or acquired)."""
        sent = killed.stamps("renew") + killed.stamps("leading")
        return max(sent) if sent else None


async def in_thread_until_cancelled(loop_body: Callable[[threading.Event], None]) -> None:
    """Run a blocking candidate loop in a thread; on cancellation set its stop event and join it."""
    stop = threading.Event()
    thread = threading.Thread(target=loop_body, args=(stop,), daemon=True, name="bench-peer")
    thread.start()
    try:
        while thread.is_alive():
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10.0)


#: ``--peer`` name -> "module:class", imported only when used (each peer has its own driver).
PEERS = {
    "leaderlib": "leaderlib:LeaderlibPeer",
    "redis-lock": "redis_lock:RedisLockPeer",
    "tooz": "tooz_redis:ToozPeer",
    "aetcd-lock": "aetcd_lock:AetcdLockPeer",
    "client-go": "clientgo:ClientGoPeer",
    "client-go-matched": "clientgo:ClientGoMatchedPeer",
    "kubernetes-leaselock": "kube_python:KubeLeaseLockPeer",
    "kubernetes-aio-leaselock": "kube_python:KubeAioLeaseLockPeer",
}

#: Which peers run on which store.
STORE_PEERS = {
    "sqlite": ["leaderlib"],
    "redis": ["leaderlib", "redis-lock", "tooz"],
    "etcd": ["leaderlib", "aetcd-lock"],
    "kubernetes": [
        "leaderlib", "client-go", "client-go-matched", "kubernetes-leaselock", "kubernetes-aio-leaselock",
    ],
}  # fmt: skip


def load_peer(key: str, store: str) -> Peer:
    """Import and make the peer named ``key`` (for ``store``: leaderlib runs on every store)."""
    module_name, _, class_name = PEERS[key].partition(":")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        raise ImportError(
            f"the {key} peer needs {exc.name or exc}; install it with: pip install 'leaderlib[bench]'"
        ) from exc
    peer: Peer = getattr(module, class_name)(store)
    return peer


def peers_for(store: str, selected: list[str] | None = None) -> list[str]:
    """The ``--peer`` names that run on ``store`` (all, or those in ``selected``)."""
    return [key for key in STORE_PEERS[store] if not selected or key in selected]

"""SIGTERM while a sync job runs, two replica processes on SQLite (item 7 of issue 9).

A sync run lives in a thread that nothing can cancel, so a graceful stop must
keep the lease until that thread has returned: otherwise the standby takes
over and runs the same job while the old run still acts. A run that never
returns must not keep the lease released under it, nor the process alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from .conftest import SHORT_LEASES

ROOT = Path(__file__).resolve().parents[2]
RENEW_DEADLINE = float(SHORT_LEASES["LEADERLIB_RENEW_DEADLINE"])


class Replica:
    """One ``leaderlib run`` process; its JSON log lines are collected as they come."""

    def __init__(self, identity: str, url: str, ledger: Path, **env: str) -> None:
        environment = {
            **os.environ,
            **SHORT_LEASES,
            "LEADERLIB_IDENTITY": identity,
            "SHUTDOWN_TEST_LEDGER": str(ledger),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        command = [sys.executable, "-m", "leaderlib", "run", "tests.integration.shutdown_service:service"]
        command += ["--backend", url, "--log-format", "json"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.logs: list[dict[str, Any]] = []
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                try:
                    self.logs.append(json.loads(line))
                except ValueError:
                    self.logs.append({"message": line.rstrip(), "time": time.time(), "level": "RAW"})

    def logged(self, message: str) -> list[dict[str, Any]]:
        return [entry for entry in list(self.logs) if entry.get("message") == message]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)


def runs(ledger: Path) -> list[tuple[int, float, float]]:
    """(pid, started, ended) per run in the ledger; a run still going ends at +inf."""
    open_runs: dict[int, float] = {}
    done: list[tuple[int, float, float]] = []
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            event, pid, _token, at = line.split()
            if event == "start":
                open_runs[int(pid)] = float(at)
            else:
                done.append((int(pid), open_runs.pop(int(pid)), float(at)))
    return done + [(pid, started, float("inf")) for pid, started in open_runs.items()]


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[..., tuple[Replica, Replica, Path]]]:
    started: list[Replica] = []
    url = f"sqlite:///{(tmp_path / 'leases.sqlite3').as_posix().lstrip('/')}"
    ledger = tmp_path / "ledger"

    def start(**env: str) -> tuple[Replica, Replica, Path]:
        for identity in ("replica-a", "replica-b"):
            started.append(Replica(identity, url, ledger, **env))
        return started[0], started[1], ledger

    yield start
    for replica in started:
        replica.kill()


def leader_of(first: Replica, second: Replica, ledger: Path) -> tuple[Replica, Replica, float]:
    """Wait for the first run; return (leader, standby, when that run started)."""
    pid, started, _ = until(lambda: runs(ledger)[:1], 30, "a first run")[0]
    leader, standby = (first, second) if pid == first.process.pid else (second, first)
    return leader, standby, started


@pytest.mark.slow
def test_a_sync_run_at_sigterm_never_overlaps_the_next_leaders_run(
    replicas: Callable[..., tuple[Replica, Replica, Path]],
) -> None:
    first, second, ledger = replicas(SHUTDOWN_TEST_RUN="2.5", LEADERLIB_SHUTDOWN_GRACE="5")
    leader, standby, started = leader_of(first, second, ledger)
    time.sleep(max(0.0, started + 0.3 - time.monotonic()))  # 0.3 s into a 2.5 s run
    leader.process.send_signal(signal.SIGTERM)

    until(lambda: [r for r in runs(ledger) if r[0] == standby.process.pid], 15, "the standby's first run")
    assert leader.process.wait(timeout=10) == 0
    ledgered = runs(ledger)
    overlaps = [
        (a, b) for a in ledgered for b in ledgered if a[0] != b[0] and max(a[1], b[1]) < min(a[2], b[2])
    ]
    assert overlaps == [], f"runs of two replicas overlapped: {ledgered}"
    # Its run ended within the grace, so it released rather than letting the lease expire.
    assert all(end < float("inf") for pid, _, end in ledgered if pid == leader.process.pid)
    assert len(leader.logged("released lease")) == 1


@pytest.mark.slow
def test_a_hung_sync_run_at_sigterm_is_reported_the_lease_expires_and_the_process_exits(
    replicas: Callable[..., tuple[Replica, Replica, Path]],
) -> None:
    grace = 1.0
    first, second, ledger = replicas(SHUTDOWN_TEST_RUN="hang", LEADERLIB_SHUTDOWN_GRACE=str(grace))
    leader, standby, _ = leader_of(first, second, ledger)
    signalled = time.time()
    leader.process.send_signal(signal.SIGTERM)

    # It exits by itself: the grace, then what is left of its term, then the interpreter's exit.
    code = leader.process.wait(timeout=grace + RENEW_DEADLINE + 3)
    exited = time.time()
    assert exited - signalled < grace + RENEW_DEADLINE + 2
    assert code == 1  # a run was abandoned: not a clean stop
    [report] = leader.logged("sync job run still going after the shutdown grace")
    assert report["level"] == "ERROR" and report["job"] == "slow"
    assert leader.logged("released lease") == []

    # The lease was left to expire, not released under the hung run: the standby
    # leads only once the stopped leader's term is over.
    until(lambda: standby.logged("became leader"), 15, "the standby to lead")
    [became] = standby.logged("became leader")
    assert became["time"] - signalled >= grace + 1.0, became["time"] - signalled

"""Ticks survive failovers on every real store: ``misfire_grace`` and the run record.

Three replica processes run a 1-second job with ``misfire_grace=5``
(``tick_service.py``); each run appends a line to a ledger file. The leader is
SIGKILLed again and again (at half past a second, away from a tick), so each
failover leaves a gap of about a lease (2 s) without a leader. From the
ledger: every tick from the first to the last ran exactly once, none missed,
none twice, and the ticks of each gap ran late under the new leader's token.
Then a leader's wall clock is stepped ahead (with the campaign's clock shim)
before it is killed: the next leader never runs again a tick it ran early.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.replicas import Replica, build_shim

from .conftest import LEASE

KILLS = 3


class TickReplica(Replica):
    target = "tests.integration.tick_service:service"


class Cluster:
    def __init__(self, url: str, directory: Path) -> None:
        self.ledger = directory / "ledger.jsonl"
        shim = build_shim()
        env = {"TICKS_LEDGER": str(self.ledger)}
        self.replicas = [TickReplica(slot, url, directory, env, shim) for slot in range(3)]

    def runs(self) -> list[dict[str, object]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line]

    def leader(self) -> tuple[TickReplica, int]:
        """The replica that ran the latest tick, and its token."""
        last = self.runs()[-1]
        slot = int(str(last["replica"])[1:])
        return self.replicas[slot], int(str(last["token"]))

    def stop(self) -> None:
        for replica in self.replicas:
            replica.signal(signal.SIGTERM)
        for replica in self.replicas:
            if replica.process is not None:
                try:
                    replica.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    replica.kill()


@pytest.fixture
def cluster(store_url: str, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(store_url, tmp_path)
    for replica in made.replicas:
        replica.spawn()
    try:
        yield made
    finally:
        made.stop()
        for replica in made.replicas:
            replica.kill()


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def at_half_past_a_second() -> None:
    """Sleep until the wall clock reads x.5 s: a kill then lands between two ticks."""
    time.sleep((0.5 - time.time() % 1.0) % 1.0)


def kill_the_leader(cluster: Cluster) -> int:
    """SIGKILL the leader between two ticks, wait for the next term; the killed token."""
    at_half_past_a_second()
    victim, token = cluster.leader()
    victim.kill()
    until(
        lambda: any(int(str(run["token"])) > token for run in cluster.runs()),
        LEASE + 8,
        f"a new leader after killing {victim.name} (token {token})",
    )
    victim.spawn()  # back as a standby
    return token


def ticks_of(runs: list[dict[str, object]]) -> list[dt.datetime]:
    return [dt.datetime.fromisoformat(str(run["tick"])) for run in runs]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_every_tick_runs_exactly_once_across_repeated_kills(cluster: Cluster) -> None:
    until(lambda: len(cluster.runs()) >= 2, 30, "the first leader's runs")
    killed = []
    for _ in range(KILLS):
        time.sleep(2.0)  # some runs of this leader first
        killed.append(kill_the_leader(cluster))
    time.sleep(2.0)
    cluster.stop()

    runs = cluster.runs()
    ticks = ticks_of(runs)
    twice = [tick for tick, count in Counter(ticks).items() if count > 1]
    assert not twice, f"ticks run twice: {twice}"
    seconds = sorted(int(tick.timestamp()) for tick in ticks)
    missed = sorted(set(range(seconds[0], seconds[-1] + 1)) - set(seconds))
    assert not missed, f"ticks missed: {missed}; ledger: {runs}"
    tokens = [int(str(run["token"])) for run in runs]
    assert tokens == sorted(tokens), "runs in ledger order carry non-decreasing tokens"
    for token in killed:
        # The gap's ticks: run by the next term, in order, right after the killed leader's last.
        last_of_killed = max(i for i, t in enumerate(tokens) if t == token)
        assert tokens[last_of_killed + 1] > token
        assert ticks[last_of_killed + 1] == ticks[last_of_killed] + dt.timedelta(seconds=1)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_leader_stepped_ahead_then_killed_never_has_its_ticks_run_twice(cluster: Cluster) -> None:
    until(lambda: len(cluster.runs()) >= 2, 30, "the first leader's runs")
    leader, token = cluster.leader()
    leader.step_wall(8.0)
    until(
        lambda: ticks_of(cluster.runs())[-1].timestamp() > time.time() + 6,
        10,  # a wake-up within 1 s, then the catch-up; generous for a loaded machine
        "the stepped leader's early ticks",
    )
    time.sleep(1.0)
    early = ticks_of(cluster.runs())[-1]
    kill_the_leader(cluster)
    until(
        lambda: ticks_of(cluster.runs())[-1] > early + dt.timedelta(seconds=2), 20, "the next leader's ticks"
    )
    cluster.stop()

    runs = cluster.runs()
    ticks = ticks_of(runs)
    twice = [tick for tick, count in Counter(ticks).items() if count > 1]
    assert not twice, f"ticks run twice: {twice}; ledger: {runs}"
    stepped = [tick for tick, run in zip(ticks, runs, strict=True) if int(str(run["token"])) == token]
    after = [tick for tick, run in zip(ticks, runs, strict=True) if int(str(run["token"])) > token]
    assert min(after) == max(stepped) + dt.timedelta(seconds=1), (
        "the next leader went on after the early ticks"
    )

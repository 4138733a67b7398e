"""A real client-go elector and leaderlib replicas on one Lease (issue 9, item 5).

Both sides run as processes on the real kube-apiserver as the unprivileged
``elector`` user: client-go's LeaseLock elector (``ClientGoElector``) and a
leaderlib replica (``kube_replica.py``) that prints the same event lines.
Each test hands the Lease over once, gracefully (SIGTERM: release), by
SIGKILL or by SIGSTOP, in both directions, and judges the terms from both
sides' own CLOCK_BOOTTIME stamps:

* a leaderlib term runs from its ``started_leading`` to the earlier of its
  work being cancelled and ``renew_deadline`` after its last acquisition or
  renewal was sent (the term's own deadline: a frozen or killed replica acts
  on nothing past it);
* a client-go term runs from ``started_leading`` to ``stopped_leading``, or
  to the moment it was killed or frozen. client-go has no fencing: woken
  from SIGSTOP it still believes it leads until its next renewal fails,
  which the SIGSTOP test shows but cannot hold against it.

No two terms may overlap and ``leaseTransitions`` must grow with each one
(leaderlib's fencing token is ``leaseTransitions + 1``; terms here compare
``leaseTransitions``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from leaderlib import LeaderElector, Leadership, LeaseLost
from leaderlib.backends import FIRST_TOKEN, JobRun
from leaderlib.backends.kubernetes import KubernetesBackend
from leaderlib.backends.kubernetes._record import RUNS_ANNOTATION
from leaderlib.testing.clientgo import ClientGoElector, ElectorEvent
from leaderlib.testing.servers import KubeAPIServer
from tests.electing import config, running, until

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]

#: Both sides: a 3 s Lease; leaderlib's term ends 1 s before it, as client-go needs.
LEASE, DEADLINE, INTERVAL, RETRY = 3.0, 2.0, 0.5, 0.3
#: client-go waits up to 1.2 retry periods between attempts.
TAKEOVER_LIMIT = LEASE + 2 * 1.2 * RETRY + 2.0


class LeaderlibReplica(ClientGoElector):
    """``kube_replica.py`` run like the client-go elector: same lifecycle, signals and events."""

    def __init__(self, *args: Any, renew_interval: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.renew_interval = renew_interval

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.backends.kube_replica",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
            f"--name={self.name}",
            f"--identity={self.identity}",
            f"--lease-duration={self.lease_duration}",
            f"--renew-deadline={self.renew_deadline}",
            f"--renew-interval={self.renew_interval}",
            f"--retry-period={self.retry_period}",
        ]


@dataclass
class Term:
    who: str
    start: float
    end: float
    token: int


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def leaderlib_term(replica: ClientGoElector, token: int) -> Term:
    """The replica's term with fencing token ``token``: from its start to the earlier of its
    work's cancellation and renew_deadline past its last request sent in the term; its
    ``token`` is the term's leaseTransitions (the fencing token - FIRST_TOKEN), as client-go's."""
    events = replica.events
    deadline = next(e for e in events if e.event == "ready").extra["renew_deadline"]
    started = next(e for e in events if e.event == "started_leading" and e.extra["fencing_token"] == token)
    index = events.index(started)
    sent = [e for e in events[:index] if e.event == "acquire_sent"][-1:]
    for event in events[index:]:
        if event.event == "renew_sent" and event.extra["fencing_token"] == token:
            sent = [event]
        if event.event == "work_cancelled" and event.extra["fencing_token"] == token:
            return Term(
                replica.identity,
                started.boottime,
                min(event.boottime, sent[0].boottime + deadline),
                token - FIRST_TOKEN,
            )
    return Term(replica.identity, started.boottime, sent[0].boottime + deadline, token - FIRST_TOKEN)


def client_go_term(go: ClientGoElector, token: int, cut: float | None) -> Term:
    """client-go's term: from started_leading to stopped_leading, or to ``cut`` (killed or
    frozen), or to now if it still leads."""
    started = go.wait_for("started_leading", timeout=0)
    ends = [e.boottime for e in go.events if e.event == "stopped_leading"]
    if cut is not None:
        ends.append(cut)
    return Term(go.identity, started.boottime, min(ends, default=now()), token)  # still leading: now


def assert_no_overlap(terms: list[Term]) -> None:
    terms = sorted(terms, key=lambda t: t.start)
    for before, after in itertools.pairwise(terms):
        assert before.end <= after.start, (
            f"terms overlap by {before.end - after.start:.3f} s: {before} {after}"
        )
        assert after.token > before.token, f"leaseTransitions did not grow: {before} {after}"


@pytest.fixture
def replica(kube_apiserver: KubeAPIServer, tmp_path: Path) -> Iterator[Callable[..., ClientGoElector]]:
    """Starts leaderlib replicas (``kube_replica.py``); terminates them after the test."""
    made: list[ClientGoElector] = []

    def make(name: str, identity: str, **timing: float) -> ClientGoElector:
        values = {"lease_duration": LEASE, "renew_deadline": DEADLINE, "retry_period": RETRY}
        renew_interval = timing.pop("renew_interval", INTERVAL)
        values.update(timing)
        started = LeaderlibReplica(
            kube_apiserver.kubeconfig,
            kube_apiserver.namespace,
            name,
            identity,
            renew_interval=renew_interval,
            log_path=tmp_path / f"{identity}.log",
            **values,  # type: ignore[arg-type]
        )
        made.append(started)
        # From the repository root, so the replica imports this checkout's leaderlib.
        return started.start()

    yield make
    for started in made:
        started.terminate(started.stop_timeout)


def cut_leader(leader: ClientGoElector, how: str) -> float:
    """End the leader's term the way ``how`` says; returns the boottime of the cut."""
    cut = now()
    if how == "graceful":
        assert leader.terminate() == 0
    elif how == "sigkill":
        leader.kill()
    else:
        leader.stop_process()
    return cut


@pytest.mark.parametrize("how", ["graceful", "sigkill", "sigstop"])
def test_leaderlib_hands_over_to_client_go(
    kube_apiserver: KubeAPIServer,
    clientgo_elector: Callable[..., ClientGoElector],
    replica: Callable[..., ClientGoElector],
    how: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    ours = replica(name, "leaderlib-a")
    first = ours.wait_for("started_leading", timeout=30)
    go = clientgo_elector(name, "go-b", LEASE, DEADLINE, RETRY)
    go.wait_for("new_leader", timeout=10, leader="leaderlib-a")
    time.sleep(1.0 + random.random())  # a few renewals, seen by client-go; a cut at any phase
    cut = cut_leader(ours, how)
    took = go.wait_for("started_leading", timeout=TAKEOVER_LIMIT + 5)
    go_token = kube_apiserver.admin_get_lease(name)["spec"]["leaseTransitions"]
    if how == "graceful":
        assert took.boottime - cut < 1.5, "client-go takes a released Lease at its next poll"
    else:
        assert took.boottime - cut <= TAKEOVER_LIMIT
    if how == "sigstop":
        woke = now()
        ours.cont()
        # Woken past its deadline, the replica steps down without renewing again.
        ours.wait_for("work_cancelled", timeout=5)
        late = [e for e in ours.events if e.event == "renew_sent" and e.boottime >= woke]
        assert late == [], late
        assert go.running(), "client-go kept its term"
    assert_no_overlap(
        [
            leaderlib_term(ours, first.extra["fencing_token"]),
            client_go_term(go, go_token, cut=None),
        ]
    )


@pytest.mark.parametrize("how", ["graceful", "sigkill", "sigstop"])
def test_client_go_hands_over_to_leaderlib(
    kube_apiserver: KubeAPIServer,
    clientgo_elector: Callable[..., ClientGoElector],
    replica: Callable[..., ClientGoElector],
    how: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    go = clientgo_elector(name, "go-a", LEASE, DEADLINE, RETRY)
    go.wait_for("started_leading", timeout=30)
    go_token = kube_apiserver.admin_get_lease(name)["spec"]["leaseTransitions"]
    ours = replica(name, "leaderlib-b")
    ours.wait_for("new_leader", timeout=30, leader="go-a")
    time.sleep(1.0 + random.random())
    cut = cut_leader(go, how)
    took: ElectorEvent = ours.wait_for("started_leading", timeout=TAKEOVER_LIMIT + 5)
    if how == "graceful":
        assert took.boottime - cut < 1.0, "leaderlib takes a released Lease from its watch"
    else:
        # It counted the whole lease from when it last saw client-go renew.
        assert LEASE - 1.2 * RETRY - 0.1 <= took.boottime - cut <= TAKEOVER_LIMIT
    if how == "sigstop":
        go.cont()
        # client-go's renewal finds our record; it gives up and exits "lost".
        lost = go.wait_for("stopped_leading", timeout=DEADLINE + 10)
        assert lost.extra["reason"] == "lost"
    ours_token = took.extra["fencing_token"]
    assert ours_token == kube_apiserver.admin_get_lease(name)["spec"]["leaseTransitions"] + FIRST_TOKEN
    assert_no_overlap(
        [
            client_go_term(go, go_token, cut=None if how == "graceful" else cut),
            leaderlib_term(ours, ours_token),
        ]
    )


def test_a_term_too_long_for_client_go_is_shortened_on_kubernetes(
    kube_apiserver: KubeAPIServer,
    clientgo_elector: Callable[..., ClientGoElector],
    replica: Callable[..., ClientGoElector],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The config that overlapped with client-go by 7 ms (4/3.9/0.25): the replica keeps
    3 s, and a SIGKILL at any point of a second is taken over only after its term."""
    monkeypatch.chdir(REPO)
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    ours = replica(name, "leaderlib-a", lease_duration=4, renew_deadline=3.9, renew_interval=0.25)
    first = ours.wait_for("started_leading", timeout=30)
    assert ours.wait_for("ready", timeout=0).extra["renew_deadline"] == 3.0
    go = clientgo_elector(name, "go-b", 4, 3, 0.1)
    go.wait_for("new_leader", timeout=10, leader="leaderlib-a")
    time.sleep(1.0 + random.random())
    ours.kill()
    go.wait_for("started_leading", timeout=10)
    go_token = kube_apiserver.admin_get_lease(name)["spec"]["leaseTransitions"]
    assert_no_overlap(
        [leaderlib_term(ours, first.extra["fencing_token"]), client_go_term(go, go_token, None)]
    )


async def test_kubernetes_backend_reports_whole_second_observation(
    kube_backend: Callable[..., KubernetesBackend],
) -> None:
    """Regression (issue 9, item 5), deterministic: the backend says 1 s and a leader on it
    keeps lease_duration - 1 s, however long the configured renew deadline."""
    assert KubernetesBackend.observation_granularity == 1.0
    timing = {"lease_duration": 4.0, "renew_deadline": 3.9, "renew_interval": 0.25}
    elector = LeaderElector(f"mixed-{uuid.uuid4().hex[:8]}", kube_backend(), config("replica-a", **timing))
    assert elector.renew_deadline == 3.0
    async with running(elector):
        await until(lambda: elector.is_leader, timeout=10)
        leadership = elector.leadership
        assert leadership is not None
        assert leadership.valid_until - elector.clock.monotonic() <= 3.0


async def test_run_records_leave_a_client_go_follower_unaffected(
    kube_apiserver: KubeAPIServer,
    kube_backend: Callable[..., KubernetesBackend],
    clientgo_elector: Callable[..., ClientGoElector],
) -> None:
    """leaderlib leads and records a run every 50 ms (each a new resourceVersion, spec
    untouched) for two lease durations: client-go follows without taking over, takes the
    released Lease at its next poll, keeps the annotation on its own writes, and the ended
    term can no longer record."""
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    backend = kube_backend()
    tick = dt.datetime(2026, 12, 1, 8, 0, 0, tzinfo=dt.UTC)
    runs: list[JobRun] = []

    async def record_runs(leadership: Leadership) -> None:
        while True:
            run = JobRun(
                job="tick",
                tick=tick + dt.timedelta(seconds=len(runs)),
                fencing_token=leadership.fencing_token,
                identity=leadership.record.holder,
                started_at=dt.datetime.now(dt.UTC),
            )
            runs.append(run)  # first: stopping can cancel this task once the store has the write
            await leader.lease.record_run(run)
            await asyncio.sleep(0.05)

    timing = {"lease_duration": LEASE, "renew_deadline": DEADLINE, "renew_interval": INTERVAL}
    leader = LeaderElector(
        name, backend, config("leaderlib-a", **timing, retry_period=RETRY), on_started_leading=record_runs
    )
    async with running(leader):
        await until(lambda: leader.is_leader, timeout=10)
        go = clientgo_elector(name, "go-b", LEASE, DEADLINE, RETRY)
        await asyncio.to_thread(go.wait_for, "new_leader", 10, leader="leaderlib-a")
        at_start = len(runs)
        await asyncio.sleep(2 * LEASE)
        assert len(runs) - at_start >= 20, "the leader kept recording runs"
        assert leader.is_leader
        assert [e.leader for e in go.events if e.event != "ready"] == ["leaderlib-a"], go.events
        assert leader.leadership is not None
        ended = leader.leadership.record
        released = time.monotonic()
    took = await asyncio.to_thread(go.wait_for, "started_leading", 5)
    assert took.monotonic - released < 1.5, "client-go takes the released Lease at its next poll"
    await asyncio.sleep(3 * RETRY)  # a few client-go renewals
    lease = kube_apiserver.admin_get_lease(name)
    assert lease["spec"]["holderIdentity"] == "go-b"
    assert lease["spec"]["leaseTransitions"] == ended.transitions + 1
    assert RUNS_ANNOTATION in lease["metadata"]["annotations"], "client-go's updates keep it"
    # The last run asked for, or the one before if stopping cancelled it unsent.
    assert await backend.lease(name).last_runs() in ({"tick": runs[-1]}, {"tick": runs[-2]})
    with pytest.raises(LeaseLost, match="go-b"):
        await backend.lease(name).record_run(runs[-1])

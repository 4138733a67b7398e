"""The client-go elector (backends/clientgo-elector) against the real kube-apiserver.

It must behave as client-go does, since later suites run it next to
leaderlib replicas on one Lease: it leads and writes its identity, releases
on SIGTERM, and a second instance takes over after the first is SIGKILLed
within the lease duration plus polling.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from leaderlib.testing.clientgo import CLIENTGO_VERSION, EXIT_LOST, ClientGoElector, ElectorExited
from leaderlib.testing.pytest_plugin import require_binary
from leaderlib.testing.servers import KUBE_VERSION, KubeAPIServer

REPO = Path(__file__).resolve().parents[2]

# The first use starts the API server, which takes a while on a busy machine.
kube_timeout = pytest.mark.timeout(300)

LEASE_DURATION = 3.0
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5
# client-go waits RetryPeriod * up to 1.2 (wait.JitterUntil) between attempts.
JITTER = 1.2
TIMING = (LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD)

Make = Callable[..., ClientGoElector]


def test_client_go_follows_the_kube_apiserver_release() -> None:
    mod = (REPO / "backends/clientgo-elector/go.mod").read_text()
    assert re.search(rf"k8s\.io/client-go {re.escape(CLIENTGO_VERSION)}\b", mod)
    # v1.36.3 <-> v0.36.3: client-go's minor and patch are the server's.
    assert CLIENTGO_VERSION.removeprefix("v0.") == KUBE_VERSION.removeprefix("v1.")


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    require_binary("clientgo-elector")
    # A kubeconfig that does not exist is a configuration error: status 2.
    elector = ClientGoElector(
        tmp_path / "missing.kubeconfig", "ns", "lease", "x", 3, 1, 1, log_path=tmp_path / "x.log"
    )
    with elector:
        with pytest.raises(ElectorExited, match="exited"):
            elector.wait_for("started_leading", timeout=10)
        # Its output ends as it exits; the status comes once the process is reaped.
        deadline = time.monotonic() + 10
        while elector.returncode is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert elector.returncode == 2


@kube_timeout
def test_leads_and_releases_on_sigterm(kube_apiserver: KubeAPIServer, clientgo_elector: Make) -> None:
    name = f"clientgo-{uuid.uuid4().hex[:8]}"
    before = time.monotonic()
    a = clientgo_elector(name, "go-a", *TIMING)
    started = a.wait_for("started_leading", timeout=30)
    after = time.monotonic()
    # Its clock stamps are this host's CLOCK_MONOTONIC, as time.monotonic().
    assert before <= started.monotonic <= after
    assert started.boottime >= started.monotonic
    assert started.identity == started.leader == "go-a"
    assert a.wait_for("new_leader", timeout=10).leader == "go-a"
    spec = kube_apiserver.admin_get_lease(name)["spec"]
    assert spec["holderIdentity"] == "go-a"
    assert spec["leaseDurationSeconds"] == int(LEASE_DURATION)

    assert a.terminate() == 0
    stopped = a.wait_for("stopped_leading", timeout=1)
    assert stopped.extra["reason"] == "signal"
    assert a.wait_for("released", timeout=1).monotonic >= started.monotonic
    # client-go's release: empty holder, leaseDurationSeconds 1.
    spec = kube_apiserver.admin_get_lease(name)["spec"]
    assert spec.get("holderIdentity", "") == ""
    assert spec["leaseDurationSeconds"] == 1


@kube_timeout
def test_second_takes_over_after_the_first_is_killed(
    kube_apiserver: KubeAPIServer, clientgo_elector: Make
) -> None:
    name = f"clientgo-{uuid.uuid4().hex[:8]}"
    a = clientgo_elector(name, "go-a", *TIMING)
    a.wait_for("started_leading", timeout=30)
    b = clientgo_elector(name, "go-b", *TIMING)
    # b campaigns and sees a as the leader.
    b.wait_for("new_leader", timeout=10, leader="go-a")
    assert not any(e.event == "started_leading" for e in b.events)
    killed_at = time.monotonic()
    assert a.kill() == -9
    # No release: the Lease still names a until b takes it.
    assert kube_apiserver.admin_get_lease(name)["spec"]["holderIdentity"] == "go-a"
    limit = LEASE_DURATION + 2 * JITTER * RETRY_PERIOD + 1.0
    took = b.wait_for("started_leading", timeout=limit + 5)
    waited = took.monotonic - killed_at
    # b counts the lease from when it last saw the record change, at most one
    # poll after the kill, and acquires at the first poll past expiry:
    # lease_duration + up to two jittered retry periods.
    assert LEASE_DURATION - JITTER * RETRY_PERIOD - 1.0 <= waited <= limit, waited
    spec = kube_apiserver.admin_get_lease(name)["spec"]
    assert spec["holderIdentity"] == "go-b"
    assert spec["leaseTransitions"] >= 1
    assert b.wait_for("new_leader", timeout=5, leader="go-b")
    assert b.terminate() == 0


@kube_timeout
def test_a_frozen_leader_loses_the_lease_and_exits_lost(clientgo_elector: Make) -> None:
    name = f"clientgo-{uuid.uuid4().hex[:8]}"
    a = clientgo_elector(name, "go-a", *TIMING)
    a.wait_for("started_leading", timeout=30)
    b = clientgo_elector(name, "go-b", *TIMING)
    b.wait_for("new_leader", timeout=10, leader="go-a")
    a.stop_process()
    b.wait_for("started_leading", timeout=LEASE_DURATION + 2 * JITTER * RETRY_PERIOD + 5)
    a.cont()
    # On waking, a's renewal finds b's record and fails at its renew deadline:
    # client-go cancels its work and the program exits "lost".
    stopped = a.wait_for("stopped_leading", timeout=RENEW_DEADLINE + 10)
    assert stopped.extra["reason"] == "lost"
    deadline = time.monotonic() + 10
    while a.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.returncode == EXIT_LOST

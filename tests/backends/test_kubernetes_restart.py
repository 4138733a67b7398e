"""Electors under a kube-apiserver that restarts (issue 9, item 6), on a server of their own.

A restarted API server first refuses connections, then for a moment answers
every user but admin with 403 while its RBAC authorizer fills its cache from
etcd. A leading and a following replica that worked before must ride that
out: neither exits, one leads again once the server is back, with a higher
fencing token, and the client's own retries add no warnings beneath
leaderlib's (one retry policy: the elector's).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator

import pytest

from leaderlib import LeaderElector
from leaderlib.backends.kubernetes import KubernetesBackend
from leaderlib.testing.pytest_plugin import started
from leaderlib.testing.servers import KubeAPIServer
from tests.electing import config, running, until

pytestmark = pytest.mark.timeout(120)

#: Timing as whole-second Leases allow: a term ends 1 s before the lease (client-go's view).
TIMING = {"lease_duration": 3.0, "renew_deadline": 2.0, "renew_interval": 0.5, "retry_period": 0.3}
#: How long the server is down (connections refused): several retry periods.
DOWN_FOR = 1.0
#: How long the restarted server keeps refusing the elector user (403): many retry periods.
WARM_UP = 2.0


@pytest.fixture(scope="module")
def kube_apiserver() -> Iterator[KubeAPIServer]:
    """A kube-apiserver of this module's own (``kube_backend`` makes backends on it), so
    restarting it disturbs no other test."""
    with started(KubeAPIServer(namespace="restarts")) as kube:
        yield kube


async def test_leader_and_follower_survive_a_restart_with_rbac_warm_up(
    kube_apiserver: KubeAPIServer,
    kube_backend: Callable[[], KubernetesBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (issue 9, item 6): the old elector raised AccessDenied out of run() on the
    first warm-up 403 and the replica exited; issue 10: each request during the outage also
    logged urllib3's own "Retrying ..." warnings, three per request."""
    caplog.set_level(logging.WARNING)
    election = f"restart-{uuid.uuid4().hex[:8]}"
    a = LeaderElector(election, kube_backend(), config("replica-a", **TIMING))
    b = LeaderElector(election, kube_backend(), config("replica-b", **TIMING))
    async with running(a) as a_task, running(b) as b_task:
        await until(lambda: a.is_leader or b.is_leader, timeout=10, what="a first leader")
        first = a if a.is_leader else b
        other = b if first is a else a
        await until(lambda: other.leader == first.identity, timeout=10, what="the follower sees the leader")
        # Both have been answered by the store for a while: what fails now is the server,
        # not credentials that never worked (those are fatal at once, by design).
        await asyncio.sleep(4 * TIMING["retry_period"])
        assert first.leadership is not None
        first_token = first.leadership.fencing_token
        caplog.clear()

        took = await asyncio.to_thread(
            kube_apiserver.restart_apiserver, kill=True, down_for=DOWN_FOR, warm_up=WARM_UP
        )

        assert not a_task.done() and not b_task.done(), "an elector left the election"
        # Both were refused while the server warmed up (else this test proves nothing).
        denials = [r for r in caplog.records if "RBAC does not allow" in str(getattr(r, "error", ""))]
        assert len(denials) >= 2, [r.getMessage() for r in caplog.records]
        # Back: one of them leads again within a lease of the server being ready.
        await until(lambda: a.is_leader or b.is_leader, timeout=TIMING["lease_duration"] + 2, what="a leader")
        leader = a if a.is_leader else b
        assert leader.leadership is not None and leader.leadership.fencing_token > first_token
        assert not a_task.done() and not b_task.done()
    urllib3_warnings = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert urllib3_warnings == [], f"{len(urllib3_warnings)} urllib3 warnings, e.g. {urllib3_warnings[:3]}"
    assert took < 60

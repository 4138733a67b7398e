"""Job run records on the kubernetes backend: an annotation on the election's own Lease.

What the conformance suite (tests/conformance/test_runs.py) does not cover: the
cost in requests of run records and of the renewals between them, counted on
the real kube-apiserver as the ``elector`` user; the term check (holder AND
leaseTransitions) of renew, release and run records; the annotation's bytes;
the 256 KiB limit; and followers, which see each run record through the watch
as a new version and must count it like a renewal, nothing more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable

import pytest

from leaderlib import LeaderElector, Leadership
from leaderlib._errors import BackendError, CorruptLeaseRecord, LeaseLost
from leaderlib.backends import LeaseRecord
from leaderlib.backends._runs import encode_run
from leaderlib.backends.kubernetes import KubernetesBackend
from leaderlib.backends.kubernetes._record import RUNS_ANNOTATION
from leaderlib.testing.servers import KubeAPIServer
from tests.backends.kube import Request, leading, name, record_requests
from tests.conformance.stores.kubernetes import KubernetesHarness
from tests.conformance.test_runs import TICK, finished, started
from tests.electing import config, running, until

pytestmark = pytest.mark.timeout(60)


def at(second: int) -> dt.datetime:
    return TICK + dt.timedelta(seconds=second)


def methods(sent: list[Request]) -> list[str]:
    return [request.method for request in sent]


async def test_run_records_and_renewals_between_them_are_one_request_each(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[[], KubernetesBackend]
) -> None:
    """A run record moves the Lease's resourceVersion; the renewal after it still is one PUT
    (it updates the handle's latest object of the term, not the elector's last renewal)."""
    lease, record = await leading(kube_backend)
    election = lease.election
    sent = record_requests(lease._backend)
    for second in range(3):
        run = started(record, tick=at(second))
        before = kube_apiserver.admin_get_lease(election)
        await lease.record_run(run)
        after = kube_apiserver.admin_get_lease(election)
        assert after["spec"] == before["spec"], "a run record leaves the spec (renewTime too) alone"
        assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
        renewed = await lease.renew(record)
        assert renewed.fencing_token == record.fencing_token and renewed.version != record.version
        record = renewed
        await lease.record_run(finished(run))
    await lease.release(record)
    assert methods(sent) == ["PUT"] * 10, sent
    stored = kube_apiserver.admin_get_lease(election)["metadata"]["annotations"][RUNS_ANNOTATION]
    done = finished(started(record, tick=at(2)))
    assert stored == '{"report":' + encode_run(done) + "}", "each job's part is the codec's JSON"
    assert await kube_backend().lease(election).last_runs() == {"report": done}, "and it outlives the release"


async def test_a_foreign_write_costs_a_read_and_keeps_what_it_wrote(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[[], KubernetesBackend]
) -> None:
    """A label added by someone else: the run record's PUT conflicts, GET, PUT again (the
    term is still ours), the label stays; the renewal after it is one PUT again."""
    lease, record = await leading(kube_backend)
    labelled = kube_apiserver.admin_get_lease(lease.election)
    labelled["metadata"]["labels"] = {"team": "billing"}
    kube_apiserver.admin_request("PUT", kube_apiserver.lease_path(lease.election), labelled)
    sent = record_requests(lease._backend)
    await lease.record_run(started(record))
    assert methods(sent) == ["PUT", "GET", "PUT"], sent
    await lease.renew(record)
    assert methods(sent) == ["PUT", "GET", "PUT", "PUT"], sent
    after = kube_apiserver.admin_get_lease(lease.election)
    assert after["metadata"]["labels"] == {"team": "billing"}
    assert RUNS_ANNOTATION in after["metadata"]["annotations"]


async def test_a_later_term_of_the_same_identity_is_not_ours(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[[], KubernetesBackend]
) -> None:
    """Regression: renew's and release's slow path judged "still ours" by the holder alone,
    so a Lease taken again by the same identity (leaseTransitions + 1: a new term, a new
    fencing token) was renewed as if the old term went on, and the renewal reported the
    NEW term's token to the old term's leader. The term is holder AND leaseTransitions."""
    lease, record = await leading(kube_backend)
    assert record.transitions == 0
    later = kube_apiserver.admin_get_lease(lease.election)
    later["spec"]["leaseTransitions"] = 1  # the same identity's next term
    await asyncio.to_thread(kube_apiserver.admin_put_lease, later)
    with pytest.raises(LeaseLost, match="later term of 'replica-a'"):
        await lease.renew(record)
    await lease.release(record)  # not our term: nothing to release
    with pytest.raises(LeaseLost):
        await lease.record_run(started(record))
    spec = kube_apiserver.admin_get_lease(lease.election)["spec"]
    assert spec["holderIdentity"] == "replica-a" and spec["leaseTransitions"] == 1
    assert await lease.last_runs() == {}


async def test_more_than_256_kib_of_annotations_is_refused_clearly(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[[], KubernetesBackend]
) -> None:
    lease, record = await leading(kube_backend)
    crowded = kube_apiserver.admin_get_lease(lease.election)
    crowded["metadata"]["annotations"] = {"example.com/blob": "x" * (256 * 1024 - 200)}
    await asyncio.to_thread(kube_apiserver.admin_put_lease, crowded)
    version = kube_apiserver.admin_get_lease(lease.election)["metadata"]["resourceVersion"]
    with pytest.raises(BackendError, match="256 KiB") as caught:
        await lease.record_run(started(record))
    assert "job 'report'" in str(caught.value) and not isinstance(caught.value, LeaseLost)
    assert kube_apiserver.admin_get_lease(lease.election)["metadata"]["resourceVersion"] == version, (
        "nothing sent"
    )
    renewed = await lease.renew(record)  # the lease itself is fine
    assert renewed.fencing_token == record.fencing_token


async def test_unreadable_annotations_are_corrupt_and_other_jobs_survive(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[[], KubernetesBackend]
) -> None:
    """One job's bad entry fails last_runs but not another job's record (kept as stored);
    an annotation that is not a JSON object fails both, saying how to remove it."""
    lease, record = await leading(kube_backend)
    election = lease.election
    await KubernetesHarness(kube_apiserver).write_corrupt_run(election, "broken")
    await lease.record_run(started(record))
    runs = json.loads(kube_apiserver.admin_get_lease(election)["metadata"]["annotations"][RUNS_ANNOTATION])
    assert runs["broken"] == "not a run record" and runs["report"]["job"] == "report"
    with pytest.raises(CorruptLeaseRecord, match="run record"):
        await lease.last_runs()
    garbled = kube_apiserver.admin_get_lease(election)
    garbled["metadata"]["annotations"][RUNS_ANNOTATION] = "{not json"
    kube_apiserver.admin_request("PUT", kube_apiserver.lease_path(election), garbled)
    for call in (lease.last_runs(), lease.record_run(started(record, tick=at(1)))):
        with pytest.raises(CorruptLeaseRecord, match=f"kubectl annotate lease {election}"):
            await call


async def test_followers_count_run_records_like_renewals(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[[], KubernetesBackend]
) -> None:
    """A leader recording runs every 50 ms: a watching follower sees each record as a new
    version, and neither wakes, polls, nor takes over; it sends no request at all."""
    election = name()
    recorded: list[int] = []

    async def record_runs(leadership: Leadership) -> None:
        while True:
            await leader.lease.record_run(started(leadership.record, tick=at(len(recorded))))
            recorded.append(len(recorded))
            await asyncio.sleep(0.05)

    leader = LeaderElector(election, kube_backend(), config("leader"), on_started_leading=record_runs)
    follower_backend = kube_backend()
    follower = LeaderElector(election, follower_backend, config("follower"))
    async with running(leader):
        await until(lambda: leader.is_leader, timeout=10)
        async with running(follower):
            await until(lambda: follower.leader == "leader" and follower._campaign.watch_live, timeout=10)
            await asyncio.sleep(0.3)  # the follower now waits on its watch
            sent = record_requests(follower_backend)
            observed: list[str] = []
            observe = follower._campaign.observe

            def noting(record: LeaseRecord | None) -> None:
                observed.append(record.version if record is not None else "")
                observe(record)

            follower._campaign.observe = noting  # type: ignore[method-assign]
            started_at, at_start = time.monotonic(), len(recorded)
            while time.monotonic() - started_at < 2.5:  # longer than the 2 s lease
                assert not follower.is_leader and follower.leader == "leader"
                await asyncio.sleep(0.05)
            records = len(recorded) - at_start
            assert records >= 10, "the leader kept recording runs"
            assert sent == [], f"the follower sent {sent}"
            # Every write is a watch event: the run records and the renewals reached it.
            assert len(set(observed)) >= records, (len(set(observed)), records)


async def test_an_ended_term_whose_last_write_was_a_run_record_is_taken_over_at_once(
    kube_backend: Callable[[], KubernetesBackend],
) -> None:
    """The elector ends its own term (its deadline passed) and asks to take over exactly the
    record it last renewed; a run record written after that renewal moved the Lease's
    version. It is this handle's own later write of the same term, so the takeover still
    applies (otherwise the elector waits out a whole lease for its own term)."""
    lease, record = await leading(kube_backend)
    await lease.record_run(finished(started(record)))
    attempt = await lease.try_acquire("replica-a", 2, record)
    assert attempt.acquired, "the term's own later write must not block taking over its end"
    assert attempt.record is not None and attempt.record.fencing_token == record.fencing_token + 1
    # A stranger's takeover of the same stale version is still refused.
    other = kube_backend().lease(lease.election)
    stale = await other.try_acquire("replica-b", 2, record)
    assert not stale.acquired

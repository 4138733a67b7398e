"""The kubernetes backend against a real kube-apiserver, as the unprivileged ``elector`` user.

Covers what the conformance suite does not: client-go interoperability, clock
skew, RBAC errors, the MicroTime bytes on the wire, watch resumption and
thread hygiene. Setup (foreign records, namespaces, Roles) is done as admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from leaderlib import LeaderElector
from leaderlib._clock import FakeClock
from leaderlib._errors import AccessDenied, BackendError, BackendUnavailable, ConfigError, LeaseLost
from leaderlib.backends import FIRST_TOKEN, backend_from_url
from leaderlib.backends.kubernetes import ROLE_YAML, KubernetesBackend
from leaderlib.testing.servers import KubeAPIServer
from tests.backends.kube import leading, name, record_requests
from tests.conformance.stores.kubernetes import client_go_lease
from tests.electing import config, running, until

pytestmark = pytest.mark.timeout(180)

# --- the record and the wire ------------------------------------------------------


async def test_entry_point_and_record_as_client_go_writes_it(
    kube_apiserver: KubeAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    backend = backend_from_url(kube_apiserver.elector_url)
    try:
        assert isinstance(backend, KubernetesBackend)
        election = name()
        record = (await backend.lease(election).try_acquire("replica-a", 1.5, None)).record
        assert record is not None and record.holder == "replica-a"
        assert record.lease_duration == 2.0, "1.5 s is rounded up to whole seconds"
        spec = kube_apiserver.admin_get_lease(election)["spec"]
        assert spec["holderIdentity"] == "replica-a"
        assert spec["leaseDurationSeconds"] == 2
        assert spec["leaseTransitions"] == 0 == record.transitions
        assert record.fencing_token == FIRST_TOKEN  # leaseTransitions + 1
        assert spec["acquireTime"] == spec["renewTime"]
        assert spec["acquireTime"].endswith("Z") and len(spec["acquireTime"].split(".")[1]) == 7
        assert record.version == kube_apiserver.admin_get_lease(election)["metadata"]["resourceVersion"]
        # A Lease naming us is not adopted; replacing our own ended term is a new term.
        assert not (await backend.lease(election).try_acquire("replica-a", 1.5, None)).acquired
        again = await backend.lease(election).try_acquire("replica-a", 1.5, record)
        assert again.acquired and again.record is not None
        assert again.record.fencing_token == record.fencing_token + 1
        assert kube_apiserver.admin_get_lease(election)["spec"]["leaseTransitions"] == 1
        rounded = [r for r in caplog.records if "whole seconds" in r.getMessage()]
        assert len(rounded) == 1, "the rounding is said once, not on every call"
    finally:
        await backend.aclose()


async def test_microtime_bytes_on_the_wire(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    """Whole-second times go out as ``...:05.000000Z`` (the server rejects ``...:05+00:00``)."""
    backend = kube_backend()
    requests = record_requests(backend)
    # A wall clock that stands on a whole second: isoformat() would give "...:05+00:00".
    backend._clock = FakeClock(wall_start=dt.datetime(2026, 11, 28, 12, 0, 5, tzinfo=dt.UTC))
    election = name()
    record = (await backend.lease(election).try_acquire("replica-a", 2, None)).record
    assert record is not None
    record = await backend.lease(record.election).renew(record)
    await backend.lease(record.election).release(record)
    sent = [request.body for request in requests if request.body is not None]
    assert len(sent) == 3, sent
    for body in sent:
        assert b'"2026-11-28T12:00:05.000000Z"' in body, body
        assert b"+00:00" not in body
        spec = json.loads(body)["spec"]
        assert spec["acquireTime"] == spec["renewTime"] == "2026-11-28T12:00:05.000000Z"
    stored = kube_apiserver.admin_get_lease(election)["spec"]
    assert stored["renewTime"] == "2026-11-28T12:00:05.000000Z"


async def test_first_create_race_has_one_winner(kube_backend: Callable[..., KubernetesBackend]) -> None:
    election = name()
    attempts = await asyncio.gather(
        *(kube_backend().lease(election).try_acquire(f"replica-{i}", 2, None) for i in range(5))
    )
    assert sum(a.acquired for a in attempts) == 1, attempts
    results = [a.record for a in attempts]
    holders = {r.holder for r in results if r is not None}
    assert len(holders) == 1, f"every attempt must report the one winner, got {holders}"


async def test_renew_fast_path_is_one_update(kube_backend: Callable[..., KubernetesBackend]) -> None:
    lease, record = await leading(kube_backend)
    sent = record_requests(lease._backend)
    for _ in range(3):
        renewed = await lease.renew(record)
        assert renewed.version != record.version
        assert renewed.fencing_token == record.fencing_token
        assert renewed.acquire_time == record.acquire_time
        record = renewed
    assert [request.method for request in sent] == ["PUT", "PUT", "PUT"], "the leader renews without a GET"


async def test_renew_after_foreign_metadata_change_keeps_the_lease(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    """A conflict from a write that left us holder (a label added) is a GET + update, not a loss."""
    lease, record = await leading(kube_backend)
    labelled = kube_apiserver.admin_get_lease(lease.election)
    labelled["metadata"]["labels"] = {"team": "billing"}
    kube_apiserver.admin_request("PUT", kube_apiserver.lease_path(lease.election), labelled)
    renewed = await lease.renew(record)
    assert renewed.holder == "replica-a" and renewed.fencing_token == record.fencing_token
    after = kube_apiserver.admin_get_lease(lease.election)
    assert after["metadata"]["labels"] == {"team": "billing"}, "renewal must keep the Lease's labels"


async def test_renew_of_a_taken_lease_is_lost(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    lease, record = await leading(kube_backend)
    await asyncio.to_thread(
        kube_apiserver.admin_put_lease,
        client_go_lease(kube_apiserver, lease.election, "go-controller", 2, transitions=1),
    )
    with pytest.raises(LeaseLost, match="go-controller"):
        await lease.renew(record)
    await lease.release(record)  # a no-op: not ours any more
    assert kube_apiserver.admin_get_lease(lease.election)["spec"]["holderIdentity"] == "go-controller"


async def test_a_stale_cached_object_never_lowers_the_token(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    """Regression: a watch event older than this instance's own write must not make a
    renewal or release write an older leaseTransitions (the token would repeat)."""
    election = name()
    a, b = kube_backend(), kube_backend()
    first = (await a.lease(election).try_acquire("replica-a", 2, None)).record
    assert first is not None
    await a.lease(first.election).release(first)
    watch = b.lease(election).watch()
    released = await anext(watch)  # b's watch now holds the released object (transitions 0)
    assert released is not None and not released.is_held
    taken = (await b.lease(election).try_acquire("replica-b", 2, released)).record
    assert taken is not None and taken.fencing_token == 2  # leaseTransitions 1, + 1
    stale = await anext(watch)  # b's own write, seen late; then force an older copy in
    assert stale is not None
    handle = b.lease(election)
    handle._object = handle._watched = kube_apiserver.admin_get_lease(election) | {
        "spec": {**kube_apiserver.admin_get_lease(election)["spec"], "leaseTransitions": 0}
    }
    renewed = await handle.renew(taken)
    assert renewed.fencing_token == 2
    await b.lease(renewed.election).release(renewed)
    assert kube_apiserver.admin_get_lease(election)["spec"]["leaseTransitions"] == 1
    again = (await a.lease(election).try_acquire("replica-a", 2, None)).record
    assert again is not None and again.fencing_token == 3
    await watch.aclose()


# --- interoperability with client-go -----------------------------------------------


async def test_client_go_record_respected_until_expiry_by_own_clock(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    """A client-go holder with a FRESH renewTime, then silent: taken after leaseDurationSeconds
    counted from when the follower first saw it, and only with a CAS on that version."""
    election = name()
    await asyncio.to_thread(
        kube_apiserver.admin_put_lease, client_go_lease(kube_apiserver, election, "go-controller", 2)
    )
    backend = kube_backend()
    seen = await backend.lease(election).get()
    seen_at = time.monotonic()
    assert seen is not None and seen.holder == "go-controller" and seen.expires_in is None
    held = (await backend.lease(election).try_acquire("replica-a", 2, None)).record
    assert held is not None and held.holder == "go-controller", "no takeover without the elector's say-so"
    elector = LeaderElector(election, kube_backend(), config("replica-a"))
    async with running(elector):
        await until(lambda: elector.is_leader, timeout=10)
        assert time.monotonic() - seen_at >= 1.9
        # client-go created it (leaseTransitions 0, token 1); our term is the next.
        assert elector.leadership is not None and elector.leadership.fencing_token == 2
    spec = kube_apiserver.admin_get_lease(election)["spec"]
    # What client-go expects to take over at once after our release.
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 1


async def test_takeover_needs_the_version_seen(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    """A takeover of a version that has since been renewed by its holder does nothing."""
    election = name()
    await asyncio.to_thread(
        kube_apiserver.admin_put_lease, client_go_lease(kube_apiserver, election, "go-controller", 2)
    )
    backend = kube_backend()
    stale = await backend.lease(election).get()
    assert stale is not None
    # The Go controller renews: a new resourceVersion.
    await asyncio.to_thread(
        kube_apiserver.admin_put_lease, client_go_lease(kube_apiserver, election, "go-controller", 2)
    )
    result = (await backend.lease(election).try_acquire("replica-a", 2, stale)).record
    assert result is not None and result.holder == "go-controller"
    assert result.version != stale.version
    taken = (await backend.lease(election).try_acquire("replica-a", 2, result)).record
    assert taken is not None and taken.holder == "replica-a"
    assert taken.transitions == 1 and taken.fencing_token == 2  # token: leaseTransitions + 1


@pytest.mark.parametrize("skew", [dt.timedelta(days=-3650), dt.timedelta(days=3650)])
async def test_clock_skew_does_not_move_the_takeover(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend], skew: dt.timedelta
) -> None:
    """renewTime ten years in the past or future: the follower still waits exactly the
    lease duration from when it saw the record, no less (past) and no more (future)."""
    election = name()
    skewed = dt.datetime.now(dt.UTC) + skew
    await asyncio.to_thread(
        kube_apiserver.admin_put_lease,
        client_go_lease(kube_apiserver, election, "skewed-node", 2, renew_time=skewed),
    )
    started = time.monotonic()
    elector = LeaderElector(election, kube_backend(), config("replica-a"))
    async with running(elector):
        await until(lambda: elector.leader == "skewed-node", timeout=5)
        await until(lambda: elector.is_leader, timeout=8)
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 4.0, f"took over after {elapsed:.2f}s; expected about the 2 s lease"


async def test_released_by_client_go_is_free_at_once(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    election = name()
    released = client_go_lease(kube_apiserver, election, "", 1, transitions=7)
    await asyncio.to_thread(kube_apiserver.admin_put_lease, released)
    record = (await kube_backend().lease(election).try_acquire("replica-a", 2, None)).record
    assert record is not None and record.holder == "replica-a" and record.fencing_token == 9


# --- errors -----------------------------------------------------------------------


def new_namespace(server: KubeAPIServer, prefix: str) -> str:
    """A fresh namespace (created as admin), named ``prefix-`` and a random suffix."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    server.admin_request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    return namespace


def restricted_namespace(server: KubeAPIServer, verbs: list[str]) -> str:
    """A fresh namespace where ``elector`` has a Role with just ``verbs`` on leases."""
    namespace = new_namespace(server, "rbac")
    role = yaml.safe_load(ROLE_YAML.format(namespace=namespace))
    role["rules"][0]["verbs"] = verbs
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    server.admin_request("POST", f"{rbac}/roles", role)
    server.admin_request(
        "POST",
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "leaderlib", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leaderlib"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "elector"}],
        },
    )
    return namespace


async def wait_for_rbac(backend: KubernetesBackend) -> None:
    """RBAC objects reach the authorizer's cache a moment after they are created."""
    deadline = time.monotonic() + 10
    while True:
        try:
            await backend.lease(name()).get()
            return
        except AccessDenied:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_without_update_the_error_names_the_missing_verb(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    namespace = await asyncio.to_thread(
        restricted_namespace, kube_apiserver, ["get", "list", "watch", "create"]
    )
    backend = kube_backend(namespace)
    await wait_for_rbac(backend)
    election = name()
    first = (await backend.lease(election).try_acquire("replica-a", 2, None)).record  # create is allowed
    assert first is not None and first.holder == "replica-a"
    with pytest.raises(AccessDenied) as caught:
        await backend.lease(first.election).renew(first)
    message = str(caught.value)
    assert "'update'" in message and f"namespace {namespace!r}" in message
    assert "leases.coordination.k8s.io" in message and "kind: Role" in message
    # The elector gives up with that error instead of retrying forever.
    released = client_go_lease(kube_apiserver, name(), "", 1, namespace=namespace)
    await asyncio.to_thread(kube_apiserver.admin_put_lease, released)
    elector = LeaderElector(released["metadata"]["name"], kube_backend(namespace), config("replica-b"))
    with pytest.raises(AccessDenied, match="'update'"):
        await asyncio.wait_for(elector.run(), timeout=10)


def documented_rbac() -> list[dict[str, Any]]:
    """The Role and RoleBinding from docs/backends/kubernetes.md, as a reader would apply them."""
    text = (Path(__file__).parents[2] / "docs" / "backends" / "kubernetes.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    return [doc for doc in yaml.safe_load_all(block) if doc]


async def test_with_the_documented_role_it_works(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    namespace = new_namespace(kube_apiserver, "docs")
    role, binding = documented_rbac()
    assert role["kind"] == "Role" and binding["kind"] == "RoleBinding"
    assert role["rules"] == yaml.safe_load(ROLE_YAML.format(namespace=namespace))["rules"]
    role["metadata"]["namespace"] = binding["metadata"]["namespace"] = namespace
    # The test server's elector is a token user, not a service account.
    binding["subjects"] = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "elector"}]
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    kube_apiserver.admin_request("POST", f"{rbac}/roles", role)
    kube_apiserver.admin_request("POST", f"{rbac}/rolebindings", binding)
    a, b = kube_backend(namespace), kube_backend(namespace)
    await wait_for_rbac(a)
    election = name()
    record = (await a.lease(election).try_acquire("replica-a", 2, None)).record
    assert record is not None and record.holder == "replica-a"
    record = await a.lease(record.election).renew(record)
    watch = b.lease(election).watch()
    first = await anext(watch)
    assert first is not None and first.holder == "replica-a"
    await a.lease(record.election).release(record)
    released = await asyncio.wait_for(anext(watch), 5)
    assert released is not None and not released.is_held
    await watch.aclose()
    taken = (await b.lease(election).try_acquire("replica-b", 2, released)).record
    assert taken is not None and taken.holder == "replica-b"


async def test_missing_namespace_and_bad_credentials(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend], tmp_path: Any
) -> None:
    missing = kube_backend("no-such-namespace")
    with pytest.raises(BackendError) as caught:
        await missing.lease(name()).try_acquire("replica-a", 2, None)
    # Without RBAC there the elector is refused first; as admin it is told the namespace is missing.
    assert "no-such-namespace" in str(caught.value)
    admin = kube_backend("no-such-namespace", kubeconfig=str(kube_apiserver.admin_kubeconfig))
    with pytest.raises(BackendError, match="namespace 'no-such-namespace' does not exist"):
        await admin.lease(name()).try_acquire("replica-a", 2, None)
    config_text = kube_apiserver.kubeconfig.read_text().replace(kube_apiserver.elector_token, "wrong-token")
    bad = tmp_path / "bad.kubeconfig"
    bad.write_text(config_text)
    wrong = kube_backend(kubeconfig=str(bad))
    with pytest.raises(AccessDenied, match="401"):
        await wrong.lease(name()).get()
    with pytest.raises(ConfigError, match="DNS-1123"):
        await kube_backend().lease("Not_A_Name").try_acquire("replica-a", 2, None)


async def test_unreachable_server_is_unavailable(
    tmp_path: Any, kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    from leaderlib.testing.servers import free_port

    text = kube_apiserver.kubeconfig.read_text().replace(
        kube_apiserver.url, f"https://127.0.0.1:{free_port()}"
    )
    path = tmp_path / "down.kubeconfig"
    path.write_text(text)
    backend = kube_backend(kubeconfig=str(path), request_timeout=2)
    with pytest.raises(BackendUnavailable):
        await backend.lease(name()).try_acquire("replica-a", 2, None)
    watch = backend.lease(name()).watch()
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(anext(watch), 10)


# --- watch ----------------------------------------------------------------------------


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("leaderlib-k8s")]


async def test_follower_takes_a_release_in_milliseconds(
    kube_backend: Callable[..., KubernetesBackend],
) -> None:
    election = name()
    slow = {"lease_duration": 10.0, "renew_deadline": 8.0, "renew_interval": 2.0, "retry_period": 30.0}
    leader = LeaderElector(election, kube_backend(), config("leader", **slow))
    follower = LeaderElector(election, kube_backend(), config("follower", **slow))
    async with running(leader) as leader_task:
        await until(lambda: leader.is_leader, timeout=10)
        async with running(follower):
            await until(lambda: follower.leader == "leader", timeout=10)
            await asyncio.sleep(0.3)  # the follower now waits on its watch
            leader.stop()
            stopped = time.monotonic()
            await asyncio.wait_for(leader_task, timeout=10)
            await until(lambda: follower.is_leader, timeout=5)
            handover = time.monotonic() - stopped
    assert handover < 0.5, f"handover took {handover * 1000:.0f} ms"


async def test_watch_resumes_after_the_stream_ends_and_after_410(
    kube_apiserver: KubeAPIServer,
    kube_backend: Callable[..., KubernetesBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import leaderlib.backends.kubernetes._watch as module

    monkeypatch.setattr(module, "_WATCH_SECONDS", 1)  # the server ends each watch after 1 s
    backend, actor = kube_backend(), kube_backend()
    election = name()
    record = (await actor.lease(election).try_acquire("replica-a", 2, None)).record
    assert record is not None
    watch = backend.lease(election).watch()
    first = await anext(watch)
    assert first is not None and first.version == record.version
    await asyncio.sleep(2.5)  # at least two server-side ends of the watch
    record = await actor.lease(record.election).renew(record)
    nxt = await asyncio.wait_for(anext(watch), 5)
    assert nxt is not None and nxt.version == record.version

    await watch.aclose()


@pytest.fixture(scope="module")
def uncached_server() -> Iterator[KubeAPIServer]:
    """A kube-apiserver without watch cache: watches go to etcd, so a compacted version gives 410."""
    with KubeAPIServer(namespace="uncached", extra_args=["--watch-cache=false"]) as server:
        yield server


async def test_watch_relists_after_410_gone(
    uncached_server: KubeAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import leaderlib.backends.kubernetes._watch as module

    server = uncached_server
    monkeypatch.setattr(module, "_WATCH_SECONDS", 1)
    backend, actor = (
        KubernetesBackend.from_url(server.elector_url),
        KubernetesBackend.from_url(server.elector_url),
    )
    lists: list[str] = []
    election = name()
    watcher = backend._watch  # the namespace's one watch: its lists are counted
    list_all = watcher._list

    def counting(run: Any) -> str:
        lists.append(election)
        return list_all(run)

    watcher._list = counting  # type: ignore[method-assign]
    try:
        record = (await actor.lease(election).try_acquire("replica-a", 2, None)).record
        assert record is not None
        watch = backend.lease(election).watch()
        assert (await anext(watch)) is not None
        assert lists == [election]
        # Other writes move etcd on; compacting them away makes our version too old.
        # They go to another namespace: the namespace's watch would see writes in
        # its own and move its version on with them.
        for _ in range(3):
            other = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name()}}
            await asyncio.to_thread(
                server.admin_request, "POST", server.lease_path(namespace="default"), other
            )
        revision = json.loads(server.etcd.etcdctl("endpoint", "status", "-w", "json"))[0]["Status"]["header"][
            "revision"
        ]
        await asyncio.to_thread(server.etcd.etcdctl, "compact", str(revision))
        await until(lambda: len(lists) >= 2, timeout=5)  # the resumed watch got 410 and re-listed
        relisted = await asyncio.wait_for(anext(watch), 5)
        assert relisted is not None and relisted.version == record.version
        record = await actor.lease(record.election).renew(record)
        latest = await asyncio.wait_for(anext(watch), 5)
        assert latest is not None and latest.version == record.version
        await watch.aclose()
    finally:
        await backend.aclose()
        await actor.aclose()


async def test_watch_reports_deletion_and_recreation(
    kube_apiserver: KubeAPIServer, kube_backend: Callable[..., KubernetesBackend]
) -> None:
    backend, actor = kube_backend(), kube_backend()
    election = name()
    record = (await actor.lease(election).try_acquire("replica-a", 2, None)).record
    assert record is not None
    watch = backend.lease(election).watch()
    assert (await anext(watch)) is not None
    kube_apiserver.admin_request("DELETE", kube_apiserver.lease_path(election))
    assert await asyncio.wait_for(anext(watch), 5) is None
    again = (await actor.lease(election).try_acquire("replica-b", 2, None)).record
    assert again is not None and again.holder == "replica-b"
    seen = await asyncio.wait_for(anext(watch), 5)
    assert seen is not None and seen.holder == "replica-b"
    await watch.aclose()


async def test_no_threads_left_after_cancel_and_aclose(
    kube_backend: Callable[..., KubernetesBackend],
) -> None:
    before = {t.ident for t in watch_threads()}
    backend = kube_backend()
    tasks = []
    for _ in range(3):

        async def follow(election: str = name()) -> None:
            async for _record in backend.lease(election).watch():
                pass

        tasks.append(asyncio.create_task(follow()))
    await until(lambda: len(watch_threads()) - len(before) >= 1, timeout=5)
    await asyncio.sleep(0.3)  # the one watch of the namespace is now blocked reading its stream
    assert len(watch_threads()) - len(before) == 1, "three elections share one watch thread"
    started = time.monotonic()
    tasks[0].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tasks[0]
    await asyncio.sleep(0.1)
    assert len(watch_threads()) - len(before) == 1, "the others still watch"
    await backend.aclose()
    elapsed = time.monotonic() - started
    for task in tasks[1:]:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, BackendUnavailable):
            await task
    leftover = [t for t in watch_threads() if t.ident not in before and t.is_alive()]
    assert leftover == [], leftover
    assert elapsed < 2.0, f"stopping watches took {elapsed:.2f}s"


async def test_hung_api_server_is_unavailable_within_the_timeout(uncached_server: KubeAPIServer) -> None:
    """A server that accepts but never answers (SIGSTOP) gives BackendUnavailable, promptly."""
    server = uncached_server
    assert server._proc is not None
    backend = KubernetesBackend.from_url(f"{server.elector_url}&request_timeout=0.5")
    try:
        assert await backend.lease(name()).get() is None  # connected and working
        os.kill(server._proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="cannot reach"):
                await backend.lease(name()).try_acquire("replica-a", 2, None)
            elapsed = time.monotonic() - started
        finally:
            os.kill(server._proc.pid, signal.SIGCONT)
        assert elapsed < 2.5, f"a hung server held the call for {elapsed:.2f}s"
        deadline = time.monotonic() + 10
        while True:  # and it works again once the server answers
            try:
                record = (await backend.lease(name()).try_acquire("replica-a", 2, None)).record
                break
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert record is not None and record.holder == "replica-a"
    finally:
        await backend.aclose()

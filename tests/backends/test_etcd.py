"""The etcd backend against real etcd: what the conformance suite does not cover.

Interoperability with ``etcdctl elect`` (both ways), the key layout of Go's
``concurrency`` package, a 3-member cluster losing the member in use, auth
and TLS, sessions shared across elections, lease loss. Raw reads and writes
go through a plain ``aetcd.Client``, not leaderlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aetcd
import pytest

from leaderlib import ElectorState, LeaderElector, LeaseRecord
from leaderlib._errors import AccessDenied, BackendUnavailable, ConfigError, CorruptLeaseRecord, LeaseLost
from leaderlib.backends import backend_from_url
from leaderlib.backends.etcd import DEFAULT_PREFIX, EtcdBackend, candidate_key, lease_ttl
from leaderlib.testing.pytest_plugin import started
from leaderlib.testing.servers import EtcdCluster, EtcdServer, free_port
from tests.electing import LEASE, config, running, until
from tests.metrics import MetricReader

pytestmark = pytest.mark.timeout(120)


def name() -> str:
    return f"etcd-{uuid.uuid4().hex[:10]}"


def raw_client(server: EtcdServer) -> aetcd.Client:
    return aetcd.Client(host=server.host, port=server.client_port)


@pytest.fixture
async def make(etcd_server: EtcdServer) -> AsyncIterator[Callable[..., EtcdBackend]]:
    made: list[EtcdBackend] = []

    def factory(url: str | None = None, **options: Any) -> EtcdBackend:
        backend = EtcdBackend.from_url(url or etcd_server.url, **options)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.aclose()


# ---------------------------------------------------------------------------- URL


def test_url_forms() -> None:
    backend = EtcdBackend.from_url("etcd://10.0.0.1:2379,10.0.0.2,[::1]:2380?prefix=/app/&timeout=3")
    assert backend._endpoints == ["10.0.0.1:2379", "10.0.0.2:2379", "[::1]:2380"]
    assert backend.prefix == "/app/"
    assert backend.timeout == 3.0
    assert backend.scheme == "etcd"
    assert isinstance(backend_from_url("etcds://h:1"), EtcdBackend)
    with_user = EtcdBackend.from_url("etcd://el%40ector:p%3Ass@h:1")
    assert (with_user._user, with_user._password) == ("el@ector", "p:ss")
    keyword = EtcdBackend.from_url("etcd://u:p@h:1?prefix=/a/", prefix="/b/", user="v", password="q")
    assert (keyword.prefix, keyword._user, keyword._password) == ("/b/", "v", "q")


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("etcd://h:1?cacert=/x", "cacert"),
        ("etcd://h:1/some/path", "backend"),
        ("etcd://h:1?colour=red", "colour"),
        ("etcd://h:1?timeout=soon", "timeout"),
        ("etcd://h:1?timeout=0", "timeout"),
        ("etcd://h:1,,h:2", "backend"),
        ("etcd://h:1?user=alone", "user"),
        ("etcds://h:1?cert=/x", "cert"),
        ("etcds://h:1?cacert=/does/not/exist", "cacert"),
    ],
)
def test_bad_urls_name_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EtcdBackend.from_url(url)
    assert caught.value.field == field


def test_ttl_rounds_up_to_whole_seconds() -> None:
    assert [lease_ttl(d) for d in (0.2, 1.0, 1.5, 2.0, 10.01)] == [1, 1, 2, 2, 11]
    assert candidate_key("/leaderlib/", "jobs", 0x694D8A2F1C3B0A07) == b"/leaderlib/jobs/694d8a2f1c3b0a07"


# ---------------------------------------------------------------------------- key layout


async def test_key_layout_is_go_concurrency(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    election = name()
    record = (await make().lease(election).try_acquire("replica-1", 2.0, None)).record
    assert record is not None and record.holder == "replica-1"
    async with raw_client(etcd_server) as client:
        found = await client.get_prefix(f"{DEFAULT_PREFIX}{election}/".encode())
        assert len(found) == 1
        kv = found[0]
        prefix, _, lease_hex = kv.key.decode().rpartition("/")
        assert prefix == f"{DEFAULT_PREFIX}{election}"
        assert lease_hex == f"{kv.lease:x}", "the last segment is the lease id in lowercase hex"
        assert kv.value == b"replica-1"
        assert record.fencing_token == kv.create_revision
        info = await client.get_lease_info(kv.lease)
        assert info.grantedTTL == 2


async def test_renewal_proclaims_so_version_changes(make: Callable[..., EtcdBackend]) -> None:
    backend = make()
    record = (await backend.lease(name()).try_acquire("a", 2.0, None)).record
    assert record is not None
    renewed = await backend.lease(record.election).renew(record)
    assert renewed.version != record.version
    assert renewed.fencing_token == record.fencing_token
    seen = await make().lease(record.election).get()
    assert seen is not None and seen.version == renewed.version
    assert seen.expires_in is not None and 0 < seen.expires_in <= 3.0


async def test_one_session_serves_many_elections(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    backend = make()
    first, second = name(), name()
    one = (await backend.lease(first).try_acquire("svc", 2.0, None)).record
    two = (await backend.lease(second).try_acquire("svc", 2.0, None)).record
    assert one is not None and two is not None
    async with raw_client(etcd_server) as client:
        leases = {
            (await client.get_prefix(f"{DEFAULT_PREFIX}{e}/".encode()))[0].lease for e in (first, second)
        }
    assert len(leases) == 1, "Go's model: one session lease, one key per election"
    await backend.lease(one.election).release(one)
    assert await make().lease(first).get() is None
    renewed = await backend.lease(two.election).renew(two)  # the shared lease was not revoked
    assert renewed.holder == "svc"


# ---------------------------------------------------------------------------- lease loss


async def test_revoked_session_is_lost_and_replaced(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    backend = make()
    election = name()
    record = (await backend.lease(election).try_acquire("a", 2.0, None)).record
    assert record is not None
    async with raw_client(etcd_server) as client:
        kv = (await client.get_prefix(f"{DEFAULT_PREFIX}{election}/".encode()))[0]
        await client.revoke_lease(kv.lease)
    with pytest.raises(LeaseLost):
        await backend.lease(record.election).renew(record)
    again = (await backend.lease(election).try_acquire("a", 2.0, None)).record
    assert again is not None and again.holder == "a"
    assert again.fencing_token > record.fencing_token, "a new session is a new leadership"


async def test_key_deleted_by_someone_else_is_lost(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    backend = make()
    election = name()
    record = (await backend.lease(election).try_acquire("a", 2.0, None)).record
    assert record is not None
    async with raw_client(etcd_server) as client:
        await client.delete_prefix(f"{DEFAULT_PREFIX}{election}/".encode())
    with pytest.raises(LeaseLost):
        await backend.lease(record.election).renew(record)
    await backend.lease(record.election).release(record)  # a no-op now
    again = (await backend.lease(election).try_acquire("a", 2.0, None)).record
    assert again is not None and again.holder == "a" and again.fencing_token > record.fencing_token


async def test_a_release_through_another_backend_ends_the_term(make: Callable[..., EtcdBackend]) -> None:
    """Release is by record (the Lease contract): a handle of another backend object, which
    never held the term's session, still ends it; a stale record there changes nothing."""
    election = name()
    holder = make()
    record = (await holder.lease(election).try_acquire("a", 2.0, None)).record
    assert record is not None
    other = make().lease(election)
    await other.release(dataclasses.replace(record, fencing_token=record.fencing_token - 1))
    assert await other.get() is not None, "a record of no current term released the lease"
    await other.release(record)
    assert await other.get() is None, "the term's record did not release it"
    with pytest.raises(LeaseLost):
        await holder.lease(election).renew(record)


async def test_corrupt_key_behind_the_leader_is_ignored(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    backend = make()
    election = name()
    record = (await backend.lease(election).try_acquire("a", 2.0, None)).record
    assert record is not None
    async with raw_client(etcd_server) as client:
        await client.put(f"{DEFAULT_PREFIX}{election}/zz-junk".encode(), b"\xff")
    assert (await backend.lease(record.election).renew(record)).holder == "a"
    await backend.lease(record.election).release(record)
    with pytest.raises(CorruptLeaseRecord, match="etcdctl del"):
        await make().lease(election).get()


async def test_closing_a_follower_withdraws_its_candidacy(
    make: Callable[..., EtcdBackend], etcd_server: EtcdServer
) -> None:
    election = name()
    leader = (await make().lease(election).try_acquire("leader", 2.0, None)).record
    follower = EtcdBackend.from_url(etcd_server.url)
    seen = (await follower.lease(election).try_acquire("follower", 2.0, None)).record
    assert leader is not None and seen is not None and seen.holder == "leader"
    await follower.aclose()
    async with raw_client(etcd_server) as client:
        values = [kv.value for kv in await client.get_prefix(f"{DEFAULT_PREFIX}{election}/".encode())]
    assert values == [b"leader"], "a closed follower must not stay queued as a leader nobody runs"


async def test_candidates_further_back_hear_renewals_and_wait_on_their_predecessor(
    make: Callable[..., EtcdBackend],
) -> None:
    """No thundering herd, no polling: the third candidate's watch waits on the second's
    key, and hears the leader's renewals only as records of the leader's term (built from
    the watch's events, asking etcd nothing), which wake no campaign; even when it started
    watching before it queued (as the elector does)."""
    election = name()
    leader_backend = make()
    leader = (await leader_backend.lease(election).try_acquire("leader", 2.0, None)).record
    second, third = make(), make()
    await second.lease(election).try_acquire("second", 2.0, None)
    seen: dict[str, list[LeaseRecord | None]] = {"second": [], "third": []}

    async def follow(label: str, backend: EtcdBackend) -> None:
        async for record in backend.lease(election).watch():
            seen[label].append(record)

    tasks = [asyncio.create_task(follow("second", second)), asyncio.create_task(follow("third", third))]
    try:
        await asyncio.sleep(0.3)  # third watches the leader's key: it has no key yet
        await third.lease(election).try_acquire("third", 2.0, None)
        await asyncio.sleep(0.3)  # now it waits on second's key, and hears the leader's renewals
        before = {label: len(records) for label, records in seen.items()}
        assert leader is not None
        for _ in range(3):
            leader = await leader_backend.lease(leader.election).renew(leader)
            await asyncio.sleep(0.1)
        for label in ("second", "third"):
            heard = seen[label][before[label] :]
            assert len(heard) >= 3, f"the {label} candidate did not hear the leader's renewals: {heard}"
            assert all(
                r is not None and r.holder == "leader" and r.fencing_token == leader.fencing_token
                for r in heard
            ), f"the {label} candidate saw something else than the leader's renewals: {heard}"
        assert [r.version for r in seen["third"][-1:] if r is not None] == [leader.version]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_watch_yields_only_records_etcd_holds(make: Callable[..., EtcdBackend]) -> None:
    """Issue 9, item 9: when the leader ahead of us goes, the watch yields what etcd holds
    (our own key, with its real mod revision), never a record it made up."""
    election = name()
    leader_backend, heir = make(), make()
    leader = (await leader_backend.lease(election).try_acquire("leader", 2.0, None)).record
    assert leader is not None
    queued = await heir.lease(election).try_acquire("heir", 2.0, None)
    assert not queued.acquired
    seen: list[LeaseRecord | None] = []

    async def follow() -> None:
        async for record in heir.lease(election).watch():
            seen.append(record)

    task = asyncio.create_task(follow())
    try:
        await until(lambda: bool(seen), 5, "the first record")
        await leader_backend.lease(leader.election).release(leader)
        await until(lambda: seen[-1] is not None and seen[-1].holder == "heir", 5, "the heir's record")
        record = seen[-1]
        assert record is not None
        assert record.version.isdigit(), f"a made-up version: {record.version!r}"
        held = await make().lease(election).get()
        assert held is not None and (held.version, held.fencing_token) == (
            record.version,
            record.fencing_token,
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_crash_failover_is_measured_and_announced_once(
    make: Callable[..., EtcdBackend], metric_reader: MetricReader
) -> None:
    """Issue 9, item 9: a leader that stops renewing (kept its lease: no release) is
    replaced after its TTL; the new leader records the failover (from the last renewal
    it saw to its acquisition) and announces itself only once it leads."""
    election = name()
    crashed = LeaderElector(election, make(), config("crashed", release_on_shutdown=False))
    announced: list[tuple[str | None, ElectorState]] = []
    follower = LeaderElector(
        election,
        make(),
        config("follower"),
        on_new_leader=lambda holder: announced.append((holder, follower.state)),
    )
    async with running(crashed) as crashed_task:
        await until(lambda: crashed.is_leader, 10, "the first leader")
        async with running(follower):
            await until(lambda: follower.leader == "crashed", 5, "the follower sees the leader")
            await asyncio.sleep(1.0)  # renewals seen on the follower's watch
            crashed.stop()  # no release: the key stays until etcd expires the lease
            await asyncio.wait_for(crashed_task, 10)
            stopped = time.monotonic()
            await until(lambda: follower.is_leader, LEASE + 3, "the follower leads")
            took = time.monotonic() - stopped
            await asyncio.sleep(0.1)  # callbacks run
            # Taken before the teardown: the follower's own stop releases the lease,
            # and its watch may then rightly announce that nobody leads.
            seen = list(announced)
    assert took >= 0.75 * LEASE, f"took over {took:.2f}s after the leader stopped, before its TTL"
    assert seen == [("crashed", ElectorState.FOLLOWING), ("follower", ElectorState.LEADING)], announced
    points = metric_reader.points("leaderlib.failover.duration", election=election, backend="etcd")
    assert [p.count for p in points] == [1], "the failover was not recorded once"
    assert 0.75 * LEASE <= points[0].sum <= took + 0.5, (
        f"failover recorded as {points[0].sum:.3f}s; the leader's last renewal was seen "
        f"about {took:.2f}s before the takeover"
    )


# ---------------------------------------------------------------------------- etcdctl interop


class Etcdctl:
    """An ``etcdctl elect`` process whose stdout is read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.signalled = False
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, server: EtcdServer, *args: str) -> Etcdctl:
        proc = await asyncio.create_subprocess_exec(
            *server.etcdctl_argv(),
            "elect",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode().rstrip("\n"))

    @property
    def elected(self) -> bool:
        """A campaigning etcdctl prints the leader key once elected; it leads until signalled."""
        return bool(self.lines) and not self.signalled

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.signalled = True
            self.proc.send_signal(signal.SIGINT)  # etcdctl resigns on SIGINT
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


async def test_etcdctl_listen_shows_our_leader(
    etcd_server: EtcdServer, make: Callable[..., EtcdBackend]
) -> None:
    election = name()
    prefix = "/custom-prefix/"
    elector = LeaderElector(election, make(f"{etcd_server.url}?prefix={prefix}"), config("leaderlib-replica"))
    async with running(elector):
        await until(lambda: elector.is_leader, 10, "leaderlib leads")
        listener = await Etcdctl.start(etcd_server, f"{prefix}{election}", "--listen")
        try:
            await until(
                lambda: "leaderlib-replica" in listener.lines, 10, "etcdctl --listen shows the leader"
            )
            key = listener.lines[listener.lines.index("leaderlib-replica") - 1]
            assert key.startswith(f"{prefix}{election}/")
        finally:
            await listener.stop()


async def test_etcdctl_candidates_and_leaderlib_take_turns_in_order(
    etcd_server: EtcdServer, make: Callable[..., EtcdBackend]
) -> None:
    """etcdctl first, then two leaderlib electors, then another etcdctl queue up; each
    hands over to the next in queue order, and no two ever lead at once."""
    election = name()
    slow = {"lease_duration": 5.0, "renew_deadline": 4.0, "renew_interval": 0.5, "retry_period": 0.5}
    first_ctl = await Etcdctl.start(etcd_server, f"{DEFAULT_PREFIX}{election}", "etcdctl-1")
    ctls = [first_ctl]
    one = LeaderElector(election, make(), config("leaderlib-1", **slow))
    two = LeaderElector(election, make(), config("leaderlib-2", **slow))
    overlaps: list[list[str]] = []
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        while not stop_sampling.is_set():
            leading = [f"etcdctl-{i + 1}" for i, c in enumerate(ctls) if c.elected]
            leading += [e.identity for e in (one, two) if e.is_leader]
            if len(leading) > 1:
                overlaps.append(leading)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        await until(lambda: first_ctl.elected, 10, "etcdctl-1 elected")
        async with contextlib.AsyncExitStack() as stack:
            one_task = await stack.enter_async_context(running(one))
            await until(lambda: one.leader == "etcdctl-1", 10, "leaderlib-1 sees etcdctl-1")
            two_task = await stack.enter_async_context(running(two))  # queued behind leaderlib-1
            await until(lambda: two.leader == "etcdctl-1", 10, "leaderlib-2 sees etcdctl-1")
            assert not one.is_leader and not two.is_leader

            await first_ctl.stop()
            await until(lambda: one.is_leader or two.is_leader, 5, "a leaderlib elector leads")
            assert one.is_leader, "leaderlib-1 queued first, so it leads first"

            second_ctl = await Etcdctl.start(etcd_server, f"{DEFAULT_PREFIX}{election}", "etcdctl-2")
            ctls.append(second_ctl)
            await asyncio.sleep(1.0)  # etcdctl-2 queued behind leaderlib-2
            one.stop()
            await asyncio.wait_for(one_task, timeout=10)
            await until(lambda: two.is_leader or second_ctl.elected, 5, "the next in line leads")
            assert two.is_leader and not second_ctl.elected, "leaderlib-2 was ahead of etcdctl-2"

            two.stop()
            await asyncio.wait_for(two_task, timeout=10)
            await until(lambda: second_ctl.elected, 5, "etcdctl-2 elected after leaderlib-2 resigned")
            assert second_ctl.lines[-1] == "etcdctl-2"
    finally:
        stop_sampling.set()
        await sampler
        for ctl in ctls:
            await ctl.stop()
    assert overlaps == [], f"co-leaders seen: {overlaps[:5]}"


# ---------------------------------------------------------------------------- cluster


async def test_cluster_member_in_use_dies(etcd_cluster: EtcdCluster) -> None:
    """Kill the member the leader's backend talks to -- the raft leader too, the hard
    case: leadership stays or moves within the lease duration, never two leaders."""
    election = name()
    lease = 4.0
    settings = {"lease_duration": lease, "renew_deadline": 3.0, "renew_interval": 0.5, "retry_period": 0.5}
    status = json.loads(etcd_cluster.members[0].etcdctl("endpoint", "status", "--cluster", "-w", "json"))
    raft_leader = next(
        m["Endpoint"].split("://")[1]
        for m in status
        if m["Status"]["header"]["member_id"] == m["Status"]["leader"]
    )
    endpoints = [raft_leader] + [e for e in etcd_cluster.endpoints if e != raft_leader]
    backends = [EtcdBackend.from_url("etcd://" + ",".join(endpoints)) for _ in range(3)]
    electors = [
        LeaderElector(election, b, config(f"replica-{i}", **settings)) for i, b in enumerate(backends)
    ]
    overlaps: list[list[str]] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            for elector in electors:
                await stack.enter_async_context(running(elector))
            await until(lambda: any(e.is_leader for e in electors), 10, "a leader")
            leader = next(i for i, e in enumerate(electors) if e.is_leader)
            endpoint = backends[leader].endpoint
            assert endpoint == raft_leader
            victim = etcd_cluster.endpoints.index(endpoint)
            etcd_cluster.kill(victim)
            killed = time.monotonic()
            leaderless_since: float | None = None
            longest_gap = 0.0
            while time.monotonic() - killed < 2.5 * lease:
                leading = [e.identity for e in electors if e.is_leader]
                if len(leading) > 1:
                    overlaps.append(leading)
                if not leading:
                    leaderless_since = leaderless_since or time.monotonic()
                    longest_gap = max(longest_gap, time.monotonic() - leaderless_since)
                else:
                    leaderless_since = None
                await asyncio.sleep(0.005)
            assert overlaps == [], f"two leaders at once: {overlaps[:5]}"
            assert any(e.is_leader for e in electors), "no leader after the member died"
            assert longest_gap < lease, f"no leader for {longest_gap:.2f}s (lease {lease}s)"
            survivor = next(i for i, e in enumerate(electors) if e.is_leader)
            print(f"killed member {victim}; leader {leader} -> {survivor}, longest gap {longest_gap:.3f}s")
            assert backends[survivor].endpoint != endpoint
    finally:
        for backend in backends:
            await backend.aclose()


async def test_dead_first_endpoint_is_skipped(
    etcd_server: EtcdServer, make: Callable[..., EtcdBackend]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    backend = make(f"etcd://{dead},{etcd_server.endpoint}")
    record = (await backend.lease(name()).try_acquire("a", 2.0, None)).record
    assert record is not None and record.holder == "a"
    assert backend.endpoint == etcd_server.endpoint


async def test_closing_the_backend_closes_the_connections_it_left(etcd_server: EtcdServer) -> None:
    """A member left for another keeps its connection open a while (resignations go there
    too); closing the backend closes it as well, not only the current one."""
    dead = f"127.0.0.1:{free_port()}"
    backend = EtcdBackend.from_url(f"etcd://{dead},{etcd_server.endpoint}")
    left = backend.channel.current_client()
    await backend.lease(name()).get()
    assert backend.endpoint == etcd_server.endpoint and left.channel is not None
    await backend.aclose()
    assert left.channel is None, "the connection to the member it left was not closed"


async def test_no_member_reachable_is_unavailable(make: Callable[..., EtcdBackend]) -> None:
    backend = make(f"etcd://127.0.0.1:{free_port()},127.0.0.1:{free_port()}?timeout=2")
    started_at = time.monotonic()
    with pytest.raises(BackendUnavailable, match="UNAVAILABLE"):
        await backend.lease(name()).get()
    assert time.monotonic() - started_at < 3


# ---------------------------------------------------------------------------- auth and TLS


@pytest.fixture(scope="module")
def auth_server() -> Any:
    with started(EtcdServer()) as server:
        server.enable_auth(
            users=[("elector", "right-password", DEFAULT_PREFIX), ("outsider", "pw", "/elsewhere/")]
        )
        yield server


async def test_user_limited_to_the_prefix_can_elect(auth_server: EtcdServer) -> None:
    url = f"etcd://elector:right-password@{auth_server.endpoint}"
    backends = [EtcdBackend.from_url(url) for _ in range(2)]
    try:
        election = name()
        electors = [LeaderElector(election, b, config(f"r{i}")) for i, b in enumerate(backends)]
        async with running(electors[0]), running(electors[1]):
            await until(lambda: any(e.is_leader for e in electors), 10, "a leader under auth")
            await asyncio.sleep(1.0)  # renewals and watches work too
            assert sum(e.is_leader for e in electors) == 1
            assert electors[0].leader == electors[1].leader
    finally:
        for backend in backends:
            await backend.aclose()


async def test_wrong_password_fails_fast(auth_server: EtcdServer) -> None:
    backend = EtcdBackend.from_url(f"etcd://elector:wrong@{auth_server.endpoint}")
    try:
        started_at = time.monotonic()
        with pytest.raises(AccessDenied, match="wrong user name or password"):
            await backend.lease(name()).try_acquire("a", 2.0, None)
        assert time.monotonic() - started_at < 1.0
    finally:
        await backend.aclose()


async def test_missing_permission_says_what_to_grant(auth_server: EtcdServer) -> None:
    backend = EtcdBackend.from_url(f"etcd://outsider:pw@{auth_server.endpoint}")
    try:
        with pytest.raises(AccessDenied, match=f"readwrite {DEFAULT_PREFIX}"):
            await backend.lease(name()).try_acquire("a", 2.0, None)
    finally:
        await backend.aclose()


async def test_etcds_with_generated_certificates() -> None:
    with started(EtcdServer(tls=True, client_cert_auth=True)) as server:
        assert server.ca_file is not None and server.client_cert is not None
        url = (
            f"etcds://{server.endpoint}?cacert={server.ca_file}"
            f"&cert={server.client_cert.cert}&key={server.client_cert.key}"
        )
        a, b = EtcdBackend.from_url(url), EtcdBackend.from_url(url)
        untrusted = EtcdBackend.from_url(f"etcds://{server.endpoint}?timeout=2")
        plaintext = EtcdBackend.from_url(f"etcd://{server.endpoint}?timeout=2")
        try:
            election = name()
            record = (await a.lease(election).try_acquire("tls-a", 2.0, None)).record
            assert record is not None and record.holder == "tls-a"
            seen = (await b.lease(election).try_acquire("tls-b", 2.0, None)).record
            assert seen is not None and seen.holder == "tls-a"
            await a.lease(election).release(await a.lease(election).renew(record))
            taken = (await b.lease(election).try_acquire("tls-b", 2.0, None)).record
            assert taken is not None and taken.holder == "tls-b"
            for wrong in (untrusted, plaintext):  # no CA to trust the server / no TLS at all
                with pytest.raises(BackendUnavailable):
                    await wrong.lease(election).get()
        finally:
            for backend in (a, b, untrusted, plaintext):
                await backend.aclose()

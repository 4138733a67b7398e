"""The test servers are real and usable: each is driven with the client its backend uses."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import uuid
from pathlib import Path

import aetcd
import kubernetes
import pytest
import redis

from leaderlib.testing.pytest_plugin import started
from leaderlib.testing.servers import (
    ETCD_VERSION,
    KUBE_VERSION,
    BinaryNotFoundError,
    EtcdCluster,
    EtcdServer,
    KubeAPIServer,
    RedisACLUser,
    RedisServer,
    ServerError,
    find_binary,
)

REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_pinned_versions_match_the_wrapper_modules() -> None:
    # find_binary looks for <name>-<version>; backends/install names the
    # binaries from the go.mod files. The two must not drift apart.
    etcd_mod = (REPO / "backends/etcd/go.mod").read_text()
    kube_mod = (REPO / "backends/kube-apiserver/go.mod").read_text()
    assert re.search(rf"go\.etcd\.io/etcd/server/v3 {re.escape(ETCD_VERSION)}\b", etcd_mod)
    assert re.search(rf"k8s\.io/kubernetes {re.escape(KUBE_VERSION)}\b", kube_mod)


def test_missing_binary_says_to_run_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERLIB_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LEADERLIB_ETCD", raising=False)
    with pytest.raises(BinaryNotFoundError, match="backends/install"):
        find_binary("etcd")
    with pytest.raises(BinaryNotFoundError, match="backends/install"):
        EtcdServer().start()


# ------------------------------------------------------------------ Redis


def test_redis_set_get(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        key = f"servers-test:{uuid.uuid4()}"
        assert client.set(key, b"v", px=5000)
        assert client.get(key) == b"v"
    finally:
        client.close()


def test_redis_tls_with_prefix_limited_acl_user() -> None:
    user = RedisACLUser("elector", "s3cret", key_patterns=("leaderlib:*",))
    with started(RedisServer(tls=True, acl_users=[user])) as server:
        assert server.url.startswith("rediss://127.0.0.1:")
        client = redis.Redis(**server.redis_kwargs(), username="elector", password="s3cret")
        try:
            assert client.set("leaderlib:x", b"1")
            assert client.get("leaderlib:x") == b"1"
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.set("elsewhere", b"1")
        finally:
            client.close()
        # Plain TCP is off in TLS mode: a cleartext PING gets no PONG.
        with socket.create_connection((server.host, server.port), timeout=5) as plain:
            plain.sendall(b"PING\r\n")
            try:
                reply = plain.recv(64)
            except ConnectionResetError:
                reply = b""
            assert not reply.startswith(b"+PONG")


def test_stop_leaves_no_process() -> None:
    server = RedisServer()
    with started(server):
        assert server._proc is not None
        pid = server._proc.pid
    assert _gone(pid)
    assert not server.directory.exists()


# ------------------------------------------------------------------ etcd


async def test_etcd_put_get_lease_watch(etcd_server: EtcdServer) -> None:
    prefix = f"/servers-test/{uuid.uuid4()}".encode()
    async with aetcd.Client(host=etcd_server.host, port=etcd_server.client_port) as client:
        await client.put(prefix + b"/a", b"1")
        got = await client.get(prefix + b"/a")
        assert got is not None and got.value == b"1"

        lease = await client.lease(2)
        await client.put(prefix + b"/leased", b"x", lease=lease)
        assert await client.get(prefix + b"/leased") is not None
        await lease.revoke()
        assert await client.get(prefix + b"/leased") is None

        watch = await client.watch(prefix + b"/w")
        try:
            await client.put(prefix + b"/w", b"changed")

            async def first_event() -> bytes:
                async for event in watch:
                    value: bytes = event.kv.value
                    return value
                raise AssertionError("watch ended without an event")

            assert await asyncio.wait_for(first_event(), 10) == b"changed"
        finally:
            await watch.cancel()


def test_etcd_tls_client_cert_and_prefix_limited_user() -> None:
    with started(EtcdServer(tls=True, client_cert_auth=True)) as server:
        assert server.url.startswith("etcds://127.0.0.1:")
        server.enable_auth(users=[("elector", "pw", "/leaderlib/")])
        server.etcdctl("put", "/leaderlib/x", "1", user="elector", password="pw")
        assert "1" in server.etcdctl("get", "/leaderlib/x", user="elector", password="pw")
        with pytest.raises(ServerError, match="permission denied"):
            server.etcdctl("put", "/other", "1", user="elector", password="pw")


async def test_etcd_cluster_survives_one_member_kill(etcd_cluster: EtcdCluster) -> None:
    assert etcd_cluster.url.count(",") == 2
    key = f"/servers-test/{uuid.uuid4()}".encode()
    first, second = etcd_cluster.members[0], etcd_cluster.members[1]
    async with aetcd.Client(host=second.host, port=second.client_port) as client:
        await client.put(key, b"before")
    etcd_cluster.kill(0)
    assert not first.running()
    etcd_cluster.wait_healthy()
    async with aetcd.Client(host=second.host, port=second.client_port) as client:
        await client.put(key, b"after")
    etcd_cluster.restart(0)
    etcd_cluster.wait_healthy()
    # A linearizable read on the restarted member sees the write it missed.
    async with aetcd.Client(host=first.host, port=first.client_port) as client:
        got = await client.get(key)
    assert got is not None and got.value == b"after"


# ------------------------------------------------------------------ Kubernetes

ApiException = kubernetes.client.exceptions.ApiException

# The first use starts the API server, which takes a while on a busy machine.
kube_timeout = pytest.mark.timeout(300)


def _lease(name: str) -> object:
    return kubernetes.client.V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(name=name),
        spec=kubernetes.client.V1LeaseSpec(holder_identity="servers-test", lease_duration_seconds=15),
    )


@kube_timeout
def test_kube_apiserver_reports_its_release(kube_apiserver: KubeAPIServer) -> None:
    assert kube_apiserver.version()["gitVersion"] == KUBE_VERSION


@kube_timeout
def test_elector_may_create_and_update_a_lease(kube_apiserver: KubeAPIServer) -> None:
    api_client = kubernetes.config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig))
    with api_client:
        api = kubernetes.client.CoordinationV1Api(api_client)
        name = f"servers-test-{uuid.uuid4().hex[:8]}"
        created = api.create_namespaced_lease(kube_apiserver.namespace, _lease(name))
        assert created.spec.holder_identity == "servers-test"
        created.spec.holder_identity = "someone-else"
        updated = api.replace_namespaced_lease(name, kube_apiserver.namespace, created)
        assert updated.spec.holder_identity == "someone-else"
        names = [x.metadata.name for x in api.list_namespaced_lease(kube_apiserver.namespace).items]
        assert name in names
        # Exactly get/list/watch/create/update: no delete.
        with pytest.raises(ApiException) as denied:
            api.delete_namespaced_lease(name, kube_apiserver.namespace)
        assert denied.value.status == 403


@kube_timeout
def test_elector_is_refused_elsewhere(kube_apiserver: KubeAPIServer) -> None:
    api_client = kubernetes.config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig))
    with api_client:
        leases = kubernetes.client.CoordinationV1Api(api_client)
        with pytest.raises(ApiException) as other_namespace:
            leases.create_namespaced_lease("default", _lease("servers-test"))
        assert other_namespace.value.status == 403
        core = kubernetes.client.CoreV1Api(api_client)
        with pytest.raises(ApiException) as configmaps:
            core.list_namespaced_config_map(kube_apiserver.namespace)
        assert configmaps.value.status == 403

"""pytest fixtures that run real servers: ``redis_server``, ``redis_sentinel``
(a master, a replica and three Sentinels, new for each test), ``etcd_server``,
``etcd_cluster``, ``kube_apiserver``, ``toxiproxy_server`` (and ``toxiproxy``,
a client for it whose proxies are deleted after each test), and
``clientgo_elector``, a factory of client-go electors on ``kube_apiserver``.

Enable with ``pytest_plugins = ["leaderlib.testing.pytest_plugin"]`` in a
conftest.py. The single servers are session-scoped (started once, on first
use). ``etcd_cluster`` is shared per module, and every test gets it with all
members running and a leader elected, whatever the previous test killed.

Policy when a server cannot start (binary missing, crash, timeout): with
``CI=true`` in the environment the test FAILS with the server's log, since CI
must prove the backend; elsewhere it is skipped with the reason, so a laptop
without ``backends/install`` can still run the rest. When any test of the
session failed, server directories (logs, data) are kept and their paths
logged; a failed test's report also lists the logs of the servers it used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from leaderlib.testing.clientgo import ClientGoElector
from leaderlib.testing.sentinel import RedisSentinelGroup
from leaderlib.testing.servers import (
    EtcdCluster,
    EtcdServer,
    KubeAPIServer,
    RedisServer,
    ServerError,
    find_binary,
)
from leaderlib.testing.toxiproxy import Toxiproxy, ToxiproxyServer

_S = TypeVar("_S", RedisServer, RedisSentinelGroup, EtcdServer, EtcdCluster, KubeAPIServer, ToxiproxyServer)

_SERVER_TYPES = (RedisServer, RedisSentinelGroup, EtcdServer, EtcdCluster, KubeAPIServer, ToxiproxyServer)


def in_ci() -> bool:
    """True when ``CI=true``: servers that cannot start fail tests instead of skipping them."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def start_or_skip(server: _S) -> _S:
    """Start ``server``; on failure fail the test (``CI=true``) or skip it (elsewhere)."""
    try:
        return server.start()
    except ServerError as exc:
        where = f"\n(log: {exc.log_path})" if exc.log_path else ""
        if in_ci():
            pytest.fail(f"CI=true and a test server could not start: {exc}{where}", pytrace=False)
        pytest.skip(f"test server unavailable: {exc}{where}")


def require_binary(name: str) -> Path:
    """:func:`find_binary` under the fixtures' policy: a missing binary fails the test
    with ``CI=true`` and skips it elsewhere; returns the binary's path."""
    try:
        return find_binary(name)
    except ServerError as exc:
        if in_ci():
            pytest.fail(f"CI=true and a test binary is missing: {exc}", pytrace=False)
        pytest.skip(f"test binary unavailable: {exc}")


@contextlib.contextmanager
def started(server: _S) -> Iterator[_S]:
    """Run ``server`` for the ``with`` block under the same policy as the fixtures.

    For tests that need a server of their own (TLS, ACL users, auth); files
    are kept when the block raises.
    """
    start_or_skip(server)
    failed = True
    try:
        yield server
        failed = False
    finally:
        server.stop(keep=failed)


def _serve(request: pytest.FixtureRequest, make: Callable[[], _S]) -> Iterator[_S]:
    """Start a server for a fixture, apply the CI policy, stop it at teardown."""
    server = start_or_skip(make())
    try:
        yield server
    finally:
        # Keep logs and data when anything in the session failed: the server's
        # log is often the only record of why.
        server.stop(keep=request.session.testsfailed > 0)


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A plain ``redis-server`` (``redis_server.url`` is ``redis://127.0.0.1:PORT``)."""
    yield from _serve(request, RedisServer)


@pytest.fixture
def redis_sentinel(request: pytest.FixtureRequest) -> Iterator[RedisSentinelGroup]:
    """A Redis master, a replica and three Sentinels (quorum 2, down after 1 s), new for each
    test, since tests kill masters; ``redis_sentinel.url`` is ``redis+sentinel://.../leaderlib``.
    A failover takes 1.5 to 4 s (:meth:`~RedisSentinelGroup.wait_for_failover`)."""
    yield from _serve(request, RedisSentinelGroup)


@pytest.fixture(scope="session")
def etcd_server(request: pytest.FixtureRequest) -> Iterator[EtcdServer]:
    """A single-member etcd, fsync off (``etcd_server.url`` is ``etcd://127.0.0.1:PORT``)."""
    yield from _serve(request, EtcdServer)


@pytest.fixture(scope="module")
def _etcd_cluster_shared(request: pytest.FixtureRequest) -> Iterator[EtcdCluster]:
    yield from _serve(request, EtcdCluster)


@pytest.fixture
def etcd_cluster(_etcd_cluster_shared: EtcdCluster) -> EtcdCluster:
    """A 3-member etcd cluster with every member up; tests may ``kill``/``restart`` members."""
    cluster = _etcd_cluster_shared
    for index, member in enumerate(cluster.members):
        if not member.running():
            cluster.restart(index)
    cluster.wait_healthy()
    return cluster


@pytest.fixture(scope="session")
def kube_apiserver(request: pytest.FixtureRequest) -> Iterator[KubeAPIServer]:
    """A kube-apiserver with its own etcd; ``kubeconfig`` is the least-privileged
    ``elector`` user's, ``admin_kubeconfig`` the admin's, ``namespace`` the test namespace.

    The first start can take a while on a busy 2-core machine; give the first
    test that uses it a generous ``@pytest.mark.timeout``.
    """
    yield from _serve(request, KubeAPIServer)


@pytest.fixture(scope="session")
def toxiproxy_server(request: pytest.FixtureRequest) -> Iterator[ToxiproxyServer]:
    """A ``toxiproxy-server`` (API at ``toxiproxy_server.url``); for proxies that
    outlive one test (module fixtures), made with ``toxiproxy_server.create_proxy``."""
    yield from _serve(request, ToxiproxyServer)


@pytest.fixture
def toxiproxy(toxiproxy_server: ToxiproxyServer) -> Iterator[Toxiproxy]:
    """A Toxiproxy API client; the proxies it creates (and their toxics) are deleted after the test.

    ``proxy = toxiproxy.create_proxy((host, port))``, then connect to ``proxy.listen``.
    """
    client = Toxiproxy(toxiproxy_server.url)
    try:
        yield client
    finally:
        client.delete_proxies()


@pytest.fixture
def clientgo_elector(
    kube_apiserver: KubeAPIServer, tmp_path: Path
) -> Iterator[Callable[..., ClientGoElector]]:
    """A factory of started client-go electors on ``kube_apiserver`` (``elector`` user, test namespace).

    ``clientgo_elector(name, identity, lease_duration=15, renew_deadline=10,
    retry_period=2, **kwargs)`` returns a running :class:`ClientGoElector`
    (its log in the test's ``tmp_path``); every one still running is
    terminated (SIGTERM, then SIGKILL) after the test. The binary follows the
    fixtures' policy (fail with ``CI=true``, skip elsewhere).
    """
    require_binary("clientgo-elector")
    made: list[ClientGoElector] = []

    def make(name: str, identity: str, *args: Any, **kwargs: Any) -> ClientGoElector:
        kwargs.setdefault("log_path", tmp_path / f"clientgo-{identity.replace('/', '_')}-{len(made)}.log")
        elector = ClientGoElector(
            kube_apiserver.kubeconfig, kube_apiserver.namespace, name, identity, *args, **kwargs
        )
        made.append(elector)
        return elector.start()

    try:
        yield make
    finally:
        for elector in made:
            elector.terminate(elector.stop_timeout)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, name the logs of the servers the test used in its report."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        lines = [
            f"{name}: {server.log_path}"
            for name, server in funcargs.items()
            if isinstance(server, _SERVER_TYPES)
        ]
        if lines:
            report.sections.append(("leaderlib server logs", "\n".join(lines)))
    return report

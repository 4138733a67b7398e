"""Replica processes on every real store, with short leases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

#: The lease the replicas run with (the other timings follow it).
LEASE = 2.0
SHORT_LEASES = {
    "LEADERLIB_LEASE_DURATION": str(LEASE),
    "LEADERLIB_RENEW_DEADLINE": "1.5",
    "LEADERLIB_RENEW_INTERVAL": "0.5",
    "LEADERLIB_RETRY_PERIOD": "0.5",
}


@pytest.fixture(params=["sqlite", "redis", "etcd", "kubernetes"])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The backend URL of a real store; replicas started meanwhile inherit short leases."""
    for key, value in SHORT_LEASES.items():
        monkeypatch.setenv(key, value)
    store = request.param
    if store == "sqlite":
        yield f"sqlite:///{(tmp_path / 'leases.sqlite3').as_posix().lstrip('/')}"
    elif store == "redis":
        yield str(request.getfixturevalue("redis_server").url)
    elif store == "etcd":
        yield str(request.getfixturevalue("etcd_server").url)
    else:
        server = request.getfixturevalue("kube_apiserver")
        yield f"kubernetes://{server.namespace}?kubeconfig={server.kubeconfig}"

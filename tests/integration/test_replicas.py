"""Three replica processes per backend: SIGKILL the leader, then SIGTERM the next.

The account comes from the replicas' own JSON logs (``leaderlib demo``'s
machinery): leadership intervals must never overlap, no tick may run twice,
a killed leader is replaced within lease duration + 1 s, and a gracefully
stopped one within 1 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from leaderlib._demo import _Demo

LEASE = 2.0
SHORT_LEASES = {
    "LEADERLIB_LEASE_DURATION": str(LEASE),
    "LEADERLIB_RENEW_DEADLINE": "1.5",
    "LEADERLIB_RENEW_INTERVAL": "0.5",
    "LEADERLIB_RETRY_PERIOD": "0.5",
}


def backend_url(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if store == "sqlite":
        return f"sqlite:///{(tmp_path / 'leases.sqlite3').as_posix().lstrip('/')}"
    if store == "redis":
        return str(request.getfixturevalue("redis_server").url)
    if store == "etcd":
        return str(request.getfixturevalue("etcd_server").url)
    if store == "kubernetes":
        server = request.getfixturevalue("kube_apiserver")
        return f"kubernetes://{server.namespace}?kubeconfig={server.kubeconfig}"
    raise AssertionError(store)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis", "etcd", "kubernetes"])
def test_failover_and_handover(
    store: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in SHORT_LEASES.items():
        monkeypatch.setenv(key, value)
    demo = _Demo(replicas=3, duration=12, backend=backend_url(store, request, tmp_path), quiet=True)
    try:
        summary = demo.run()
    finally:
        for replica in demo.replicas:
            if replica.process.poll() is None:
                replica.process.kill()

    assert summary["overlaps"] == 0, summary["leaderships"]
    assert summary["duplicate_ticks"] == 0
    assert summary["job_runs"] > 0
    assert summary["failover_seconds"] is not None, "nobody took over from the killed leader"
    assert summary["failover_seconds"] <= LEASE + 1, summary
    assert summary["handover_seconds"] is not None, "nobody took over from the stopped leader"
    assert summary["handover_seconds"] < 1.0, summary
    tokens = [term["fencing_token"] for term in summary["leaderships"]]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens
    killed = [r.name for r in demo.replicas if r.killed_at is not None]
    assert len(killed) == 1
    for name, code in summary["exit_codes"].items():
        if name not in killed:
            assert code == 0, f"{name} exited with {code} after SIGTERM"

"""The kubernetes backend's pure parts: MicroTime, record <-> Lease, names, URL.

No server is needed: these test conversions only. Everything that claims the
backend works runs against a real kube-apiserver in tests/backends/.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from leaderlib._errors import ConfigError, CorruptLeaseRecord
from leaderlib.backends import FIRST_TOKEN
from leaderlib.backends.kubernetes import (
    ROLE_YAML,
    KubernetesBackend,
    format_microtime,
    lease_duration_seconds,
    parse_microtime,
    record_from_lease,
    validate_lease_name,
)

UTC = dt.UTC


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (dt.datetime(2026, 11, 28, 12, 0, 5, tzinfo=UTC), "2026-11-28T12:00:05.000000Z"),
        (dt.datetime(2026, 11, 28, 12, 0, 5, 120, tzinfo=UTC), "2026-11-28T12:00:05.000120Z"),
        (dt.datetime(2026, 11, 28, 12, 0, 5, 999999, tzinfo=UTC), "2026-11-28T12:00:05.999999Z"),
        (
            dt.datetime(2026, 11, 28, 13, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2026-11-28T12:00:05.000000Z",
        ),
    ],
)
def test_microtime_has_six_digits_and_z(when: dt.datetime, text: str) -> None:
    assert format_microtime(when) == text
    assert parse_microtime(text) == when


def test_microtime_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError):
        format_microtime(dt.datetime(2026, 11, 28, 12, 0, 5))


@pytest.mark.parametrize("text", ["2026-11-28T12:00:05Z", "2026-11-28T12:00:05.5+00:00"])
def test_parse_accepts_rfc3339(text: str) -> None:
    assert parse_microtime(text).tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "2026-11-28T12:00:05", ""])
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_microtime(text)


@pytest.mark.parametrize(
    ("seconds", "whole"), [(2.0, 2), (1.5, 2), (0.2, 1), (10, 10), (2.0000000001, 2), (15.01, 16)]
)
def test_lease_duration_rounds_up(seconds: float, whole: int) -> None:
    assert lease_duration_seconds(seconds) == whole


@pytest.mark.parametrize("name", ["a", "billing-cron", "svc.jobs.nightly", "x" * 253, "0abc"])
def test_valid_lease_names(name: str) -> None:
    assert validate_lease_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Billing", "svc:job", "-a", "a-", "a..b", "under_score", "x" * 254, "a/b"]
)
def test_invalid_lease_names_say_why(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_lease_name(name)
    assert "DNS-1123 subdomain" in str(caught.value)
    assert caught.value.field == "election"


def lease(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "jobs", "namespace": "prod", "resourceVersion": "4711"},
        "spec": spec,
    }


def test_record_from_client_go_lease() -> None:
    record = record_from_lease(
        "jobs",
        lease(
            holderIdentity="pod-a",
            leaseDurationSeconds=15,
            acquireTime="2026-11-28T12:00:05.000000Z",
            renewTime="2026-11-28T12:00:09.250000Z",
            leaseTransitions=3,
        ),
    )
    assert record.holder == "pod-a"
    assert record.lease_duration == 15.0
    assert record.transitions == 3
    assert record.fencing_token == 4, "the token is leaseTransitions + 1: FIRST_TOKEN for a new Lease"
    assert record.version == "4711"
    assert record.acquire_time == dt.datetime(2026, 11, 28, 12, 0, 5, tzinfo=UTC)
    assert record.renew_time == dt.datetime(2026, 11, 28, 12, 0, 9, 250000, tzinfo=UTC)
    assert record.expires_in is None, "a Lease has no server-side expiry"


def test_released_and_empty_leases_are_free() -> None:
    released = record_from_lease("jobs", lease(holderIdentity="", leaseDurationSeconds=1, leaseTransitions=4))
    assert not released.is_held and released.transitions == 4
    empty = record_from_lease("jobs", lease())
    assert not empty.is_held and empty.fencing_token == FIRST_TOKEN


@pytest.mark.parametrize(
    "spec",
    [
        {"holderIdentity": "pod-a"},
        {"holderIdentity": "pod-a", "leaseDurationSeconds": 0},
        {"holderIdentity": "pod-a", "leaseDurationSeconds": "10"},
        {"holderIdentity": "pod-a", "leaseDurationSeconds": 10, "renewTime": "soon"},
        {"holderIdentity": "pod-a", "leaseDurationSeconds": 10, "leaseTransitions": -1},
        {"holderIdentity": 7, "leaseDurationSeconds": 10},
    ],
)
def test_unreadable_leases_are_corrupt(spec: dict[str, Any]) -> None:
    with pytest.raises(CorruptLeaseRecord) as caught:
        record_from_lease("jobs", lease(**spec))
    message = str(caught.value)
    assert "jobs" in message and "kubectl delete lease jobs" in message


def test_role_yaml_grants_exactly_the_verbs() -> None:
    text = ROLE_YAML.format(namespace="prod")
    assert 'verbs: ["get", "list", "watch", "create", "update"]' in text
    assert "namespace: prod" in text and 'resources: ["leases"]' in text


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "from-context"}},
            {"name": "two", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "one",
    }
    path.write_text(json.dumps(config))
    return path


async def test_url_namespace_and_options(kubeconfig: Path) -> None:
    backend = KubernetesBackend.from_url(f"kubernetes://prod?kubeconfig={kubeconfig}&request_timeout=3")
    try:
        assert backend.namespace == "prod"
    finally:
        await backend.aclose()
    defaulted = KubernetesBackend.from_url(f"kubernetes://?kubeconfig={kubeconfig}")
    other = KubernetesBackend.from_url("kubernetes://", kubeconfig=str(kubeconfig), context="two")
    try:
        assert defaulted.namespace == "from-context"
        assert other.namespace == "default"
    finally:
        await defaulted.aclose()
        await other.aclose()


def test_url_errors_name_the_field(kubeconfig: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        KubernetesBackend.from_url(f"kubernetes://Prod_1?kubeconfig={kubeconfig}")
    assert caught.value.field == "namespace"
    with pytest.raises(ConfigError) as caught:
        KubernetesBackend.from_url(f"kubernetes://prod?kubeconfig={tmp_path / 'missing'}")
    assert caught.value.field == "kubeconfig" and "no kubeconfig" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        KubernetesBackend.from_url(f"kubernetes://prod?kubeconfig={kubeconfig}&context=nope")
    assert caught.value.field == "kubeconfig"
    with pytest.raises(ConfigError) as caught:
        KubernetesBackend.from_url(f"kubernetes://prod?kubeconfig={kubeconfig}&colour=blue")
    assert caught.value.field == "colour"
    with pytest.raises(ConfigError):
        KubernetesBackend.from_url(f"kubernetes://prod/extra?kubeconfig={kubeconfig}")


def test_kubeconfig_env_is_the_default(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    backend = KubernetesBackend.from_url("kubernetes://")
    assert backend.namespace == "from-context"
    backend._api.close()
    backend._pool.shutdown()

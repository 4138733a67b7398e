"""Helpers of the kubernetes backend tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from leaderlib.backends import LeaseRecord
from leaderlib.backends.kubernetes import KubernetesBackend, KubernetesLease


class Request(NamedTuple):
    """One request a backend sent: its method, URL and body (``None`` without one)."""

    method: str
    url: str
    body: bytes | None


def name() -> str:
    """A new election (Lease) name."""
    return f"k8s-{uuid.uuid4().hex[:10]}"


async def leading(make: Callable[[], KubernetesBackend]) -> tuple[KubernetesLease, LeaseRecord]:
    """A new election's handle on a new backend (``make``: the ``kube_backend`` fixture), and
    the term it just acquired as replica-a (a 2 s lease)."""
    lease = make().lease(name())
    record = (await lease.try_acquire("replica-a", 2, None)).record
    assert record is not None and record.holder == "replica-a"
    return lease, record


def record_requests(backend: KubernetesBackend) -> list[Request]:
    """Every request the backend sends from now on, in order."""
    sent: list[Request] = []
    pool = backend._api.rest_client.pool_manager
    original = pool.request

    def recording(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        body = kwargs.get("body")
        sent.append(Request(method, url, body.encode() if isinstance(body, str) else body))
        return original(method, url, *args, **kwargs)

    pool.request = recording  # type: ignore[method-assign]
    return sent

"""Fixtures of the backend tests on real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from leaderlib.backends.kubernetes import KubernetesBackend
from leaderlib.testing.servers import KubeAPIServer


@pytest.fixture
async def kube_backend(kube_apiserver: KubeAPIServer) -> AsyncIterator[Callable[..., KubernetesBackend]]:
    """Makes ``kubernetes://`` backends on ``kube_apiserver`` (one per simulated replica) and
    closes them after the test.

    ``kube_backend(namespace=None, **options)``: as the ``elector`` user in ``namespace``
    (default: the server's test namespace); ``options`` go to ``KubernetesBackend.from_url``
    (``kubeconfig=`` another user's, ``request_timeout=``). A module that overrides
    ``kube_apiserver`` (a server of its own) gets backends on that server.
    """
    made: list[KubernetesBackend] = []

    def make(namespace: str | None = None, **options: Any) -> KubernetesBackend:
        options.setdefault("kubeconfig", str(kube_apiserver.kubeconfig))
        backend = KubernetesBackend.from_url(
            f"kubernetes://{namespace or kube_apiserver.namespace}", **options
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()

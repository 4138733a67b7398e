"""The conformance suite on ``kubernetes://``, against a real kube-apiserver.

The electors run as the unprivileged ``elector`` user (a Role with exactly
get/list/watch/create/update on leases); foreign and corrupt records are
written as ``admin``, the way another program would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from typing import Any

import pytest

from leaderlib.backends import Backend
from leaderlib.backends.kubernetes import KubernetesBackend, format_microtime
from leaderlib.backends.kubernetes._record import RUNS_ANNOTATION
from leaderlib.testing.servers import KubeAPIServer

CORRUPTIBLE = True


def client_go_lease(
    server: KubeAPIServer,
    name: str,
    holder: str,
    lease_duration: float,
    *,
    renew_time: dt.datetime | None = None,
    transitions: int = 0,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A Lease exactly as client-go's LeaseLock creates it for ``holder``."""
    now = format_microtime(renew_time or dt.datetime.now(dt.UTC))
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace or server.namespace},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, math.ceil(lease_duration)),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        },
    }


class KubernetesHarness:
    # Not DNS-1123 subdomains, so not Lease names.
    bad_election_names = ("Not_A_Name", "UPPER", "-dash-first", "a" * 254)

    def __init__(self, server: KubeAPIServer) -> None:
        self.server = server
        self.url = server.elector_url

    def backend(self) -> Backend:
        return KubernetesBackend.from_url(self.url)

    async def write_foreign(self, election: str, holder: str, lease_duration: float) -> None:
        """A client-go elector's Lease: another holder, renewTime now."""
        lease = client_go_lease(self.server, election, holder, lease_duration)
        await asyncio.to_thread(self.server.admin_put_lease, lease)

    async def write_corrupt(self, election: str) -> None:
        """A holder without leaseDurationSeconds: the API server accepts it, no elector can judge it."""
        lease = client_go_lease(self.server, election, "someone", 1)
        del lease["spec"]["leaseDurationSeconds"]
        await asyncio.to_thread(self.server.admin_put_lease, lease)

    async def write_corrupt_run(self, election: str, job: str) -> None:
        """``job``'s entry in the Lease's runs annotation is a string, not a run record; the
        spec is left as it is (the write still moves the Lease's resourceVersion)."""
        await asyncio.to_thread(self._annotate_run, election, job, "not a run record")

    def _annotate_run(self, election: str, job: str, value: Any) -> None:
        lease = self.server.admin_get_lease(election)
        annotations = lease["metadata"].setdefault("annotations", {})
        runs = json.loads(annotations.get(RUNS_ANNOTATION, "{}"))
        runs[job] = value
        annotations[RUNS_ANNOTATION] = json.dumps(runs)
        self.server.admin_request("PUT", self.server.lease_path(election), lease)


def make_harness(request: pytest.FixtureRequest) -> KubernetesHarness:
    server: KubeAPIServer = request.getfixturevalue("kube_apiserver")
    return KubernetesHarness(server)

"""``kubernetes://NAMESPACE``: a coordination.k8s.io/v1 Lease per election.

URL and options (query string or keyword arguments; keywords win)::

    kubernetes://prod                               namespace "prod"
    kubernetes://prod?kubeconfig=/etc/kube/config   a kubeconfig file
    kubernetes://prod?context=staging               a context of the kubeconfig
    kubernetes://                                   the pod's own namespace (in a
                                                    cluster), else the context's
                                                    namespace, else "default"

``kubeconfig`` (path), ``context`` (name) and ``request_timeout`` (seconds per
API request, default 10). In a pod (``KUBERNETES_SERVICE_HOST`` set) and
without ``kubeconfig`` the service account is used (``token``, ``ca.crt`` and
``namespace`` under ``/var/run/secrets/kubernetes.io/serviceaccount``, or under
``$LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR``); otherwise the kubeconfig from
``KUBECONFIG`` or ``~/.kube/config``.

The Lease's name is the election's name, so it must be a DNS-1123 subdomain
(lowercase letters, digits, ``-`` and ``.``). The record is exactly what
client-go's ``LeaseLock`` writes, so a Go controller and a leaderlib replica can
campaign for the same Lease::

    spec:
      holderIdentity: web-7f9c/1/x2ab9q   # "" once released
      leaseDurationSeconds: 10            # whole seconds, rounded up
      acquireTime: "2026-11-28T12:00:05.000000Z"   # MicroTime: six digits + Z
      renewTime: "2026-11-28T12:00:09.000000Z"
      leaseTransitions: 3                 # +1 on every change of holder

Concurrency is optimistic on ``metadata.resourceVersion``: create if absent
(409 AlreadyExists = lost), update with the version last read (409 Conflict =
lost). The Lease has no server-side expiry: a follower counts
``leaseDurationSeconds`` on its own monotonic clock from when it last saw the
record change (the elector does that, as client-go does), and only then asks
this backend to replace exactly that version (``takeover``). ``renewTime`` is
for humans and is never compared with a local clock.

The fencing token is ``leaseTransitions + 1`` (so the first term's is
``FIRST_TOKEN``, 1, as on every store; the record's ``transitions`` is
``leaseTransitions`` itself): every write that changes the holder adds one and
every other write keeps it, and the API server refuses a write based on a
stale resourceVersion, so it never goes down while the Lease exists.

Job run records (``record_run``/``last_runs``) live on the election's own Lease,
in the annotation ``leaderlib.dev/last-runs`` (job -> run, as JSON), written
by an update whose resourceVersion is that of an object showing the run's
term; the spec goes back unchanged. No verb beyond the Role's ``update``.

The official ``kubernetes`` client is synchronous: each instance keeps one
``ApiClient`` (one pool of keep-alive connections) and runs requests on a
thread pool of fixed size (:mod:`._api`); all its elections share ONE watch of
the namespace's Leases on ONE thread, dispatched by name (:mod:`._watch`).
A Lease this process has no copy of is created in one request (POST; read only
on 409). Bodies are sent as JSON built here, because the generated models
serialise a whole-second datetime as ``...:05+00:00``, which the API server
rejects.

The package by job: :mod:`._record` (MicroTime, the record, Lease names),
:mod:`._api` (requests, auth, the error table), :mod:`._watch`,
:mod:`._lease` (compare-and-swap), :mod:`._config` (kubeconfig, in-cluster).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kubernetes import client as k8s_client

from ..._clock import Clock, SystemClock
from ..._errors import ConfigError
from ..._logging import get_logger
from .. import parse_options, split_url
from ._api import ROLE_YAML, Rest
from ._config import default_namespace, load_configuration
from ._lease import KubernetesLease
from ._record import (
    DNS_LABEL,
    format_microtime,
    lease_duration_seconds,
    lease_spec,
    parse_microtime,
    record_from_lease,
    validate_lease_name,
)
from ._watch import NamespaceWatch

__all__ = [
    "ROLE_YAML",
    "KubernetesBackend",
    "KubernetesLease",
    "format_microtime",
    "lease_duration_seconds",
    "lease_spec",
    "parse_microtime",
    "record_from_lease",
    "validate_lease_name",
]

logger = get_logger(__name__)


class KubernetesBackend:
    """Leases as coordination.k8s.io/v1 Lease objects; see the module docstring for the URL."""

    scheme = "kubernetes"
    #: client-go restarts its expiry count only when its record's JSON changes,
    #: and renewTime is whole seconds there: renewals less than a second apart
    #: can be invisible to a client-go follower on the same Lease.
    observation_granularity = 1.0

    def __init__(
        self,
        namespace: str = "",
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        request_timeout: float = 10.0,
        configuration: k8s_client.Configuration | None = None,
        clock: Clock | None = None,
    ) -> None:
        if request_timeout <= 0:
            raise ConfigError(
                f"must be a positive number of seconds, got {request_timeout!r}", field="request_timeout"
            )
        self._request_timeout = request_timeout
        # Only the wall clock is used, for the human-readable times in the record.
        self._clock = clock or SystemClock()
        if configuration is None:
            configuration = load_configuration(kubeconfig, context)
        if not namespace:
            namespace = default_namespace(kubeconfig, context)
        if len(namespace) > 63 or not DNS_LABEL.fullmatch(namespace):
            raise ConfigError(
                f"{namespace!r} is not a namespace name (a DNS-1123 label: at most 63 lowercase "
                "letters, digits and '-')",
                field="namespace",
            )
        self.namespace = namespace
        self._rest = Rest(configuration, namespace=namespace, scheme=self.scheme, timeout=request_timeout)
        self._api = self._rest.client
        self._pool = self._rest.pool
        self._watch = NamespaceWatch(self._rest)
        self._leases: dict[str, KubernetesLease] = {}
        self._leases_lock = threading.Lock()
        self._rounded: set[float] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KubernetesBackend:
        parts = split_url(url)
        configuration = options.pop("configuration", None)
        clock = options.pop("clock", None)
        parsed = parse_options(parts, {"kubeconfig": str, "context": str, "request_timeout": float}, options)
        if parts.path not in ("", "/"):
            raise ConfigError(
                f"{url!r}: expected kubernetes://NAMESPACE with nothing after the namespace",
                field="backend",
            )
        return cls(parts.netloc, configuration=configuration, clock=clock, **parsed)

    def _duration(self, lease_duration: float) -> int:
        seconds = lease_duration_seconds(lease_duration)
        if seconds != lease_duration and lease_duration not in self._rounded:
            self._rounded.add(lease_duration)
            logger.warning(
                "Kubernetes Lease durations are whole seconds; rounded %s s up to %d s",
                lease_duration,
                seconds,
            )
        return seconds

    # -- the Backend Protocol ---------------------------------------------------------

    def lease(self, election: str) -> KubernetesLease:
        """The election's handle (the same one each time); ConfigError unless the name can name a Lease."""
        validate_lease_name(election)
        with self._leases_lock:
            handle = self._leases.get(election)
            if handle is None:
                handle = self._leases[election] = KubernetesLease(self, election)
            return handle

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = self._rest.closed = True
        thread = self._watch.close()

        def shut_down() -> None:
            if thread is not None:
                thread.join(timeout=self._request_timeout + 1)
            self._rest.close()

        await asyncio.to_thread(shut_down)

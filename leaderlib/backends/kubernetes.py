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

The official ``kubernetes`` client is synchronous: each instance keeps one
``ApiClient`` (one pool of keep-alive connections) and runs requests on a small
thread pool of its own; each watch streams on a thread of its own. Bodies are
sent as JSON this module builds, because the generated models serialise a
whole-second datetime as ``...:05+00:00``, which the API server rejects.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from .._clock import Clock, SystemClock
from .._errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    ConfigError,
    CorruptLeaseRecord,
    LeaseLost,
)
from .._logging import get_logger
from . import FIRST_TOKEN, Acquisition, LeaseRecord, decide, parse_options, split_url
from ._errors import ErrorMap, Row, error_map

__all__ = [
    "ROLE_YAML",
    "KubernetesBackend",
    "KubernetesLease",
    "format_microtime",
    "lease_duration_seconds",
    "parse_microtime",
    "record_from_lease",
    "validate_lease_name",
]

logger = get_logger(__name__)

T = TypeVar("T")

_GROUP_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_LEASE_PATH = _GROUP_PATH + "/{name}"
_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
#: Where the kubelet mounts a pod's service account (token, ca.crt, namespace);
#: ``$LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR`` points elsewhere (tests run
#: "pods" as local processes with a token from the TokenRequest API).
_SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_SERVICEACCOUNT_DIR_VARIABLE = "LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR"

#: Server-side end of one watch request; the watch then resumes from the last
#: resourceVersion, so this only bounds how long a silently dead connection goes
#: unnoticed (the read timeout below is its backstop).
_WATCH_SECONDS = 60
_WATCH_READ_TIMEOUT = _WATCH_SECONDS + 15.0

# RFC 1123 subdomain, as the API server validates object names.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

#: The least privilege the backend needs, in one namespace. Shown in 403 errors.
ROLE_YAML = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: leaderlib
  namespace: {namespace}
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "list", "watch", "create", "update"]
"""


# --- the record on the wire -------------------------------------------------


def format_microtime(when: dt.datetime) -> str:
    """Return ``when`` as a Kubernetes MicroTime: UTC, exactly six fractional digits, ``Z``.

    The API server parses MicroTime with a fixed layout; ``+00:00`` or a missing
    fraction (what ``isoformat`` gives for a whole second) is rejected.
    """
    if when.tzinfo is None:
        raise ValueError("MicroTime needs an aware datetime")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_microtime(text: str) -> dt.datetime:
    """Return the aware UTC datetime of a MicroTime or RFC 3339 time; ValueError if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"expected a time string, got {text!r}")
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return when.astimezone(dt.UTC)


def lease_duration_seconds(lease_duration: float) -> int:
    """``leaseDurationSeconds`` for a duration in seconds: whole seconds, rounded up, at least 1.

    Rounding up keeps the leader safe: followers wait at least as long as the
    leader believes its lease lasts.
    """
    # The tolerance keeps 2.0000000001 (float noise) from becoming 3.
    return max(1, math.ceil(lease_duration - 1e-9))


def validate_lease_name(election: str) -> str:
    """Return ``election`` if it can name a Lease (a DNS-1123 subdomain); ConfigError otherwise."""
    if not isinstance(election, str) or len(election) > 253 or not _DNS_SUBDOMAIN.fullmatch(election):
        raise ConfigError(
            f"{election!r} cannot name a Kubernetes Lease: the election name must be a DNS-1123 "
            "subdomain (at most 253 characters of lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit), e.g. 'billing-cron'",
            field="election",
        )
    return election


def record_from_lease(election: str, lease: dict[str, Any], *, backend: str = "kubernetes") -> LeaseRecord:
    """Read a Lease object (as the API server returns it, decoded JSON) as a :class:`LeaseRecord`.

    A Lease with a holder but no positive ``leaseDurationSeconds`` cannot be
    judged (client-go would treat it as expired at once, leaderlib refuses to
    guess) and raises :class:`CorruptLeaseRecord`, as does any field of the
    wrong type. A Lease without a holder is free.
    """
    name = lease.get("metadata", {}).get("name", election) if isinstance(lease, dict) else election

    def corrupt(why: str) -> CorruptLeaseRecord:
        return CorruptLeaseRecord(
            f"Lease {name!r} is not a leader-election record: {why}; fix or delete it "
            f"(kubectl delete lease {name} -n NAMESPACE) and the electors will recreate it",
            election=election,
            backend=backend,
        )

    if not isinstance(lease, dict):
        raise corrupt("the API server returned something that is not an object")
    metadata = lease.get("metadata")
    spec = lease.get("spec") or {}
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        raise corrupt("metadata or spec is not an object")
    version = metadata.get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise corrupt("metadata.resourceVersion is missing")
    holder = spec.get("holderIdentity") or ""
    if not isinstance(holder, str):
        raise corrupt(f"holderIdentity is {holder!r}, not a string")
    duration = spec.get("leaseDurationSeconds")
    transitions = spec.get("leaseTransitions") or 0
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int)):
        raise corrupt(f"leaseDurationSeconds is {duration!r}, not an integer")
    if holder and (duration is None or duration <= 0):
        raise corrupt(f"holder {holder!r} is set but leaseDurationSeconds is {duration!r}")
    if isinstance(transitions, bool) or not isinstance(transitions, int) or transitions < 0:
        raise corrupt(f"leaseTransitions is {transitions!r}, not a non-negative integer")
    times: dict[str, dt.datetime | None] = {}
    for key in ("acquireTime", "renewTime"):
        raw = spec.get(key)
        try:
            times[key] = None if raw is None else parse_microtime(raw)
        except ValueError:
            raise corrupt(f"{key} is {raw!r}, not a time") from None
    return LeaseRecord(
        election=election,
        holder=holder,
        lease_duration=float(duration or 0),
        fencing_token=transitions + FIRST_TOKEN,
        version=version,
        transitions=transitions,
        acquire_time=times["acquireTime"],
        renew_time=times["renewTime"],
        expires_in=None,
    )


def lease_spec(
    holder: str, duration_seconds: int, acquire_time: str, renew_time: str, transitions: int
) -> dict[str, Any]:
    """The spec client-go's ``LeaderElectionRecordToLeaseSpec`` writes; times already MicroTime."""
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration_seconds,
        "acquireTime": acquire_time,
        "renewTime": renew_time,
        "leaseTransitions": transitions,
    }


# --- the backend ---------------------------------------------------------------


@dataclasses.dataclass
class _Response:
    """One API answer: HTTP status and the decoded JSON body (None if not JSON)."""

    status: int
    body: Any


class _StatusError(Exception):
    """An API error answer to ``verb``, raised on a worker thread and translated by :data:`_ERRORS`."""

    def __init__(self, response: _Response, verb: str) -> None:
        super().__init__(f"{verb}: HTTP {response.status}")
        self.status = response.status
        self.body: dict[str, Any] = response.body if isinstance(response.body, dict) else {}
        self.verb = verb

    @property
    def message(self) -> str:
        return str(self.body.get("message") or f"HTTP {self.status}")


@dataclasses.dataclass(frozen=True)
class _At:
    """Where a request failed, for the messages of :data:`_ERRORS`."""

    namespace: str
    host: str
    step: str
    """``send`` (the request), ``read`` (its answer), ``stream`` (a watch's events),
    ``watch`` (anything else in a watch thread), ``call`` (a Lease method)."""

    @property
    def where(self) -> str:
        return f"leases.coordination.k8s.io in namespace {self.namespace!r}"


def _status_code(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, _StatusError) else None


_TRANSPORT = (urllib3.exceptions.HTTPError, OSError)

#: The client's and the API server's errors as leaderlib's: transport failures
#: by the step they happened in, error answers by HTTP status.
_ERRORS: ErrorMap[_At] = error_map(
    [
        Row(
            k8s_config.ConfigException,
            BackendUnavailable,
            lambda exc, at: f"cannot get credentials from the kubeconfig: {exc}",
        ),
        Row(
            (*_TRANSPORT, k8s_client.ApiException),
            BackendUnavailable,
            lambda exc, at: f"cannot reach the Kubernetes API server at {at.host}: {exc}",
            when=lambda exc, at: at.step == "send",
        ),
        Row(
            _TRANSPORT,
            BackendUnavailable,
            lambda exc, at: f"the API server's answer was cut off: {exc}",
            when=lambda exc, at: at.step == "read",
        ),
        Row(
            _TRANSPORT,
            BackendUnavailable,
            lambda exc, at: f"the Lease watch broke: {exc}",
            when=lambda exc, at: at.step == "stream",
        ),
        Row(
            401,
            AccessDenied,
            lambda exc, at: (
                f"the API server rejected the credentials (401 Unauthorized: {exc.message}); check the "
                "kubeconfig's token or client certificate, or the pod's service account token"
            ),
        ),
        Row(
            403,
            AccessDenied,
            lambda exc, at: (
                f"RBAC does not allow {exc.verb!r} on {at.where} ({exc.message}). Grant the verbs get, "
                f"list, watch, create and update on leases with this Role and a RoleBinding to the "
                f"service account or user:\n{ROLE_YAML.format(namespace=at.namespace)}"
            ),
        ),
        Row(
            404,
            BackendError,
            lambda exc, at: (
                f"namespace {at.namespace!r} does not exist ({exc.message}); create it or fix the "
                "backend URL kubernetes://NAMESPACE"
            ),
            when=lambda exc, at: (exc.body.get("details") or {}).get("kind") == "namespaces",
        ),
        *(
            Row(
                status,
                BackendError,
                lambda exc, at: (
                    f"the API server refused the Lease leaderlib sent ({exc.verb} {at.where}): {exc.message}"
                ),
            )
            for status in (400, 422)
        ),
        Row(
            _StatusError,
            BackendUnavailable,
            lambda exc, at: (
                f"the API server could not serve {exc.verb!r} on {at.where} now ({exc.status}: {exc.message})"
            ),
            when=lambda exc, at: exc.status == 429 or exc.status >= 500,
        ),
        Row(
            _StatusError,
            BackendError,
            lambda exc, at: f"unexpected answer to {exc.verb!r} on {at.where}: {exc.status} {exc.message}",
        ),
        Row(
            Exception,
            BackendUnavailable,
            lambda exc, at: f"the Lease watch failed: {exc!r}",
            when=lambda exc, at: at.step == "watch",
        ),
    ],
    code=_status_code,
)


class _WatchHandle:
    """One watch thread and the stream it reads, so another thread can stop it at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.stream: urllib3.BaseHTTPResponse | None = None
        self.thread: threading.Thread | None = None

    def attach(self, stream: urllib3.BaseHTTPResponse) -> bool:
        """Remember the open stream; False (and the stream closed) if we are stopping."""
        with self.lock:
            if self.stop.is_set():
                stream.close()
                return False
            self.stream = stream
            return True

    def detach(self) -> None:
        with self.lock:
            stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()

    def cancel(self) -> None:
        """Stop the thread: a blocked read on the stream returns at once."""
        with self.lock:
            self.stop.set()
            stream = self.stream
        if stream is not None:
            # shutdown() interrupts a recv() blocked in the watch thread;
            # close() alone would wait for the next byte from the server.
            with contextlib.suppress(Exception):
                stream.shutdown()


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
            configuration = _load_configuration(kubeconfig, context)
        if not namespace:
            namespace = _default_namespace(kubeconfig, context)
        if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
            raise ConfigError(
                f"{namespace!r} is not a namespace name (a DNS-1123 label: at most 63 lowercase "
                "letters, digits and '-')",
                field="namespace",
            )
        self.namespace = namespace
        if configuration.retries is None:
            # No retries inside a call: the elector owns retries and deadlines,
            # and each urllib3 retry logs a warning of its own (three per
            # request while an API server was down). A pooled connection the
            # server closed is dropped before reuse; the rare one that closes
            # mid-request fails the call, which the elector retries in 20 ms.
            configuration.retries = urllib3.Retry(total=0, redirect=0)
        self._api = k8s_client.ApiClient(configuration)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="leaderlib-k8s")
        self._leases: dict[str, KubernetesLease] = {}
        self._leases_lock = threading.Lock()
        self._auth: dict[str, str] | None = None
        self._auth_read_at = 0.0
        self._auth_lock = threading.Lock()
        self._watches: set[_WatchHandle] = set()
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

    # -- requests ---------------------------------------------------------------

    async def _run(self, function: Callable[[], T]) -> T:
        if self._closed:
            raise BackendUnavailable("the backend was closed", backend=self.scheme)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, function)

    def _send(
        self,
        method: str,
        path: str,
        *,
        election: str,
        query: list[tuple[str, str]],
        body: dict[str, Any] | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """Send one request through the client's REST layer (worker thread); returns its RESTResponse.

        Transport failures (refused, dropped, timed out, TLS) and credentials
        that cannot be obtained (an exec plugin failing) become BackendUnavailable.
        """
        with _ERRORS.translating(self._at("send"), election=election, backend=self.scheme):
            url = self._api.configuration.host + path
            if query:
                url += "?" + urlencode(query)
            headers = {**self._api.default_headers, **_JSON_HEADERS, **self._auth_headers()}
            # The client's REST layer (its urllib3 pool, TLS settings, proxy)
            # without the generated models: the body goes out as json.dumps of
            # the dict built here, MicroTime strings untouched.
            return self._api.rest_client.request(  # type: ignore[no-untyped-call]
                method, url, headers=headers, body=body, _request_timeout=timeout or self._request_timeout
            )

    def _auth_headers(self) -> dict[str, str]:
        """The Authorization header, re-read from the configuration at most once a second.

        Reading it runs the kubeconfig's refresh hook (exec plugins, rotated
        service account tokens), which costs about as much as the rest of a
        request; tokens live for minutes, so a second's staleness is harmless.
        """
        now = time.monotonic()
        with self._auth_lock:
            if self._auth is None or now - self._auth_read_at >= 1.0:
                settings = self._api.configuration.auth_settings().get("BearerToken")
                self._auth = {settings["key"]: settings["value"]} if settings and settings["value"] else {}
                self._auth_read_at = now
            return self._auth

    def _request(
        self,
        method: str,
        path: str,
        *,
        election: str,
        body: dict[str, Any] | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> _Response:
        """One API request and its decoded JSON answer (worker thread)."""
        response = self._send(method, path, election=election, query=query or [], body=body)
        with _ERRORS.translating(self._at("read"), election=election, backend=self.scheme):
            data = response.read()
        return _Response(response.status, _loads(data))

    def _at(self, step: str) -> _At:
        return _At(namespace=self.namespace, host=self._api.configuration.host, step=step)

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
        self._closed = True
        watches = list(self._watches)
        for handle in watches:
            handle.cancel()
        threads = [handle.thread for handle in watches if handle.thread is not None]

        def shut_down() -> None:
            for thread in threads:
                thread.join(timeout=self._request_timeout + 1)
            self._pool.shutdown(wait=True)
            self._api.close()  # type: ignore[no-untyped-call]

        await asyncio.to_thread(shut_down)


class KubernetesLease:
    """One election's Lease object: the objects last read, written and watched, and its watch."""

    def __init__(self, backend: KubernetesBackend, election: str) -> None:
        self.election = election
        self._backend = backend
        self._path = _LEASE_PATH.format(namespace=backend.namespace, name=election)
        # The last Lease object this handle read or wrote: the leader renews
        # by updating it (no GET).
        self._object: dict[str, Any] | None = None
        # The last object the watch delivered, kept apart because a watch lags
        # behind this handle's own writes: a follower takes over from it when
        # it is exactly the version the elector asks to replace.
        self._watched: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # -- requests (worker threads) ------------------------------------------------

    async def _run(self, function: Callable[[], T]) -> T:
        """``function()`` on the backend's thread pool, API error answers translated (:data:`_ERRORS`)."""
        backend = self._backend

        def translated() -> T:
            with _ERRORS.translating(backend._at("call"), election=self.election, backend=backend.scheme):
                return function()

        return await backend._run(translated)

    def _remember(self, lease: dict[str, Any] | None) -> None:
        with self._lock:
            self._object = lease

    def _cached(self) -> dict[str, Any] | None:
        with self._lock:
            return self._object

    def _copy_of(self, version: str) -> dict[str, Any] | None:
        """The Lease object at exactly ``version``, if this handle has seen it."""
        with self._lock:
            for known in (self._watched, self._object):
                if known is not None and _version(known) == version:
                    return known
        return None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> _Response:
        return self._backend._request(method, path, election=self.election, body=body)

    def _read(self) -> dict[str, Any] | None:
        """GET the Lease (worker thread); None if there is none."""
        response = self._request("GET", self._path)
        if response.status == 404:
            self._remember(None)
            return None
        if response.status != 200:
            raise _StatusError(response, "get")
        lease: dict[str, Any] = response.body
        self._remember(lease)
        return lease

    def _create(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        """POST a new Lease (worker thread); None if one exists already (409)."""
        namespace = self._backend.namespace
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.election, "namespace": namespace},
            "spec": spec,
        }
        response = self._request("POST", _GROUP_PATH.format(namespace=namespace), body)
        if response.status == 409:
            return None
        if response.status != 201 and response.status != 200:
            raise _StatusError(response, "create")
        lease: dict[str, Any] = response.body
        self._remember(lease)
        return lease

    def _update(self, base: dict[str, Any], version: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        """PUT ``spec`` onto ``base`` if the Lease is still at ``version`` (worker thread).

        None on a conflict (409) or if the Lease was deleted meanwhile (404).
        ``base`` supplies the metadata (labels, annotations, owners) to keep.
        """
        metadata = {k: v for k, v in (base.get("metadata") or {}).items() if k != "managedFields"}
        metadata.update(name=self.election, namespace=self._backend.namespace, resourceVersion=version)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
        response = self._request("PUT", self._path, body)
        if response.status in (404, 409):
            return None
        if response.status != 200:
            raise _StatusError(response, "update")
        lease: dict[str, Any] = response.body
        self._remember(lease)
        return lease

    def _record(self, lease: dict[str, Any] | None) -> LeaseRecord | None:
        return (
            None if lease is None else record_from_lease(self.election, lease, backend=self._backend.scheme)
        )

    # -- the Lease Protocol ----------------------------------------------------------

    async def get(self) -> LeaseRecord | None:
        return self._record(await self._run(self._read))

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        seconds = self._backend._duration(lease_duration)
        acquired, lease = await self._run(lambda: self._acquire(identity, seconds, takeover))
        return Acquisition(acquired=acquired, record=self._record(lease))

    def _acquire(
        self, identity: str, seconds: int, takeover: LeaseRecord | None
    ) -> tuple[bool, dict[str, Any] | None]:
        """client-go's tryAcquireOrRenew for a new term, minus the expiry judgement (the elector's).

        Returns whether this call wrote the Lease, and the Lease as it stands
        after one attempt (worker thread). :func:`decide` makes the decision;
        unlike client-go, a Lease whose holder is ``identity`` is not adopted:
        a new term is always a new ``leaseTransitions``, the fencing token.
        """
        now = format_microtime(self._backend._clock.wall())
        # A takeover of a version we hold a copy of (usually from the watch)
        # needs no GET: the update itself checks that nothing changed since.
        lease = None if takeover is None else self._copy_of(takeover.version)
        if lease is None:
            lease = self._read()
        current = self._record(lease)
        decision = decide(current, takeover)
        if not decision.new_term:
            return False, lease  # held by someone whose lease has not expired for the elector
        spec = lease_spec(identity, seconds, now, now, decision.fencing_token - FIRST_TOKEN)
        if lease is None or current is None:
            created = self._create(spec)
            if created is None:  # someone created it first: we lost this round
                return False, self._read()
            logger.debug("created lease", extra={"election": self.election, "holder": identity})
            return True, created
        updated = self._update(lease, current.version, spec)
        if updated is None:  # lost the race: someone else wrote first
            return False, self._read()
        logger.debug("took lease", extra={"election": self.election, "previous": current.holder})
        return True, updated

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        seconds = self._backend._duration(record.lease_duration)
        lease = await self._run(lambda: self._renew(record, seconds))
        renewed = self._record(lease)
        assert renewed is not None
        return renewed

    def _renew(self, record: LeaseRecord, seconds: int) -> dict[str, Any]:
        now = format_microtime(self._backend._clock.wall())
        base = self._cached()
        if base is not None:
            # The fast path (client-go's optimistic renewal): one update with
            # the version we hold, no GET. Every spec field comes from
            # ``record``; the cached object only lends its metadata (labels,
            # annotations, owners), since it may be older than ``record``.
            spec = lease_spec(
                record.holder, seconds, _format_or(record.acquire_time, now), now, record.transitions
            )
            updated = self._update(base, record.version, spec)
            if updated is not None:
                return updated
        # Conflict (or nothing cached): read it, and update again only if it
        # is still ours, from what was read.
        fresh = self._read()
        if fresh is None or _holder(fresh) != record.holder:
            raise self._lost(record, fresh)
        spec = lease_spec(
            record.holder,
            seconds,
            _spec_time(fresh, "acquireTime", now),
            now,
            _spec_int(fresh, "leaseTransitions", record.transitions),
        )
        updated = self._update(fresh, _version(fresh), spec)
        if updated is None:
            raise LeaseLost(
                "the Lease changed again while it was being renewed",
                election=self.election,
                backend=self._backend.scheme,
            )
        return updated

    def _lost(self, record: LeaseRecord, lease: dict[str, Any] | None) -> LeaseLost:
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity") if lease else None
        now_held = f"held by {holder!r}" if holder else "released" if lease else "deleted"
        return LeaseLost(
            f"the Lease is no longer ours: it is {now_held}",
            election=self.election,
            backend=self._backend.scheme,
        )

    async def release(self, record: LeaseRecord) -> None:
        await self._run(lambda: self._release(record))

    def _release(self, record: LeaseRecord) -> None:
        """client-go's release: empty holder, leaseDurationSeconds 1, transitions kept."""
        now = format_microtime(self._backend._clock.wall())
        base = self._cached()
        if base is not None:
            # As in _renew: the version and the transitions from ``record``,
            # only the metadata from the cache.
            spec = lease_spec("", 1, now, now, record.transitions)
            if self._update(base, record.version, spec) is not None:
                logger.debug("released lease", extra={"election": self.election})
                return
        fresh = self._read()
        if fresh is None or _holder(fresh) != record.holder:
            return  # deleted, released, or someone else's now: nothing of ours to release
        spec = lease_spec("", 1, now, now, _spec_int(fresh, "leaseTransitions", record.transitions))
        if self._update(fresh, _version(fresh), spec) is None:
            raise BackendUnavailable(
                "the Lease changed while it was being released",
                election=self.election,
                backend=self._backend.scheme,
            )
        logger.debug("released lease", extra={"election": self.election})

    async def watch(self) -> AsyncIterator[LeaseRecord | None]:
        """Yield the Lease (None: deleted) as this handle's watch thread lists and streams it.

        One thread per watch for now; a watch per namespace on the backend,
        dispatching events by name to the handles (their ``_watched``), replaces it next.
        """
        backend, election = self._backend, self.election
        if backend._closed:
            raise BackendUnavailable("the backend was closed", election=election, backend=backend.scheme)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        handle = _WatchHandle()

        def emit(kind: str, value: Any) -> None:
            # The loop may be gone when a late event arrives after cancellation.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        handle.thread = threading.Thread(
            target=self._watch_thread,
            args=(handle, emit),
            name=f"leaderlib-k8s-watch-{election}",
            daemon=True,
        )
        backend._watches.add(handle)
        handle.thread.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise value
                if kind == "lease":
                    with self._lock:
                        self._watched = value
                    yield self._record(value)
                else:  # "deleted"
                    with self._lock:
                        self._watched = None
                    yield None
        finally:
            handle.cancel()
            backend._watches.discard(handle)
            with self._lock:
                self._watched = None

    def _watch_thread(self, handle: _WatchHandle, emit: Callable[[str, Any], None]) -> None:
        """List the Lease, then watch it from that version; re-list on 410 Gone (own thread)."""
        backend = self._backend
        try:
            # Any failure becomes a leaderlib error: the loop must hear of it, or it waits forever.
            with _ERRORS.translating(backend._at("watch"), election=self.election, backend=backend.scheme):
                version: str | None = None
                while not handle.stop.is_set():
                    if version is None:
                        version = self._list_one(emit)
                        continue
                    version = self._stream(version, handle, emit)
        except BackendError as exc:
            if not handle.stop.is_set():
                emit("error", exc)

    def _list_one(self, emit: Callable[[str, Any], None]) -> str:
        """List the one Lease, hand it to the loop and return the list's resourceVersion."""
        backend = self._backend
        query = [("fieldSelector", f"metadata.name={self.election}")]
        response = backend._request(
            "GET", _GROUP_PATH.format(namespace=backend.namespace), election=self.election, query=query
        )
        if response.status != 200:
            raise _StatusError(response, "list")
        items = response.body.get("items") or []
        if items:
            emit("lease", items[0])
        else:
            emit("deleted", None)
        version: str = response.body["metadata"]["resourceVersion"]
        return version

    def _stream(self, version: str, handle: _WatchHandle, emit: Callable[[str, Any], None]) -> str | None:
        """Follow one watch request; return the version to resume from (None: re-list)."""
        backend = self._backend
        query = [
            ("fieldSelector", f"metadata.name={self.election}"),
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(_WATCH_SECONDS)),
        ]
        response = backend._send(
            "GET",
            _GROUP_PATH.format(namespace=backend.namespace),
            election=self.election,
            query=query,
            timeout=(backend._request_timeout, _WATCH_READ_TIMEOUT),
        )
        stream = response.response
        if response.status == 410:
            stream.close()
            return None
        if response.status != 200:
            data = stream.read()
            stream.close()
            raise _StatusError(_Response(response.status, _loads(data)), "watch")
        if not handle.attach(stream):
            return version
        try:
            with _ERRORS.translating(backend._at("stream"), election=self.election, backend=backend.scheme):
                buffer = b""
                for chunk in stream.stream(amt=None, decode_content=False):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                return None  # our version is too old: re-list
                            raise _StatusError(_Response(int(obj.get("code") or 500), obj), "watch")
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind in ("ADDED", "MODIFIED"):
                            emit("lease", obj)
                        elif kind == "DELETED":
                            emit("deleted", None)
                        # BOOKMARK only moves the version on.
                return version  # the server ended the watch: resume from where we were
        except BackendUnavailable:
            if handle.stop.is_set():
                return version  # we closed the stream ourselves
            raise
        finally:
            handle.detach()


def _version(lease: dict[str, Any]) -> str:
    return str((lease.get("metadata") or {}).get("resourceVersion") or "")


def _holder(lease: dict[str, Any]) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _spec_time(lease: dict[str, Any], key: str, default: str) -> str:
    """The spec's time ``key`` re-formatted as MicroTime, or ``default``."""
    raw = (lease.get("spec") or {}).get(key)
    try:
        return format_microtime(parse_microtime(raw)) if raw else default
    except ValueError:
        return default


def _spec_int(lease: dict[str, Any], key: str, default: int) -> int:
    value = (lease.get("spec") or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _format_or(when: dt.datetime | None, default: str) -> str:
    return default if when is None else format_microtime(when)


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The pod's namespace in a cluster, else the kubeconfig context's, else "default"."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        with contextlib.suppress(OSError):
            return (_serviceaccount_dir() / "namespace").read_text().strip()
    with contextlib.suppress(Exception):
        contexts, active = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            kubeconfig or _kubeconfig_path()
        )
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        namespace = (chosen or {}).get("context", {}).get("namespace")
        if namespace:
            return str(namespace)
    return "default"


def _serviceaccount_dir() -> Path:
    """The pod's service account files: ``$LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR`` or the kubelet's mount."""
    return Path(os.environ.get(_SERVICEACCOUNT_DIR_VARIABLE) or _SERVICEACCOUNT_DIR)


def _kubeconfig_path() -> str:
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def _load_configuration(kubeconfig: str | None, context: str | None) -> k8s_client.Configuration:
    """The client configuration: in-cluster service account, or a kubeconfig file."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        # The client's load_incluster_config() with the files' directory
        # injectable; it re-reads the token each minute (kubelet rotation).
        account = _serviceaccount_dir()
        try:
            k8s_config.incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(account / "token"), cert_filename=str(account / "ca.crt")
            ).load_and_set(configuration)
        except k8s_config.ConfigException as exc:
            raise ConfigError(
                f"KUBERNETES_SERVICE_HOST is set but the service account in {account} cannot be used: {exc}",
                field="kubeconfig",
            ) from exc
        return configuration
    path = kubeconfig or _kubeconfig_path()
    if not any(Path(part).expanduser().is_file() for part in path.split(os.pathsep) if part):
        raise ConfigError(
            f"no kubeconfig at {path!r}; pass ?kubeconfig=PATH, set KUBECONFIG, or run in a pod",
            field="kubeconfig",
        )
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration, persist_config=False
        )
    except (k8s_config.ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot use kubeconfig {path!r}: {exc}", field="kubeconfig") from exc
    return configuration

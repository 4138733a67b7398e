"""Requests through the kubernetes client's REST layer, its auth header, and the error table.

The client stays the source of configuration and auth (kubeconfig, in-cluster
service account, exec plugins, rotated tokens); its generated models are not
used: bodies go out as the JSON built here, because the models serialise a
whole-second datetime as ``...:05+00:00``, which the API server rejects.
Requests run on a small thread pool of fixed size, so the number of HTTP
connections is bounded by it (plus the namespace's one watch), whatever the
number of elections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from ..._errors import AccessDenied, BackendError, BackendUnavailable
from .._errors import ErrorMap, Row, error_map

__all__ = ["ERRORS", "GROUP_PATH", "LEASE_PATH", "ROLE_YAML", "WORKERS", "Rest", "StatusError"]

T = TypeVar("T")

GROUP_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
LEASE_PATH = GROUP_PATH + "/{name}"
_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
#: Request threads per backend object: at most this many requests in flight,
#: so at most this many pooled connections (the watch holds one more). Each
#: waits out one request's round trip, most of it the API server's: with 1,000
#: elections renewing every 2 s, 8 threads left 8,714 renewals late in 30 s,
#: 16 left 440, 32 none. Threads and connections are started as needed.
WORKERS = 32

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


@dataclasses.dataclass
class Response:
    """One API answer: HTTP status and the decoded JSON body (None if not JSON)."""

    status: int
    body: Any


class StatusError(Exception):
    """An API error answer to ``verb``, raised on a worker thread and translated by :data:`ERRORS`."""

    def __init__(self, response: Response, verb: str) -> None:
        super().__init__(f"{verb}: HTTP {response.status}")
        self.status = response.status
        self.body: dict[str, Any] = response.body if isinstance(response.body, dict) else {}
        self.verb = verb

    @property
    def message(self) -> str:
        return str(self.body.get("message") or f"HTTP {self.status}")


@dataclasses.dataclass(frozen=True)
class At:
    """Where a request failed, for the messages of :data:`ERRORS`."""

    namespace: str
    host: str
    step: str
    """``send`` (the request), ``read`` (its answer), ``stream`` (a watch's events),
    ``watch`` (anything else in a watch thread), ``call`` (a Lease method)."""

    @property
    def where(self) -> str:
        return f"leases.coordination.k8s.io in namespace {self.namespace!r}"


def status_code(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, StatusError) else None


_TRANSPORT = (urllib3.exceptions.HTTPError, OSError)

#: The client's and the API server's errors as leaderlib's: transport failures
#: by the step they happened in, error answers by HTTP status.
ERRORS: ErrorMap[At] = error_map(
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
            StatusError,
            BackendUnavailable,
            lambda exc, at: (
                f"the API server could not serve {exc.verb!r} on {at.where} now ({exc.status}: {exc.message})"
            ),
            when=lambda exc, at: exc.status == 429 or exc.status >= 500,
        ),
        Row(
            StatusError,
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
    code=status_code,
)


def loads(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


class Rest:
    """One ``ApiClient`` (one pool of keep-alive connections) and the threads that send its requests."""

    def __init__(
        self, configuration: k8s_client.Configuration, *, namespace: str, scheme: str, timeout: float
    ):
        if configuration.retries is None:
            # No retries inside a call: the elector owns retries and deadlines,
            # and each urllib3 retry logs a warning of its own (three per
            # request while an API server was down). A pooled connection the
            # server closed is dropped before reuse; the rare one that closes
            # mid-request fails the call, which the elector retries in 20 ms.
            configuration.retries = urllib3.Retry(total=0, redirect=0)
        # Enough pooled connections for every request thread and the watch:
        # none is opened and thrown away, however many elections share them.
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, WORKERS + 1)
        self.client = k8s_client.ApiClient(configuration)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=WORKERS, thread_name_prefix="leaderlib-k8s"
        )
        self.namespace = namespace
        self.scheme = scheme
        self.timeout = timeout
        self.closed = False
        self._auth: dict[str, str] | None = None
        self._auth_read_at = 0.0
        self._auth_lock = threading.Lock()

    async def run(self, function: Callable[[], T]) -> T:
        if self.closed:
            raise BackendUnavailable("the backend was closed", backend=self.scheme)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, function)

    def at(self, step: str) -> At:
        return At(namespace=self.namespace, host=self.client.configuration.host, step=step)

    def send(
        self,
        method: str,
        path: str,
        *,
        election: str | None,
        query: list[tuple[str, str]],
        body: dict[str, Any] | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """Send one request through the client's REST layer (worker thread); returns its RESTResponse.

        Transport failures (refused, dropped, timed out, TLS) and credentials
        that cannot be obtained (an exec plugin failing) become BackendUnavailable.
        """
        with ERRORS.translating(self.at("send"), election=election, backend=self.scheme):
            url = self.client.configuration.host + path
            if query:
                url += "?" + urlencode(query)
            headers = {**self.client.default_headers, **_JSON_HEADERS, **self.auth_headers()}
            # The client's REST layer (its urllib3 pool, TLS settings, proxy)
            # without the generated models: the body goes out as json.dumps of
            # the dict built here, MicroTime strings untouched.
            return self.client.rest_client.request(  # type: ignore[no-untyped-call]
                method, url, headers=headers, body=body, _request_timeout=timeout or self.timeout
            )

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header, re-read from the configuration at most once a second.

        Reading it runs the kubeconfig's refresh hook (exec plugins, rotated
        service account tokens), which costs about as much as the rest of a
        request; tokens live for minutes, so a second's staleness is harmless.
        """
        now = time.monotonic()
        with self._auth_lock:
            if self._auth is None or now - self._auth_read_at >= 1.0:
                settings = self.client.configuration.auth_settings().get("BearerToken")
                self._auth = {settings["key"]: settings["value"]} if settings and settings["value"] else {}
                self._auth_read_at = now
            return self._auth

    def request(
        self,
        method: str,
        path: str,
        *,
        election: str | None,
        body: dict[str, Any] | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> Response:
        """One API request and its decoded JSON answer (worker thread)."""
        response = self.send(method, path, election=election, query=query or [], body=body)
        with ERRORS.translating(self.at("read"), election=election, backend=self.scheme):
            data = response.read()
        return Response(response.status, loads(data))

    def close(self) -> None:
        """Wait for the requests in flight, then close the connections (blocking)."""
        self.closed = True
        self.pool.shutdown(wait=True)
        self.client.close()  # type: ignore[no-untyped-call]

"""The stores a run measures: where they are (:class:`Target`), how to start the real servers,
and how many requests each server has received (counted on the SERVER side)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
import sqlite3
import ssl
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

STORE_OF_SCHEME = {"sqlite": "sqlite", "redis": "redis", "rediss": "redis", "etcd": "etcd", "etcds": "etcd"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One store under test: its leaderlib URL and what peers and counters need besides."""

    store: str
    """``sqlite``, ``redis``, ``etcd`` or ``kubernetes``."""
    url: str
    """The leaderlib backend URL."""
    admin_kubeconfig: str = ""
    """Kubernetes: a kubeconfig allowed to read ``/metrics`` (default: the URL's)."""

    @classmethod
    def from_url(cls, url: str, admin_kubeconfig: str = "") -> Target:
        scheme = url.split("://", 1)[0]
        store = STORE_OF_SCHEME.get(scheme, "kubernetes" if scheme == "kubernetes" else "")
        if not store:
            raise ValueError(f"leaderlib bench measures sqlite, redis, etcd and kubernetes, not {scheme}://")
        return cls(store, url, admin_kubeconfig)

    @property
    def options(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query))

    @property
    def hostport(self) -> tuple[str, int]:
        """Redis/etcd: the first endpoint's host and port."""
        netloc = urlsplit(self.url).netloc.rpartition("@")[2].split(",")[0]
        host, _, port = netloc.rpartition(":")
        return host or "127.0.0.1", int(port or (6379 if self.store == "redis" else 2379))

    @property
    def namespace(self) -> str:
        return urlsplit(self.url).netloc or "default"

    @property
    def kubeconfig(self) -> str:
        return self.options.get("kubeconfig", "")

    @property
    def sqlite_path(self) -> str:
        parts = urlsplit(self.url)
        return parts.path if parts.netloc != "." else str(Path(parts.path.lstrip("/")).resolve())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def parse(cls, text: str) -> Target:
        return cls(**json.loads(text))


@contextlib.contextmanager
def real_servers() -> Iterator[list[Target]]:
    """Start Redis, etcd (fsync ON, as in production) and kube-apiserver; yield the four targets."""
    from leaderlib.testing.servers import EtcdServer, KubeAPIServer, RedisServer

    with tempfile.TemporaryDirectory(prefix="leaderlib-bench-") as scratch, contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        etcd = stack.enter_context(EtcdServer(unsafe_no_fsync=False))
        kube = stack.enter_context(KubeAPIServer())
        yield [
            Target("sqlite", "sqlite:///" + str(Path(scratch) / "bench.sqlite3").lstrip("/")),
            Target("redis", redis.url),
            Target("etcd", etcd.url),
            Target(
                "kubernetes",
                f"kubernetes://{kube.namespace}?kubeconfig={kube.kubeconfig}",
                admin_kubeconfig=str(kube.admin_kubeconfig),
            ),
        ]


# --------------------------------------------------------------------------- server-side counts


class RequestCounter:
    """Requests the store's server has received, read from the server itself.

    Redis: ``INFO commandstats`` calls (INFO itself excluded; the commands a
    Lua script calls count besides its ``EVALSHA``). etcd: gRPC
    messages received (``grpc_server_msg_received_total``: unary calls and
    every stream message, keepalives included). Kubernetes:
    ``apiserver_request_total`` for ``leases`` (a watch is counted when it
    ends). SQLite has no server: statements executed through every
    connection this process opens while counting (a trace callback), which
    covers the in-process subjects of the load and tick scenarios.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.kind = {
            "redis": "INFO commandstats",
            "etcd": "/metrics grpc_server_msg_received_total",
            "kubernetes": '/metrics apiserver_request_total{resource="leases"}',
            "sqlite": "statements traced in this process (sqlite3 trace callback)",
        }[target.store]
        self._sqlite_count = 0
        self._sqlite_lock = threading.Lock()
        self._unpatch: Callable[[], None] | None = None

    def __enter__(self) -> RequestCounter:
        if self.target.store == "sqlite":
            self._patch_sqlite()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._unpatch is not None:
            self._unpatch()
            self._unpatch = None

    def read(self) -> float:
        """The server's running total of requests."""
        store = self.target.store
        if store == "sqlite":
            with self._sqlite_lock:
                return float(self._sqlite_count)
        if store == "redis":
            return self._redis_total()
        if store == "etcd":
            host, port = self.target.hostport
            text = _http_get(f"http://{host}:{port}/metrics")
            return _sum_metric(text, "grpc_server_msg_received_total")
        return _sum_metric(self._kube_metrics(), "apiserver_request_total", 'resource="leases"')

    def _patch_sqlite(self) -> None:
        original = sqlite3.connect

        def count(_statement: str) -> None:
            with self._sqlite_lock:
                self._sqlite_count += 1

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn: sqlite3.Connection = original(*args, **kwargs)
            conn.set_trace_callback(count)
            return conn

        sqlite3.connect = connect  # type: ignore[assignment]

        def unpatch() -> None:
            sqlite3.connect = original

        self._unpatch = unpatch

    def _redis_total(self) -> float:
        import redis

        host, port = self.target.hostport
        client = redis.Redis(host=host, port=port)
        try:
            stats: dict[str, Any] = client.info("commandstats")
        finally:
            client.close()
        return float(sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info"))

    def _kube_metrics(self) -> str:
        import yaml

        path = self.target.admin_kubeconfig or self.target.kubeconfig
        config = yaml.safe_load(Path(path).read_text())
        cluster = config["clusters"][0]["cluster"]
        token = config["users"][0]["user"]["token"]
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        return _http_get(cluster["server"] + "/metrics", token=token, context=context)


def _http_get(url: str, *, token: str = "", context: ssl.SSLContext | None = None) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10.0, context=context) as response:
        body: bytes = response.read()
    return body.decode()


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>\S+)")


def _sum_metric(text: str, name: str, label: str = "") -> float:
    """Sum of every sample of the Prometheus counter ``name`` (whose labels contain ``label``)."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name and label in (match["labels"] or ""):
            total += float(match["value"])
    return total

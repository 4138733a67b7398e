"""``leaderlib run`` exports OTLP when the standard ``OTEL_*`` variables name a collector.

A one-replica service on ``memory://`` sends to a tiny OTLP/HTTP receiver on
loopback; the requests are decoded with the OTLP protobuf definitions.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from leaderlib import ConfigError
from leaderlib._sdk import exporters

pytestmark = pytest.mark.timeout(60)

SERVICE = Path(__file__).with_name("metrics_service.py")


class Receiver(http.server.ThreadingHTTPServer):
    """Keeps every OTLP/HTTP request body by path (/v1/metrics, /v1/traces)."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.bodies.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test reads the bodies


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _metrics(receiver: Receiver) -> dict[str, list[Any]]:
    """Metric name -> data points, over every request so far; plus the resource's service.name."""
    found: dict[str, list[Any]] = {}
    with receiver.lock:
        bodies = list(receiver.bodies.get("/v1/metrics", []))
    for body in bodies:
        request = ExportMetricsServiceRequest.FromString(body)
        for resource in request.resource_metrics:
            names = [a.value.string_value for a in resource.resource.attributes if a.key == "service.name"]
            found.setdefault("service.name", []).extend(names)
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    found.setdefault(metric.name, []).extend(getattr(metric, kind).data_points)
    return found


def _spans(receiver: Receiver) -> set[str]:
    with receiver.lock:
        bodies = list(receiver.bodies.get("/v1/traces", []))
    names: set[str] = set()
    for body in bodies:
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
            for scope in resource.scope_spans:
                names.update(span.name for span in scope.spans)
    return names


def test_otlp_export_follows_the_otel_variables(receiver: Receiver, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "LEADERLIB_BACKEND": "memory://",
    }
    env.pop("OTEL_SERVICE_NAME", None)
    with (tmp_path / "replica.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "leaderlib", "run", f"{SERVICE}:service"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                metrics = _metrics(receiver)
                leading = [p.as_int for p in metrics.get("leaderlib.is_leader", [])]
                if 1 in leading and "leaderlib.job.runs" in metrics and "leaderlib.job" in _spans(receiver):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"no OTLP export seen; got {sorted(_metrics(receiver))}")
        finally:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait()
    metrics = _metrics(receiver)
    assert {"leaderlib.acquire.duration", "leaderlib.transitions", "leaderlib.job.duration"} <= set(metrics)
    # Without OTEL_SERVICE_NAME the resource is named after the Service.
    assert "metrics-test" in metrics["service.name"]
    assert "leaderlib.acquire" in _spans(receiver)
    assert process.returncode == 0, (tmp_path / "replica.log").read_text()[-2000:]


def test_which_exporters_the_environment_names() -> None:
    assert exporters("metrics", {}) == []
    assert exporters("metrics", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert exporters("traces", {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}) == []
    assert exporters("metrics", {"OTEL_METRICS_EXPORTER": "otlp,console"}) == ["otlp", "console"]
    assert exporters("metrics", {"OTEL_METRICS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}) == []
    with pytest.raises(ConfigError, match=r"unknown exporter 'prometheus'.*--metrics-port"):
        exporters("metrics", {"OTEL_METRICS_EXPORTER": "prometheus"})

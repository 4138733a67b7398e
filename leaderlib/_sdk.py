"""The OpenTelemetry SDK as ``leaderlib run`` configures it (the library itself never does).

Metrics go to a Prometheus endpoint (``--metrics-port``) and/or to an OTLP
collector chosen by the standard variables: ``OTEL_METRICS_EXPORTER`` and
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``; when unset, ``otlp``
if ``OTEL_EXPORTER_OTLP_ENDPOINT`` or the signal's own endpoint variable is
set), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the default, or
``grpc``), and everything else the exporters read themselves (endpoint,
headers, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ._errors import BackendNotInstalled, ConfigError

__all__ = ["configure_sdk", "exporters"]

_KNOWN = ("otlp", "console", "none")


def exporters(signal: str, env: Mapping[str, str]) -> list[str]:
    """The exporters the environment names for ``signal`` ("metrics" or "traces")."""
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    raw = env.get(variable, "").strip()
    if not raw:
        # The spec's default is otlp; leaderlib run only exports when a collector is named,
        # so that a replica never retries a localhost:4318 that nobody runs.
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        return ["otlp"] if any(env.get(name) for name in endpoints) else []
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    for name in names:
        if name not in _KNOWN:
            hint = " (serve Prometheus with --metrics-port)" if name == "prometheus" else ""
            raise ConfigError(
                f"unknown exporter {name!r}; leaderlib run knows {', '.join(_KNOWN)}{hint}", field=variable
            )
    return [name for name in names if name != "none"]


def _protocol(signal: str, env: Mapping[str, str]) -> str:
    variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    protocol = env.get(variable) or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol not in ("http/protobuf", "grpc"):
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported; use http/protobuf or grpc",
            field=variable if env.get(variable) else "OTEL_EXPORTER_OTLP_PROTOCOL",
        )
    return protocol


def _otlp_exporter(signal: str, env: Mapping[str, str]) -> Any:
    """An OTLP exporter of ``signal``; the exporter reads its endpoint and headers itself."""
    protocol = _protocol(signal, env)
    package = "grpc" if protocol == "grpc" else "http"
    module_name = (
        f"opentelemetry.exporter.otlp.proto.{package}.{'metric' if signal == 'metrics' else 'trace'}_exporter"
    )
    try:
        module = __import__(module_name, fromlist=["_"])
    except ImportError as exc:
        distribution = f"opentelemetry-exporter-otlp-proto-{package}"
        extra = " (or: pip install 'leaderlib[otlp]')" if package == "http" else ""
        raise BackendNotInstalled(
            f"OTLP export ({protocol}) needs {distribution}; install it with: pip install {distribution}{extra}"
        ) from exc
    return module.OTLPMetricExporter() if signal == "metrics" else module.OTLPSpanExporter()


def configure_sdk(
    *,
    service_name: str,
    prometheus: tuple[str, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Install an SDK MeterProvider (and TracerProvider) if anything is to be exported.

    ``prometheus`` is (host, port) to serve ``/metrics`` on. Raises
    :class:`ConfigError` for a port that cannot be listened on or a bad
    ``OTEL_*`` value, and :class:`BackendNotInstalled` naming the package to
    install for a missing exporter.
    """
    env = os.environ if env is None else env
    metric_exporters = exporters("metrics", env)
    trace_exporters = exporters("traces", env)
    if prometheus is None and not metric_exporters and not trace_exporters:
        return
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource
    except ImportError as exc:
        raise BackendNotInstalled(
            f"exporting metrics needs {exc.name}; install it with: pip install 'leaderlib[cli]'"
        ) from exc
    # Name the service after the Service unless the environment names it.
    named = "OTEL_SERVICE_NAME" in env or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {"service.name": service_name})
    readers: list[MetricReader] = []
    if prometheus is not None:
        readers.append(_prometheus_reader(*prometheus))
    for name in metric_exporters:
        exporter = _otlp_exporter("metrics", env) if name == "otlp" else ConsoleMetricExporter()
        readers.append(PeriodicExportingMetricReader(exporter))
    if readers:
        metrics.set_meter_provider(MeterProvider(metric_readers=readers, resource=resource))
    if trace_exporters:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        provider = TracerProvider(resource=resource)
        for name in trace_exporters:
            span_exporter = _otlp_exporter("traces", env) if name == "otlp" else ConsoleSpanExporter()
            provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(provider)


def _prometheus_reader(host: str, port: int) -> Any:
    """Serve ``/metrics`` on host:port; the reader Prometheus scrapes through."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise BackendNotInstalled(
            f"--metrics-port needs {exc.name}; install it with: pip install 'leaderlib[cli]'"
        ) from exc
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        reason = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else exc.strerror
        raise ConfigError(f"cannot listen on {host}:{port}: {reason or exc}", field="--metrics-port") from exc
    return PrometheusMetricReader()

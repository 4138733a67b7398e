"""leaderlib's OpenTelemetry instruments, read back in tests.

The library records through the OpenTelemetry API only; a test installs the
SDK's :class:`InMemoryMetricReader` once per process (the API allows one
global MeterProvider, and leaderlib's instruments, made at import time, bind
to it when it is set). Points are filtered by attributes, so tests that use
their own election names never see each other's.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

__all__ = ["MetricReader"]

_reader: InMemoryMetricReader | None = None


class MetricReader:
    """The process's in-memory reader of leaderlib's instruments."""

    def __init__(self) -> None:
        global _reader
        if _reader is None:
            _reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))
        self._reader = _reader

    def points(self, name: str, **attributes: Any) -> list[Any]:
        """The data points of instrument ``name`` whose attributes include ``attributes``."""
        data = self._reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        if all(point.attributes.get(k) == v for k, v in attributes.items()):
                            found.append(point)
        return found

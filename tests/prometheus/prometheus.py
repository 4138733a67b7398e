"""Scrape and read a ``leaderlib run --metrics-port`` endpoint (Prometheus text format)."""

from __future__ import annotations

import http.client
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "scrape"]

#: Labels the OpenTelemetry exporter adds to every sample; a query never needs them.
_SCOPE_LABELS = frozenset({"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"})


@dataclass
class Scrape:
    """One scrape: every sample, by its name, with its labels (scope labels left out)."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    families: dict[str, str] = field(default_factory=dict)
    """Metric family name -> Prometheus type (gauge, counter, histogram...)."""

    @property
    def names(self) -> set[str]:
        """Every sample name exposed (``leaderlib_job_runs_total``, ``..._bucket``...)."""
        return {name for name, _, _ in self.samples}

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of the samples named ``name`` whose labels include ``labels``; None if there is none."""
        found = [
            value
            for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
        ]
        return sum(found) if found else None

    def count(self, name: str, **labels: str) -> float:
        """:meth:`value`, with 0 for a series that does not exist (yet)."""
        return self.value(name, **labels) or 0.0


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> Scrape:
    """GET /metrics and parse it; raises OSError while nothing listens there."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"/metrics answered {response.status}")
    result = Scrape()
    for family in text_string_to_metric_families(body):
        result.families[family.name] = family.type
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k not in _SCOPE_LABELS}
            result.samples.append((sample.name, labels, sample.value))
    return result

"""Shared pytest configuration."""

import pytest

from tests.metrics import MetricReader

pytest_plugins = ["leaderlib.testing.pytest_plugin"]


@pytest.fixture(scope="session")
def metric_reader() -> MetricReader:
    """leaderlib's metrics in memory (an SDK MeterProvider installed once per process)."""
    return MetricReader()

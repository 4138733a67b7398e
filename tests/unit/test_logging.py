"""Log records carry their details to any handler, and the CLI's JSON has each detail once."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import logging
import pkgutil
import uuid
from collections.abc import Iterator

import pytest

import leaderlib
from leaderlib import ElectionConfig, Service
from leaderlib._logging import DetailsFilter, JsonFormatter, TextFormatter, get_logger
from leaderlib.backends.memory import MemoryBackend


@pytest.fixture
def plain_log() -> Iterator[io.StringIO]:
    """What ``logging.basicConfig`` sets up: a handler that prints only ``%(message)s``'s text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_a_plain_handler_prints_the_details(plain_log: io.StringIO) -> None:
    config = ElectionConfig(identity="pod-a", lease_duration=3, renew_deadline=2, renew_interval=0.5)
    service = Service("billing", backend=MemoryBackend(f"log-{uuid.uuid4().hex[:8]}"), config=config)
    service.add_job(lambda: None, every=60, name="noop")
    running = asyncio.create_task(service.run())
    for _ in range(200):
        if service.is_leader:
            break
        await asyncio.sleep(0.01)
    service.stop()
    await running
    lines = plain_log.getvalue().splitlines()
    assert "INFO:leaderlib.elector:became leader election=billing identity=pod-a fencing_token=1" in lines
    assert any(line.startswith("INFO:leaderlib.runtime:service starting service=billing ") for line in lines)


def _module_loggers() -> Iterator[logging.Logger]:
    for info in pkgutil.walk_packages(leaderlib.__path__, "leaderlib."):
        if ".testing" in info.name or info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # pragma: no cover - an extra that is not installed
            continue
        found = getattr(module, "logger", None)
        if isinstance(found, logging.Logger):
            yield found


def test_every_leaderlib_logger_appends_details() -> None:
    loggers = list(_module_loggers())
    assert {"leaderlib.elector", "leaderlib.runtime"} <= {logger.name for logger in loggers}
    for logger in loggers:
        assert any(isinstance(f, DetailsFilter) for f in logger.filters), logger.name


def _record(logger: logging.Logger, message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, None, extra=extra)
    logger.filter(record)
    return record


def test_json_and_text_formatters_print_each_detail_once() -> None:
    logger = get_logger("leaderlib.test-logging")
    record = _record(logger, "became leader", election="x", fencing_token=3)
    assert record.getMessage() == "became leader election=x fencing_token=3"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "became leader"
    assert (entry["election"], entry["fencing_token"]) == ("x", 3)
    assert TextFormatter().format(record).endswith(" became leader election=x fencing_token=3")


def test_percent_args_and_percent_signs_in_details_survive() -> None:
    record = _record(get_logger("leaderlib.test-logging"), "ran %s", "job", rate="100%")
    assert record.getMessage() == "ran job rate=100%"

"""BackgroundService: the asyncio core in a thread, and its errors reach the caller."""

from __future__ import annotations

import threading
import time

import pytest

from leaderlib import BackgroundService, ConfigError, ElectionConfig, Service


def quick_config() -> ElectionConfig:
    return ElectionConfig(lease_duration=1.0, renew_deadline=0.6, renew_interval=0.1, retry_period=0.1)


def test_an_error_at_start_is_raised_by_start() -> None:
    runner = BackgroundService(Service("no-jobs", backend="memory://sync-no-jobs"))
    with pytest.raises(ConfigError, match="no jobs"):
        runner.start()


def test_a_bad_backend_option_is_raised_by_start() -> None:
    service = Service("svc", backend="memory://sync-bad?colour=blue", config=quick_config())
    service.add_job(lambda: None, every=1)
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        BackgroundService(service).start()


def test_an_error_while_running_is_raised_by_join_and_stop() -> None:
    class Boom(Exception):
        pass

    class Failing:
        is_leader = False

        async def run(self) -> None:
            import asyncio

            await asyncio.sleep(0.05)
            raise Boom("the store went away for good")

        def stop(self) -> None:
            pass

    runner = BackgroundService(Failing()).start()
    with pytest.raises(Boom):
        runner.join(timeout=5)
    with pytest.raises(Boom):
        runner.stop(timeout=5)


def test_a_clean_run_joins_without_error() -> None:
    service = Service("svc", backend="memory://sync-clean", config=quick_config())
    ran = threading.Event()
    service.add_job(ran.set, every=0.05)
    runner = BackgroundService(service).start()
    deadline = time.monotonic() + 5
    while not ran.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    runner.stop(timeout=5)
    runner.join(timeout=1)

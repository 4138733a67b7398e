"""The leaderlib command: errors say what was wrong; status reads a real record."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import socket
import sys
import textwrap
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from leaderlib import AccessDenied, ConfigError, Service
from leaderlib._demo import _measured, run_demo
from leaderlib._health import serve_health
from leaderlib.backends import JobRun, backend_from_url
from leaderlib.backends.memory import MemoryBackend, MemoryLease
from leaderlib.cli import _parser, load_target, main, redact_url


def test_status_shows_the_holder(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(MemoryBackend("cli-status").lease("billing").try_acquire("pod-a", 30.0, None))
    assert main(["status", "billing", "--backend", "memory://cli-status", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["record"]["holder"] == "pod-a"
    assert shown["record"]["fencing_token"] == 1
    assert main(["status", "billing", "--backend", "memory://cli-status"]) == 0
    assert "holder:         pod-a" in capsys.readouterr().out


def test_status_shows_each_jobs_last_run(capsys: pytest.CaptureFixture[str]) -> None:
    lease = MemoryBackend("cli-status-runs").lease("billing")
    record = asyncio.run(lease.try_acquire("pod-a", 30.0, None)).record
    assert record is not None
    tick = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    run = JobRun(
        job="report",
        tick=tick,
        fencing_token=record.fencing_token,
        identity="pod-a",
        started_at=tick,
        outcome="ok",
        duration=0.25,
        next_tick=tick + dt.timedelta(days=1),
    )
    asyncio.run(lease.record_run(run))
    asyncio.run(lease.record_run(dataclasses.replace(run, job="poll", outcome=None, duration=None)))
    assert main(["status", "billing", "--backend", "memory://cli-status-runs", "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    assert jobs["report"] == {
        "job": "report",
        "tick": "2026-12-01T08:00:00+00:00",
        "fencing_token": 1,
        "identity": "pod-a",
        "started_at": "2026-12-01T08:00:00+00:00",
        "outcome": "ok",
        "duration": 0.25,
        "next_tick": "2026-12-02T08:00:00+00:00",
    }
    assert jobs["poll"]["outcome"] is None
    assert main(["status", "billing", "--backend", "memory://cli-status-runs"]) == 0
    text = capsys.readouterr().out
    assert "report  tick 2026-12-01T08:00:00+00:00  by pod-a (token 1)  ok in 0.250s" in text
    assert "next tick 2026-12-02T08:00:00+00:00" in text
    assert "poll    tick 2026-12-01T08:00:00+00:00  by pod-a (token 1)  started, no end recorded" in text


def test_status_without_a_leader(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "nobody", "--backend", "memory://cli-empty"]) == 0
    assert "no leader" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("backend", "words"),
    [
        ("nope://x", "unknown backend scheme 'nope'"),
        ("not a url", "is not a backend URL"),
        ("memory://x?colour=blue", "unknown option 'colour'"),
        ("sqlite:///no/such/dir/leases.db", "does not exist"),
    ],
)
def test_bad_backend_urls_exit_2_with_the_reason(
    backend: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "x", "--backend", backend]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("no_colon", "is not MODULE:ATTR"),
        ("missing_file.py:service", "does not exist"),
        ("leaderlib:nothing_here", "has no attribute 'nothing_here'"),
        ("leaderlib:DEFAULT_BACKEND", "is a str; it must name a leaderlib.Service"),
    ],
)
def test_run_targets_that_are_not_services(target: str, words: str) -> None:
    with pytest.raises(Exception, match=words):
        load_target(target)


def test_run_loads_the_example_by_path() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "cron_service.py"
    service = load_target(f"{example}:service")
    assert service.jobs == ["poll-messages", "health-check", "daily-report"]


def test_testenv_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["testenv", "--help"])
    assert exited.value.code == 0
    assert "--kubernetes" in capsys.readouterr().out


# --- issue 10: errors of `leaderlib run`, what MODULE:ATTR may name, status, demo, packaging


class _RefusingLease(MemoryLease):
    async def try_acquire(self, identity: str, lease_duration: float, takeover: Any) -> Any:
        raise AccessDenied("wrong password", election=self.election, backend="memory")


class _Refusing(MemoryBackend):
    """A store that refuses this replica's credentials."""

    def lease(self, election: str) -> MemoryLease:
        return _RefusingLease(self, election)


async def test_a_fatal_store_error_leaves_run_as_itself_not_an_exception_group() -> None:
    service = Service("refused", backend=_Refusing(f"cli-{uuid.uuid4().hex[:8]}"))
    service.add_job(lambda: None, every=60, name="noop")
    with pytest.raises(AccessDenied, match="wrong password"):
        await asyncio.wait_for(service.run(), timeout=10)


def _module(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_only_a_function_annotated_to_return_a_service_is_called(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    path = _module(
        tmp_path,
        "factories",
        f"""
        from __future__ import annotations
        from pathlib import Path
        from leaderlib import Service

        def make() -> Service:
            service = Service("made")
            service.add_job(print, every=60)
            return service

        def launch():
            Path({str(calls)!r}).write_text("called")
        """,
    )
    assert load_target(f"{path}:make").name == "made"
    with pytest.raises(ConfigError, match="'-> Service'"):
        load_target(f"{path}:launch")
    assert not calls.exists()
    with pytest.raises(ConfigError, match="is a function not annotated"):
        load_target("json:dumps")
    with pytest.raises(ConfigError, match="is the class Service"):
        load_target("leaderlib:Service")


def test_a_module_in_the_working_directory_is_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _module(tmp_path, "cli_cwd_service", "from leaderlib import Service\nservice = Service('cwd')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "cli_cwd_service", raising=False)
    assert load_target("cli_cwd_service:service").name == "cwd"
    with pytest.raises(ConfigError, match="no module named 'no_such_module_here'"):
        load_target("no_such_module_here:service")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:s3cret@cache:6379/0", "redis://app:***@cache:6379/0"),
        ("redis://:s3cret@cache:6379", "redis://:***@cache:6379"),
        ("etcd://root:pw@h1:2379,h2:2379", "etcd://root:***@h1:2379,h2:2379"),
        ("redis://cache:6379/0?password=s3cret&prefix=a", "redis://cache:6379/0?password=***&prefix=a"),
        ("redis://app@cache:6379", "redis://app@cache:6379"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ("memory://", "memory://"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_status_of_a_released_lease_shows_its_token_and_transitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'leases.db'}"  # SQLite keeps a released row: the token never goes back

    async def hold_and_release() -> None:
        backend = backend_from_url(url)
        try:
            lease = backend.lease("billing")
            record = (await lease.try_acquire("pod-a", 30.0, None)).record
            assert record is not None
            await lease.release(record)
        finally:
            await backend.aclose()

    asyncio.run(hold_and_release())
    assert main(["status", "billing", "--backend", url]) == 0
    out = capsys.readouterr().out
    assert "holder:         - (no leader: the lease was released)" in out
    assert "fencing token:  1" in out and "transitions:    0" in out


def test_status_never_creates_a_sqlite_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "leases.db"
    assert main(["status", "x", "--backend", f"sqlite:///{path}"]) == 2
    assert "does not exist; status reads a store and never creates one" in capsys.readouterr().err
    assert not path.exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("leaderlib ")


@pytest.mark.parametrize(
    "options",
    [["--log-level", "LOUD"], ["--health-port", "70000"], ["--metrics-port", "0"], ["--health-port", "x"]],
)
def test_bad_run_options_are_usage_errors(options: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "x.py:service", *options])
    assert exited.value.code == 2
    assert f"argument {options[0]}:" in capsys.readouterr().err


def test_metrics_listen_on_every_interface_by_default_and_log_levels_ignore_case() -> None:
    args = _parser().parse_args(["run", "x.py:service", "--log-level", "debug"])
    assert (args.metrics_host, args.log_level) == ("0.0.0.0", "DEBUG")


async def test_a_health_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            await serve_health(lambda: True, lambda: False, "127.0.0.1", port)


def test_the_demo_refuses_what_it_cannot_show() -> None:
    with pytest.raises(ConfigError, match=r"--duration: must be at least 20 seconds"):
        run_demo(duration=2)
    with pytest.raises(ConfigError, match=r"--replicas: must be at least 2"):
        run_demo(replicas=1)
    assert _measured(None, 2, 3, "SIGTERM") == "n/a (2 replicas: this step needs 3)"
    assert _measured(0.25, 3, 3, "SIGTERM") == "0.25 s after SIGTERM"


def test_the_license_is_an_spdx_string_for_a_setuptools_that_reads_it() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"  # a TOML table is deprecated (setuptools 77)
    assert "setuptools>=77" in pyproject["build-system"]["requires"]

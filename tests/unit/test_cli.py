"""The leaderlib command: errors say what was wrong; status reads a real record."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from leaderlib.backends.memory import MemoryBackend
from leaderlib.cli import load_target, main


def test_status_shows_the_holder(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(MemoryBackend("cli-status").try_acquire("billing", "pod-a", 30.0, None))
    assert main(["status", "billing", "--backend", "memory://cli-status", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["record"]["holder"] == "pod-a"
    assert shown["record"]["fencing_token"] == 1
    assert main(["status", "billing", "--backend", "memory://cli-status"]) == 0
    assert "holder:         pod-a" in capsys.readouterr().out


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
        ("leaderlib:DEFAULT_BACKEND", "not a leaderlib.Service"),
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

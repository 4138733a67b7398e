"""The registry behind ``docs/bad-input.md``: one function per row, keyed by the row's id.

A case makes the bad input happen for real (a config built in code, an
environment variable, a TOML file, a ``leaderlib`` command in a subprocess,
a record written into a real store) and returns what the user saw: the
exception's class name and message, or the command's exit status and its
output. ``test_bad_input.py`` checks that against the table's row.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CASES", "Context", "Seen", "case", "leaderlib_command", "raised"]


@dataclasses.dataclass(frozen=True)
class Seen:
    """What the user saw: ``error`` is an exception class name or ``exit N``."""

    error: str
    message: str


@dataclasses.dataclass
class Context:
    """What a case may use: a scratch directory and the real servers, started on demand."""

    request: pytest.FixtureRequest
    tmp_path: Path

    def server(self, fixture: str) -> Any:
        """A real server from leaderlib's pytest plugin (``redis_server``, ``etcd_server``, ...)."""
        return self.request.getfixturevalue(fixture)


Case = Callable[[Context], Awaitable[Seen]]
CASES: dict[str, Case] = {}


def case(row_id: str) -> Callable[[Case], Case]:
    """Register the function that produces row ``row_id`` of docs/bad-input.md."""

    def register(function: Case) -> Case:
        if row_id in CASES:
            raise AssertionError(f"two cases for row {row_id!r}")
        CASES[row_id] = function
        return function

    return register


async def raised(action: Callable[[], Any]) -> Seen:
    """Run ``action`` (sync, or returning an awaitable) and report the exception it raised."""
    try:
        result = action()
        if isinstance(result, Awaitable):
            await result
    except Exception as exc:
        return Seen(type(exc).__name__, str(exc))
    raise AssertionError("the bad input was accepted: no exception")


def leaderlib_command(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60.0
) -> Seen:
    """Run ``leaderlib ARGS`` as a user would; report its exit status and stderr (stdout if empty)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LEADERLIB_")}
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "leaderlib", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    return Seen(f"exit {done.returncode}", done.stderr.strip() or done.stdout.strip())

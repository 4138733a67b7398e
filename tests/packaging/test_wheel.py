"""The package as a user gets it (issue 14).

``python -m build`` makes a wheel and an sdist that ``twine check`` accepts; the
wheel, installed with only the ``redis`` extra into a fresh virtualenv (pip
from the package index), runs ``examples/cron_service.py`` against the real
Redis: it leads and a job runs. The build happens once per session, in a copy
of the source, so the repository gets no build/ or egg-info from it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from leaderlib.testing.servers import RedisServer

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the wheel and the sdist, built from a copy of the source."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "leaderlib", source / "leaderlib", ignore=shutil.ignore_patterns("__pycache__"))
    out = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def test_wheel_and_sdist_pass_twine_check(dist: Path) -> None:
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, [*wheels, *sdists])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_with_the_redis_extra_runs_the_example(
    dist: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[redis]"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # Only what the redis extra brings: no SDK, no other store's client.
    missing = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print([m for m in "
         "('opentelemetry.sdk', 'kubernetes', 'aetcd', 'pytest') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert missing.stdout.strip() == "[]", missing.stdout
    version = subprocess.run(
        [str(venv / "bin" / "leaderlib"), "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version.stdout.strip() == f"leaderlib {expected}", version.stdout

    # Run from a directory of its own, so the import is the installed package, not the source tree.
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "examples" / "cron_service.py", work / "cron_service.py")
    url = f"{redis_server.url}?prefix=wheel-{secrets.token_hex(4)}:"
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEADERLIB_")}
    env.pop("PYTHONPATH", None)
    process = subprocess.Popen(
        [
            str(venv / "bin" / "leaderlib"),
            "run",
            "cron_service.py:service",
            "--backend",
            url,
            "--log-format",
            "json",
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    records: list[dict[str, object]] = []
    try:
        assert process.stdout is not None
        # poll-messages ticks every 10 s (cron */10 in the seconds field).
        deadline = time.monotonic() + 25
        for line in process.stdout:
            if line.startswith("{"):
                records.append(json.loads(line))
            if any(r.get("message") == "job run finished" for r in records) or time.monotonic() > deadline:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    messages = [r.get("message") for r in records]
    assert "became leader" in messages, out
    finished = [r for r in records if r.get("message") == "job run finished"]
    assert finished and finished[0]["outcome"] == "ok", messages
    assert process.returncode == 0, out
    location = subprocess.run(
        [str(python), "-c", "import leaderlib; print(leaderlib.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert str(venv) in location.stdout, location.stdout

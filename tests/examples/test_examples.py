"""The framework examples run as a user runs them (issue 14).

``examples/fastapi_service.py`` is served by uvicorn in a subprocess and
answers real HTTP requests on its leader endpoint; the threaded program and
the worker run for a few seconds on SQLite and show they led and ran a job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from leaderlib.testing.servers import free_port

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHORT_LEASES = {
    "LEADERLIB_LEASE_DURATION": "2",
    "LEADERLIB_RENEW_DEADLINE": "1.5",
    "LEADERLIB_RENEW_INTERVAL": "0.5",
    "LEADERLIB_RETRY_PERIOD": "0.5",
}


def _env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{(tmp_path / 'leases.sqlite3').as_posix().lstrip('/')}"
    return {**os.environ, **SHORT_LEASES, "LEADERLIB_BACKEND": url}


def _uvicorn(port: int) -> list[str]:
    """The command a user types: uvicorn serving the example app, one process per replica."""
    app = ("fastapi_service:app", "--app-dir", str(EXAMPLES), "--host", "127.0.0.1", "--port", str(port))
    return [sys.executable, "-m", "uvicorn", *app]


def _stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, wait, and return what the process printed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def test_fastapi_service_answers_on_its_leader_endpoint(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        _uvicorn(port),
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body: dict[str, object] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                response = httpx.get(f"http://127.0.0.1:{port}/leader", timeout=2)
                body = response.json()
                runs = body.get("runs")
                if response.status_code == 200 and isinstance(runs, dict) and runs["refresh-cache"] >= 1:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the app never led and ran its job: {body}\n{_stop(process)}")
        assert body["is_leader"] is True and body["election"] == "fastapi-example"
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert health.status_code == 200 and health.json() == {"ok": True}
    finally:
        out = _stop(process)
    # The lifespan's shutdown stopped the service gracefully (uvicorn then re-raises
    # the SIGTERM it handled, as recent versions do, so -15 is a clean exit too).
    assert process.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out, out


def test_fastapi_follower_answers_503(tmp_path: Path) -> None:
    """Two replicas: exactly one answers 200 on /leader, the other 503."""
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            _uvicorn(port),
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for port in ports
    ]
    try:
        statuses: list[int] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                statuses = sorted(
                    httpx.get(f"http://127.0.0.1:{port}/leader", timeout=2).status_code for port in ports
                )
                if statuses == [200, 503]:
                    break
            time.sleep(0.2)
        assert statuses == [200, 503], statuses
    finally:
        for process in processes:
            _stop(process)


def test_threaded_program_leads_and_runs_its_job(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "threaded_program.py"), "--seconds", "3"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("led=True runs="), result.stdout
    assert int(last.rpartition("=")[2]) >= 1, result.stdout


def test_worker_leads_enqueues_and_works(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "worker.py")],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    out = _stop(process)
    assert process.returncode == 0, out
    assert "did cleanup (fencing token 1)" in out, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("led=True tasks="), out
    assert int(last.rpartition("=")[2]) >= 2, out

"""A server started by the test runner dies with it, even when the runner is SIGKILLed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: The parent: starts a server process (``sleep``) as the harness does, prints its pid, waits.
PARENT = """
import sys, time
from pathlib import Path
from leaderlib.testing.servers import _Process
server = _Process("sleeper", ["sleep", "60"], Path(sys.argv[1]), Path(sys.argv[2]))
print(server.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): it is dead for our purpose.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_dies_when_its_starter_is_sigkilled(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "sleeper.log"), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    server = int(parent.stdout.readline())
    try:
        assert alive(server)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(server), "the server outlived the process that started it"
    finally:
        parent.kill()
        parent.wait(10)
        parent.stdout.close()
        if alive(server):
            os.kill(server, 9)

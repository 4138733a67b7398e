"""Replica processes of the campaign: ``leaderlib run tests.chaos.service:service``.

Each runs under the clock shim (``shim/clockshim.c``, built here once per
source version into the leaderlib cache, under a file lock), with a clock
file of its own, so a wall-clock step or a suspend-like pause hits exactly
one process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

from leaderlib.testing.servers import cache_dir, forget_at_exit, kill_at_exit

ROOT = Path(__file__).resolve().parents[2]
SHIM_SOURCE = Path(__file__).with_name("shim") / "clockshim.c"


def build_shim() -> Path:
    """The shim's shared object, compiled with gcc on first use (a lock keeps parallel builds apart)."""
    digest = hashlib.sha1(SHIM_SOURCE.read_bytes()).hexdigest()[:12]
    out_dir = cache_dir() / "chaos"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"clockshim-{digest}.so"
    with open(out_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = target.with_suffix(".tmp")
            subprocess.run(
                ["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(partial), str(SHIM_SOURCE), "-ldl"],
                check=True,
                capture_output=True,
            )
            partial.rename(target)
    return target


class Replica:
    """One replica slot: its process (respawned after a kill) and its clock offsets."""

    #: What ``leaderlib run`` runs (other tests reuse the slots with a service of their own).
    target = "tests.chaos.service:service"

    def __init__(self, slot: int, url: str, directory: Path, env: dict[str, str], shim: Path) -> None:
        self.slot = slot
        self.name = f"r{slot}"
        self.url = url
        self.directory = directory
        self.clock_file = directory / f"{self.name}.clock"
        self.wall_offset = 0.0
        self.mono_offset = 0.0
        self._write_clock()
        self.env = {
            **os.environ,
            **env,
            "CHAOS_REPLICA": self.name,
            "CHAOS_CLOCK_FILE": str(self.clock_file),
            "LD_PRELOAD": str(shim),
            "PYTHONUNBUFFERED": "1",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.spawns = 0
        self.stopped = False

    def _write_clock(self) -> None:
        # Rewritten in place: the shim keeps the file mapped.
        data = struct.pack("dd", self.wall_offset, self.mono_offset)
        fd = os.open(self.clock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)

    def step_wall(self, seconds: float) -> None:
        self.wall_offset += seconds
        self._write_clock()

    def set_wall(self, seconds: float) -> None:
        self.wall_offset = seconds
        self._write_clock()

    def hold_monotonic(self, seconds: float) -> None:
        """Take ``seconds`` off this process's CLOCK_MONOTONIC, as a host suspend of that long does."""
        self.mono_offset -= seconds
        self._write_clock()

    def spawn(self) -> None:
        """Start (again) with fresh clocks: a restarted process has no offsets of its own."""
        self.wall_offset = self.mono_offset = 0.0
        self._write_clock()
        self.spawns += 1
        log = open(self.directory / f"{self.name}-{self.spawns}.log", "wb")  # noqa: SIM115 - the child owns it
        command = [sys.executable, "-m", "leaderlib", "run", self.target]
        command += ["--backend", self.url, "--log-format", "json"]
        with log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        # Its own session keeps a terminal's Ctrl-C off it, so the harness must end it.
        kill_at_exit(self)
        self.stopped = False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)
            self.stopped = sig == signal.SIGSTOP

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        forget_at_exit(self)

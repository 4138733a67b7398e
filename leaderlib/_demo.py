"""``leaderlib demo``: replicas of a small cron service fail over while you watch.

The demo starts N replica processes (``leaderlib run leaderlib._demo:demo_service``)
on one backend, SIGKILLs the leader part-way, stops the next leader with
SIGTERM near the end, and measures everything from the replicas' own JSON
logs: leadership intervals, overlaps, failover and handover times, job runs,
ticks run more than once, ticks missed, and the missed ticks the next leader
ran late (every demo job has a ``misfire_grace`` longer than the failover).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from ._errors import ConfigError
from ._runtime import JobContext, Service
from ._ticks import count_ticks

__all__ = ["MIN_DURATION", "demo_service", "run_demo"]

#: The shortest demo that shows what it promises: a leader (about 1 s), 3 s of
#: its runs, a failover that waits out the killed leader's lease (10 s by
#: default), 3 s of the next leader's runs, a graceful handover. Shorter
#: durations used to be stretched silently to about 17 s.
MIN_DURATION = 20.0

#: Longer than the failover the demo causes (the default 10 s lease, plus the
#: retry), so the ticks without a leader are run late by the next one.
DEMO_MISFIRE_GRACE = 15.0


def demo_service() -> Service:
    """The origin's message-polling service on a fast clock: ticks every second, so a
    30-second demo shows many runs. ``examples/cron_service.py`` has the real schedule."""
    service = Service("demo-cron")

    @service.job(cron="* * * * * *", name="poll-messages", misfire_grace=DEMO_MISFIRE_GRACE)
    def poll_messages(ctx: JobContext) -> None:
        ctx.check()  # before the side effect: a paused ex-leader must not act
        time.sleep(0.05)

    @service.job(every=5, name="health-check", misfire_grace=DEMO_MISFIRE_GRACE)
    async def health_check() -> None:
        return None

    @service.job(cron="*/10 * * * * *", name="report", misfire_grace=DEMO_MISFIRE_GRACE)
    def report(ctx: JobContext) -> None:
        ctx.check()

    return service


@dataclasses.dataclass
class _Replica:
    index: int
    process: subprocess.Popen[str]
    killed_at: float | None = None
    stopped_at: float | None = None

    @property
    def name(self) -> str:
        return f"replica-{self.index}"


@dataclasses.dataclass
class _Term:
    replica: str
    fencing_token: int
    start: float
    end: float | None = None


class _Demo:
    def __init__(self, replicas: int, duration: float, backend: str, quiet: bool) -> None:
        self.count = replicas
        self.duration = duration
        self.backend = backend
        self.quiet = quiet
        self.started = time.time()
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.replicas: list[_Replica] = []
        self.terms: list[_Term] = []
        self.runs: list[tuple[float, str, str, str, int]] = []  # logged at, replica, job, tick, token
        self.recovered: list[tuple[str, str, str]] = []  # replica, job, tick: missed ticks run late
        self.acquisitions: list[tuple[float, str]] = []
        self.readers: list[threading.Thread] = []

    def say(self, at: float, text: str) -> None:
        if not self.quiet:
            print(f"[{at - self.started:6.2f}s] {text}", flush=True)

    def spawn(self, index: int) -> None:
        env = dict(os.environ, LEADERLIB_IDENTITY=f"replica-{index}", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "leaderlib", "run", "leaderlib._demo:demo_service"]
        command += ["--backend", self.backend, "--log-format", "json"]
        process = subprocess.Popen(
            command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        replica = _Replica(index, process)
        self.replicas.append(replica)
        assert process.stderr is not None
        reader = threading.Thread(target=self._read, args=(replica.name, process.stderr), daemon=True)
        reader.start()
        self.readers.append(reader)

    def _read(self, name: str, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = {"message": line.rstrip(), "time": time.time(), "level": "RAW"}
                self.events.put((name, entry))

    def pump(self, until: float) -> None:
        """Handle replica log events until the wall time ``until``."""
        while (remaining := until - time.time()) > 0:
            try:
                name, entry = self.events.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            self._handle(name, entry)

    def _handle(self, name: str, entry: dict[str, Any]) -> None:
        message, at = entry.get("message", ""), float(entry.get("time", time.time()))
        if message == "became leader":
            token = int(entry.get("fencing_token", -1))
            self.terms.append(_Term(name, token, at))
            self.acquisitions.append((at, name))
            self.say(at, f"{name} became leader (fencing token {token})")
        elif message == "stopped leading":
            for term in reversed(self.terms):
                if term.replica == name and term.end is None:
                    term.end = at
            self.say(at, f"{name} stopped leading ({entry.get('reason')})")
        elif message == "job run started":
            job, tick, token = entry["job"], entry["tick"], int(entry["fencing_token"])
            self.runs.append((at, name, job, tick, token))
            self.say(at, f"{name} runs {job} for tick {tick[11:19]} with fencing token {token}")
        elif message == "missed tick run late":
            self.recovered.append((name, entry["job"], entry["tick"]))
            self.say(
                at,
                f"{name} recovers missed tick {entry['tick'][11:19]} of {entry['job']} "
                f"({entry.get('late_seconds')} s late)",
            )
        elif entry.get("level") in ("ERROR", "CRITICAL", "RAW"):
            self.say(at, f"{name}: {message} {entry.get('error', '')}".rstrip())

    def kill_all(self) -> None:
        """SIGKILL every replica still running (after SIGCONT, should one be frozen)."""
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGCONT)
                replica.process.kill()
                replica.process.wait()
        for reader in self.readers:
            reader.join(timeout=5)

    def runs_by(self, replica: str) -> list[tuple[float, str, str]]:
        """(logged at, job, tick) of every run ``replica`` started."""
        return [(at, job, tick) for at, name, job, tick, _ in self.runs if name == replica]

    def leader(self) -> _Replica | None:
        open_terms = [term for term in self.terms if term.end is None]
        if not open_terms:
            return None
        name = max(open_terms, key=lambda term: term.start).replica
        alive = (r for r in self.replicas if r.name == name and r.killed_at is None and r.stopped_at is None)
        return next(alive, None)

    def wait_for_leader(self, after: float, timeout: float) -> float | None:
        """Pump events until someone acquires after ``after``; return when they did."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.pump(min(deadline, time.time() + 0.05))
            later = [at for at, _ in self.acquisitions if at > after]
            if later:
                return min(later)
        return None

    def run(self) -> dict[str, Any]:
        self.say(time.time(), f"starting {self.count} replicas on {self.backend}")
        for index in range(self.count):
            self.spawn(index)
        first = self.wait_for_leader(0, timeout=30)
        if first is None:
            raise RuntimeError("no replica became leader within 30 s; see the errors above")

        failover = handover = None
        kill_at = max(first + 3, self.started + self.duration * 0.2)
        self.pump(kill_at)
        victim = self.leader()
        if victim is not None and self.count > 1:
            victim.process.send_signal(signal.SIGKILL)
            victim.killed_at = time.time()
            self.say(victim.killed_at, f"demo: SIGKILL {victim.name}, the leader")
            for term in self.terms:
                if term.replica == victim.name and term.end is None:
                    term.end = victim.killed_at
            acquired = self.wait_for_leader(victim.killed_at, timeout=60)
            if acquired is not None:
                failover = acquired - victim.killed_at
                self.say(acquired, f"failover took {failover:.2f}s")

        stop_at = max(time.time() + 3, self.started + self.duration * 0.8)
        self.pump(stop_at)
        leaving = self.leader()
        if leaving is not None and self.count > 2:
            leaving.process.send_signal(signal.SIGTERM)
            leaving.stopped_at = time.time()
            self.say(leaving.stopped_at, f"demo: SIGTERM {leaving.name}, the leader (graceful stop)")
            acquired = self.wait_for_leader(leaving.stopped_at, timeout=30)
            if acquired is not None:
                handover = acquired - leaving.stopped_at
                self.say(acquired, f"graceful handover took {handover:.3f}s")
            self._await_exit(leaving, timeout=15)

        self.pump(max(time.time(), self.started + self.duration))
        self.say(time.time(), "demo: stopping every replica")
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            try:
                replica.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
        for reader in self.readers:
            reader.join(timeout=5)
        self.pump(time.time() + 0.2)
        end = time.time()
        for term in self.terms:
            term.end = term.end if term.end is not None else end
        return self.summary(failover, handover)

    def missed_ticks(self) -> int:
        """Ticks of each job, between its first and last run, that no replica ran."""
        triggers = {job.name: job.trigger for job in demo_service()._jobs.values()}
        missed = 0
        for job, trigger in triggers.items():
            ran = {dt.datetime.fromisoformat(tick) for _, _, name, tick, _ in self.runs if name == job}
            if ran:
                first, last = min(ran), max(ran)
                missed += 1 + count_ticks(trigger, first, last) - len(ran)
        return missed

    def _await_exit(self, replica: _Replica, timeout: float) -> None:
        """Pump events until a replica that was asked to stop has exited."""
        deadline = time.time() + timeout
        while replica.process.poll() is None and time.time() < deadline:
            self.pump(time.time() + 0.05)
        code = replica.process.poll()
        self.say(
            time.time(),
            f"{replica.name} exited with status {code}"
            if code is not None
            else f"{replica.name} has not exited",
        )

    def summary(self, failover: float | None, handover: float | None) -> dict[str, Any]:
        terms = sorted(self.terms, key=lambda term: term.start)
        overlaps = sum(
            1
            for i, a in enumerate(terms)
            for b in terms[i + 1 :]
            if max(a.start, b.start) < min(a.end or a.start, b.end or b.start)
        )
        ticks = Counter((job, tick) for _, _, job, tick, _ in self.runs)
        return {
            "backend": self.backend,
            "replicas": self.count,
            "duration_seconds": round(time.time() - self.started, 3),
            "leaderships": [
                {"identity": t.replica, "fencing_token": t.fencing_token, "start": t.start, "end": t.end}
                for t in terms
            ],
            "overlaps": overlaps,
            "failover_seconds": None if failover is None else round(failover, 3),
            "handover_seconds": None if handover is None else round(handover, 3),
            "job_runs": len(self.runs),
            "duplicate_ticks": sum(1 for count in ticks.values() if count > 1),
            "missed_ticks": self.missed_ticks(),
            "recovered_ticks": len(self.recovered),
            "exit_codes": {r.name: r.process.returncode for r in self.replicas},
        }


def run_demo(
    *,
    replicas: int = 3,
    duration: float = 30.0,
    backend: str | None = None,
    json_path: str | None = None,
    quiet: bool = False,
) -> int:
    """Run the demo; print the account and summary; return 0 if no safety property was violated.

    Raises :class:`ConfigError` for fewer than two replicas or a duration under
    :data:`MIN_DURATION`."""
    if replicas < 2:
        raise ConfigError(
            f"must be at least 2, got {replicas}: the demo shows a failover, which needs a replica to take over",
            field="--replicas",
        )
    if not duration >= MIN_DURATION:  # also refuses nan
        raise ConfigError(
            f"must be at least {MIN_DURATION:g} seconds, got {duration:g}: the demo waits for a leader, "
            "SIGKILLs it, waits out its lease (10 s by default) for the failover, then stops the next "
            "leader gracefully",
            field="--duration",
        )
    with tempfile.TemporaryDirectory(prefix="leaderlib-demo-") as scratch:
        url = backend or f"sqlite:///{Path(scratch, 'leases.sqlite3').as_posix().lstrip('/')}"
        demo = _Demo(replicas, duration, url, quiet)
        try:
            summary = demo.run()
        finally:
            demo.kill_all()
    print()
    print(f"replicas:          {summary['replicas']} on {summary['backend']}")
    print(
        f"leaderships:       {len(summary['leaderships'])} (fencing tokens {[t['fencing_token'] for t in summary['leaderships']]})"
    )
    print(f"overlaps:          {summary['overlaps']}")
    print(f"failover:          {_measured(summary['failover_seconds'], replicas, 2, 'SIGKILL')}")
    print(f"graceful handover: {_measured(summary['handover_seconds'], replicas, 3, 'SIGTERM')}")
    print(f"job runs:          {summary['job_runs']}")
    print(f"duplicate ticks:   {summary['duplicate_ticks']}")
    print(f"missed ticks:      {summary['missed_ticks']}")
    print(
        f"recovered ticks:   {summary['recovered_ticks']} (missed while nobody led, run late by the next leader)"
    )
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    safe = summary["overlaps"] == 0 and summary["duplicate_ticks"] == 0 and summary["missed_ticks"] == 0
    return 0 if safe else 1


def _measured(seconds: float | None, replicas: int, needed: int, signal_name: str) -> str:
    """A summary time, or why there is none: too few replicas for that step, or no takeover."""
    if seconds is not None:
        return f"{seconds} s after {signal_name}"
    if replicas < needed:
        return f"n/a ({replicas} replica{'s' if replicas > 1 else ''}: this step needs {needed})"
    return f"none: no replica took over after {signal_name}"

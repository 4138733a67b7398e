"""A leader paused (SIGSTOP) for longer than its lease acts on nothing when it wakes.

The follower takes over while the leader is frozen; after SIGCONT the old
leader must notice from its own monotonic clock that its term is over and
step down without starting a single job run. (A run it was in the middle of
when frozen is what fencing tokens are for; see docs/safety.md.)
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from leaderlib._demo import _Demo

from .test_replicas import LEASE, SHORT_LEASES, backend_url


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis", "etcd", "kubernetes"])
def test_paused_leader_steps_down_on_waking_without_acting(
    store: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in SHORT_LEASES.items():
        monkeypatch.setenv(key, value)
    demo = _Demo(replicas=2, duration=0, backend=backend_url(store, request, tmp_path), quiet=True)
    try:
        for index in range(2):
            demo.spawn(index)
        assert demo.wait_for_leader(0, timeout=30) is not None
        demo.pump(time.time() + 1.5)  # the leader runs a job or two
        frozen = demo.leader()
        assert frozen is not None
        old_term = next(t for t in demo.terms if t.replica == frozen.name and t.end is None)

        frozen.process.send_signal(signal.SIGSTOP)
        stopped = time.time()
        taken = demo.wait_for_leader(stopped, timeout=LEASE + 5)
        assert taken is not None, "nobody took over from the frozen leader"
        demo.pump(time.time() + 1.0)

        woke = time.time()
        frozen.process.send_signal(signal.SIGCONT)
        demo.pump(woke + 3.0)
    finally:
        for replica in demo.replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGCONT)
                replica.process.kill()
                replica.process.wait()
        for reader in demo.readers:
            reader.join(timeout=5)

    assert old_term.end is not None and old_term.end >= woke, "the woken leader did not log stepping down"
    late_runs = [run for run in demo.runs_by(frozen.name) if run[0] >= taken]
    assert late_runs == [], f"the paused ex-leader started runs after the takeover: {late_runs}"
    new_terms = [t for t in demo.terms if t.start >= taken]
    assert new_terms and all(t.fencing_token > old_term.fencing_token for t in new_terms)

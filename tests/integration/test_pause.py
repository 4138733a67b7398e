"""A leader paused (SIGSTOP) for longer than its lease acts on nothing when it wakes.

The follower takes over while the leader is frozen; after SIGCONT the old
leader must notice from its own monotonic clock that its term is over and
step down without starting a single job run. (A run it was in the middle of
when frozen is what fencing tokens are for; see docs/safety.md.)
"""

from __future__ import annotations

import signal
import time

import pytest

from leaderlib._demo import _Demo

from .conftest import LEASE


@pytest.mark.slow
def test_paused_leader_steps_down_on_waking_without_acting(store_url: str) -> None:
    demo = _Demo(replicas=2, duration=0, backend=store_url, quiet=True)
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
        demo.kill_all()

    assert old_term.end is not None and old_term.end >= woke, "the woken leader did not log stepping down"
    late_runs = [run for run in demo.runs_by(frozen.name) if run[0] >= taken]
    assert late_runs == [], f"the paused ex-leader started runs after the takeover: {late_runs}"
    new_terms = [t for t in demo.terms if t.start >= taken]
    assert new_terms and all(t.fencing_token > old_term.fencing_token for t in new_terms)

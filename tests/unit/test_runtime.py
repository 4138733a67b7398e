"""Service: jobs run once per tick on the leader only, stop when leadership ends, stop gracefully.

Everything runs on a fake clock (``Service`` ticks by ``clock.wall()``, which
moves with ``advance``). Timing tests use async jobs; sync jobs run in real
threads, so their tests wait a few real milliseconds for the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import schedule

from leaderlib import ConfigError, ElectionConfig, JobContext, Service
from leaderlib._logging import constant_message
from leaderlib.backends import Backend
from leaderlib.backends.memory import MemoryBackend

from .scripted import Conflict, PausingClock, ScriptedBackend

T0 = 1000.0  # FakeClock's monotonic start...
W0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # ...and its wall-clock start


def wall(seconds: float) -> dt.datetime:
    return W0 + dt.timedelta(seconds=seconds)


def config(identity: str = "a", **changes: Any) -> ElectionConfig:
    values: dict[str, Any] = {
        "lease_duration": 3.0,
        "renew_deadline": 2.0,
        "renew_interval": 0.5,
        "retry_period": 0.5,
        "jitter": 0.0,
        "shutdown_grace": 1.0,
        "identity": identity,
    }
    return ElectionConfig(**{**values, **changes})


def memory(clock: PausingClock) -> Callable[[], MemoryBackend]:
    """Backends on one fresh memory:// store (stores outlive tests, so each test gets its own)."""
    name = f"unit-runtime-{uuid.uuid4().hex[:8]}"
    return lambda: MemoryBackend(name, clock=clock)


def make_service(
    clock: PausingClock, backend: Backend, identity: str = "a", name: str = "svc", **options: Any
) -> Service:
    mode = options.pop("mode", "leader")
    return Service(name, backend=backend, config=config(identity, **options), clock=clock, mode=mode)


@contextlib.asynccontextmanager
async def serving(service: Service, clock: PausingClock) -> AsyncIterator[asyncio.Task[None]]:
    """Run the service in a task for the block; cancel it afterwards if it still runs."""
    task = asyncio.create_task(service.run())
    await clock.settle()
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def real_wait(condition: Callable[[], object], timeout: float = 2.0) -> None:
    """Wait (real time, in 2 ms steps) for work a thread does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting for a job's thread"
        await asyncio.sleep(0.002)


# -- leader only ----------------------------------------------------------------------


async def test_jobs_run_only_on_the_leader_and_move_with_leadership(clock: PausingClock) -> None:
    backend = memory(clock)
    runs: list[tuple[str, dt.datetime, int]] = []

    def replica(identity: str) -> Service:
        service = make_service(clock, backend(), identity)

        async def tick(context: JobContext) -> None:
            runs.append((context.identity, context.scheduled_at, context.fencing_token))

        service.add_job(tick, every=10)
        return service

    first, second = replica("a"), replica("b")
    async with serving(first, clock) as first_task, serving(second, clock):
        await clock.advance(35)
        assert first.is_leader and not second.is_leader
        assert runs == [("a", wall(10), 1), ("a", wall(20), 1), ("a", wall(30), 1)]

        first.stop()  # releases the lease: the standby takes over at once
        await clock.settle()
        assert first_task.done()
        assert second.is_leader
        await clock.advance(30)
        assert runs[3:] == [("b", wall(40), 2), ("b", wall(50), 2), ("b", wall(60), 2)]


async def test_a_follower_never_runs_jobs(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    backend.seize("svc", "someone-else", lease_duration=3.0)
    ran: list[dt.datetime] = []
    service = make_service(clock, backend)

    async def tick(context: JobContext) -> None:
        ran.append(context.scheduled_at)

    service.add_job(tick, every=1)
    async with serving(service, clock):
        for _ in range(20):  # the holder stays alive
            await clock.advance(0.5)
            backend.touch("svc")
        assert ran == []
        assert not service.is_leader


# -- overlapping runs -----------------------------------------------------------------


async def test_a_tick_during_a_run_is_skipped_and_logged(
    clock: PausingClock, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service(clock, memory(clock)())
    starts: list[tuple[float, dt.datetime]] = []

    async def slow(context: JobContext) -> None:
        starts.append((clock.monotonic(), context.scheduled_at))
        await clock.sleep(25)

    service.add_job(slow, every=10)
    async with serving(service, clock):
        await clock.advance(45)
    assert starts == [(T0 + 10, wall(10)), (T0 + 40, wall(40))]
    skipped = [r for r in caplog.records if r.getMessage().startswith("tick skipped")]
    assert [r.__dict__["tick"] for r in skipped] == [wall(20).isoformat(), wall(30).isoformat()]
    assert all(r.levelno == logging.WARNING and r.__dict__["job"] == "slow" for r in skipped)


async def test_overlap_queue_runs_once_more_right_after(
    clock: PausingClock, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service(clock, memory(clock)())
    starts: list[float] = []

    async def slow() -> None:
        starts.append(clock.monotonic())
        await clock.sleep(25)

    service.add_job(slow, every=10, overlap="queue")
    async with serving(service, clock):
        await clock.advance(36)
    # 10: runs until 35; 20: queued; 30: one is queued already, so skipped; 35: the queued run.
    assert starts == [T0 + 10, T0 + 35]
    skipped = [r for r in caplog.records if r.getMessage().startswith("tick skipped")]
    assert [r.__dict__["tick"] for r in skipped] == [wall(30).isoformat()]


async def test_queued_run_is_for_the_tick_that_was_queued(clock: PausingClock) -> None:
    service = make_service(clock, memory(clock)())
    ticks: list[dt.datetime] = []

    async def slow(context: JobContext) -> None:
        ticks.append(context.scheduled_at)
        await clock.sleep(15)

    service.add_job(slow, every=10, overlap="queue")
    async with serving(service, clock):
        await clock.advance(26)
    assert ticks == [wall(10), wall(20)]


# -- leadership loss ------------------------------------------------------------------


async def test_async_run_is_cancelled_when_leadership_is_lost(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend)
    starts: list[tuple[float, int]] = []
    cancelled: list[float] = []

    async def long(context: JobContext) -> None:
        starts.append((clock.monotonic(), context.fencing_token))
        try:
            await clock.sleep(100)
        except asyncio.CancelledError:
            cancelled.append(clock.monotonic())
            raise

    service.add_job(long, every=10)
    async with serving(service, clock) as task:
        await clock.advance(10.1)
        assert starts == [(T0 + 10, 1)]
        backend.script("renew", Conflict("other"))  # the next renewal (T0 + 10.5) finds it taken
        await clock.advance(0.5)
        assert cancelled == [T0 + 10.5]
        assert not service.is_leader and not task.done()

        # "other" never renews: 3 s (lease_duration) later this replica leads again, with a
        # higher fencing token, and runs the next tick.
        await clock.advance(10)
        assert service.is_leader
        assert starts == [(T0 + 10, 1), (T0 + 20, 3)]


# -- sync jobs ------------------------------------------------------------------------


async def test_sync_job_gets_a_job_context(clock: PausingClock) -> None:
    service = make_service(clock, memory(clock)(), identity="replica-1")
    seen: list[tuple[JobContext, bool]] = []

    def report(context: JobContext) -> None:  # runs in a worker thread
        seen.append((context, context.is_leader()))

    service.add_job(report, every=10)
    async with serving(service, clock):
        await clock.advance(10)
        await real_wait(lambda: seen)
    [(context, was_leader)] = seen
    assert was_leader
    assert (context.job, context.election, context.identity) == ("report", "svc", "replica-1")
    assert context.fencing_token == 1
    assert context.scheduled_at == wall(10)
    assert context.leadership.fencing_token == 1


async def test_sync_job_without_arguments(clock: PausingClock) -> None:
    service = make_service(clock, memory(clock)())
    calls: list[int] = []
    service.add_job(lambda: calls.append(1), every=5, name="ping")
    async with serving(service, clock):
        await clock.advance(5)
        await real_wait(lambda: calls)
    assert calls == [1]


async def test_a_failing_sync_job_is_logged_and_the_next_tick_runs(
    clock: PausingClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leaderlib.runtime")
    service = make_service(clock, memory(clock)())
    calls: list[float] = []

    def broken() -> None:
        calls.append(clock.monotonic())
        raise ValueError("boom")

    service.add_job(broken, every=5)
    async with serving(service, clock):
        await clock.advance(5)
        await real_wait(lambda: [r for r in caplog.records if constant_message(r) == "job run finished"])
        await clock.advance(5)
        await real_wait(lambda: len(calls) == 2)
    [failed, *_] = [r for r in caplog.records if constant_message(r) == "job run failed"]
    assert failed.exc_info is not None and isinstance(failed.exc_info[1], ValueError)
    finished = [r for r in caplog.records if constant_message(r) == "job run finished"]
    assert finished[0].__dict__["outcome"] == "error"


async def test_a_sync_run_left_over_from_a_lost_term_is_not_run_again_beside_itself(
    clock: PausingClock,
) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend)
    go = threading.Event()
    starts: list[tuple[dt.datetime, int]] = []

    def slow(context: JobContext) -> None:
        starts.append((context.scheduled_at, context.fencing_token))
        go.wait(10)

    service.add_job(slow, every=1)
    try:
        async with serving(service, clock):
            await clock.advance(1.1)
            await real_wait(lambda: starts)
            backend.script("renew", Conflict("other"))  # lost at 1.5; led again from 4.5
            await clock.advance(5.0)
            assert service.is_leader
            assert starts == [(wall(1), 1)]  # the old run's thread goes on: its ticks are skipped
            go.set()
            await real_wait(lambda: not service._jobs["slow"].busy())
            await clock.advance(1.0)
            await real_wait(lambda: len(starts) == 2)
            assert starts[1] == (wall(7), 3)
    finally:
        go.set()


# -- per-job mode ---------------------------------------------------------------------


async def test_per_job_mode_holds_one_election_per_job(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend, name="billing", mode="per-job")
    seen: dict[str, str] = {}

    async def invoices(context: JobContext) -> None:
        seen[context.job] = context.election

    async def reminders(context: JobContext) -> None:
        seen[context.job] = context.election

    service.add_job(invoices, every=10)
    service.add_job(reminders, every=10)
    assert service.election_for("invoices") == "billing.invoices"
    async with serving(service, clock):
        await clock.advance(10)
        assert seen == {"invoices": "billing.invoices", "reminders": "billing.reminders"}
        elections = {call.election for call in backend.calls_to("try_acquire")}
        assert elections == {"billing.invoices", "billing.reminders"}
        for election in elections:
            record = backend.current(election)
            assert record is not None and record.holder == "a"


# -- graceful stop --------------------------------------------------------------------


async def test_stop_lets_a_running_run_finish_then_releases(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend, shutdown_grace=5.0)
    finished: list[float] = []

    async def job() -> None:
        await clock.sleep(1)
        finished.append(clock.monotonic())

    service.add_job(job, every=10)
    async with serving(service, clock) as task:
        await clock.advance(10.2)
        service.stop()
        await clock.advance(0.5)
        assert not task.done()
        assert backend.calls_to("release") == []

        await clock.advance(0.35)
        assert finished == [T0 + 11]  # finished, not cancelled
        assert task.done() and task.result() is None
        [release] = backend.calls_to("release")
        assert release.at == T0 + 11
        assert backend.current("svc") is None


async def test_stop_cancels_a_run_still_going_after_shutdown_grace(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend, shutdown_grace=5.0)
    cancelled: list[float] = []

    async def stuck() -> None:
        try:
            await clock.sleep(1000)
        except asyncio.CancelledError:
            cancelled.append(clock.monotonic())
            raise

    service.add_job(stuck, every=10)
    async with serving(service, clock) as task:
        await clock.advance(10)
        service.stop()
        await clock.advance(4.9)
        assert not task.done() and cancelled == []
        await clock.advance(0.2)
        assert cancelled == [pytest.approx(T0 + 15)]
        assert task.done()
        assert len(backend.calls_to("release")) == 1


async def test_stop_launches_no_new_runs(clock: PausingClock) -> None:
    service = make_service(clock, memory(clock)())
    starts: list[float] = []

    async def job() -> None:
        starts.append(clock.monotonic())

    service.add_job(job, every=1)
    async with serving(service, clock) as task:
        await clock.advance(3.5)
        service.stop()
        await clock.advance(5)
        assert task.done()
    assert starts == [T0 + 1, T0 + 2, T0 + 3]


async def test_stop_gives_a_run_the_whole_grace_even_past_its_jobs_next_ticks(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend, shutdown_grace=5.0)
    finished: list[float] = []
    cancelled: list[float] = []

    async def slow() -> None:
        try:
            await clock.sleep(2.5)
        except asyncio.CancelledError:
            cancelled.append(clock.monotonic())
            raise
        finished.append(clock.monotonic())

    service.add_job(slow, every=1)
    async with serving(service, clock) as task:
        await clock.advance(1.2)  # the run for tick 1 goes on until 3.5
        service.stop()
        await clock.advance(2.0)  # the job's ticks at 2 and 3 pass: no reason to cut the run
        assert cancelled == [] and backend.calls_to("release") == []
        await clock.advance(0.5)
        assert cancelled == [] and finished == [pytest.approx(T0 + 3.5)]
        assert task.done()
        [release] = backend.calls_to("release")
        assert release.at == pytest.approx(T0 + 3.5)


async def test_stop_releases_the_lease_only_after_a_sync_run_has_returned(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend, shutdown_grace=5.0)
    go = threading.Event()
    returned: list[float] = []

    def slow() -> None:  # a thread: cancelling its task cannot stop it
        go.wait(10)
        returned.append(clock.monotonic())

    service.add_job(slow, every=1)
    try:
        async with serving(service, clock) as task:
            await clock.advance(1.2)
            service.stop()
            await clock.advance(2.0)  # ticks 2 and 3 pass while the thread still runs
            assert backend.calls_to("release") == [] and not task.done()
            assert service.is_leader  # still renewing: the run may still act on the lease
            go.set()
            await real_wait(task.done)
            assert returned == [pytest.approx(T0 + 3.2)]
            [release] = backend.calls_to("release")
            assert release.at == pytest.approx(T0 + 3.2)
    finally:
        go.set()


async def test_a_sync_run_outliving_the_grace_is_reported_and_the_lease_left_to_expire(
    clock: PausingClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend, shutdown_grace=2.0)  # renew_deadline is 2 s
    hang = threading.Event()
    threads: list[threading.Thread] = []

    def stuck() -> None:
        threads.append(threading.current_thread())
        hang.wait(10)

    service.add_job(stuck, every=10)
    try:
        async with serving(service, clock) as task:
            await clock.advance(10)
            await real_wait(lambda: threads)
            service.stop()
            await clock.advance(2.1)
            [report] = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert constant_message(report) == "sync job run still going after the shutdown grace"
            assert report.__dict__["job"] == "stuck"
            assert "hang.wait" in report.__dict__["stack"]  # where it is stuck

            # The term runs out (last renewal at 12 + renew_deadline) instead of being released.
            await clock.advance(2.0)
            await real_wait(task.done)
            assert backend.calls_to("release") == []
            record = backend.current("svc")
            assert record is not None and record.holder == "a"
            assert threads[0].is_alive() and threads[0].daemon  # it cannot hold up the exit
    finally:
        hang.set()


# -- registering jobs -----------------------------------------------------------------


def noop() -> None:
    return None


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        pytest.param({"cron": "61 * * * * *", "name": "nightly"}, "cron", "job 'nightly'", id="bad-cron"),
        pytest.param({"cron": "* * *", "name": "nightly"}, "cron", "job 'nightly'", id="few-fields"),
        pytest.param({"every": 0, "name": "nightly"}, "every", "job 'nightly'", id="bad-interval"),
        pytest.param({"name": "nightly"}, "trigger", "job 'nightly'", id="no-trigger"),
        pytest.param({"every": 1, "overlap": "parallel"}, "overlap", "'parallel'", id="bad-overlap"),
    ],
)
def test_bad_jobs_are_refused_naming_the_job(
    clock: PausingClock, kwargs: dict[str, Any], field: str, words: str
) -> None:
    service = make_service(clock, ScriptedBackend(clock))
    with pytest.raises(ConfigError) as raised:
        service.add_job(noop, **kwargs)
    assert raised.value.field == field
    assert words in str(raised.value)
    assert service.jobs == []


def test_job_names_are_unique(clock: PausingClock) -> None:
    service = make_service(clock, ScriptedBackend(clock))
    service.add_job(noop, every=1)
    with pytest.raises(ConfigError, match="already registered"):
        service.add_job(noop, every=5)
    assert service.describe() == [("noop", "every 1s")]


async def test_a_service_without_jobs_refuses_to_run(clock: PausingClock) -> None:
    service = make_service(clock, ScriptedBackend(clock))
    with pytest.raises(ConfigError, match="no jobs"):
        await service.run()


@pytest.mark.parametrize("mode", ["both", "", None])
def test_bad_mode(clock: PausingClock, mode: Any) -> None:
    with pytest.raises(ConfigError, match="per-job"):
        make_service(clock, ScriptedBackend(clock), mode=mode)


# -- schedule.Scheduler ---------------------------------------------------------------


async def test_a_schedule_scheduler_runs_its_jobs_only_on_the_leader(clock: PausingClock) -> None:
    backend = memory(clock)
    ran: list[str] = []

    def replica(identity: str) -> Service:
        scheduler = schedule.Scheduler()
        job = scheduler.every(1).hours.do(ran.append, identity)
        job.next_run = dt.datetime.now() - dt.timedelta(seconds=1)  # due now, in schedule's real time
        service = make_service(clock, backend(), identity)
        service.add_schedule(scheduler, poll=1.0)
        return service

    leader, standby = replica("a"), replica("b")
    async with serving(leader, clock), serving(standby, clock):
        for _ in range(3):
            await clock.advance(1)
            await asyncio.sleep(0.01)  # let the worker threads call run_pending
        await real_wait(lambda: ran)
        assert leader.is_leader and not standby.is_leader
    assert ran == ["a"]


def test_add_schedule_needs_a_scheduler(clock: PausingClock) -> None:
    service = make_service(clock, ScriptedBackend(clock))
    with pytest.raises(ConfigError, match=r"schedule\.Scheduler"):
        service.add_schedule(object())  # type: ignore[arg-type]


def test_election_name_comes_from_the_environment_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Service("billing", backend="memory://").election_for("send") == "billing"
    monkeypatch.setenv("LEADERLIB_ELECTION", "billing-staging")
    assert Service("billing", backend="memory://").election_for("send") == "billing-staging"
    per_job = Service("billing", backend="memory://", mode="per-job")
    assert per_job.election_for("send") == "billing-staging.send"


# -- wall-clock steps -----------------------------------------------------------------


async def test_a_wall_clock_stepped_back_then_corrected_is_followed_within_a_second(
    clock: PausingClock,
) -> None:
    service = make_service(clock, memory(clock)())
    runs: list[tuple[float, dt.datetime]] = []

    async def job(context: JobContext) -> None:
        runs.append((round(clock.monotonic() - T0, 3), context.scheduled_at))

    service.add_job(job, every=1)
    async with serving(service, clock):
        await clock.advance(5.5)
        assert runs == [(s, wall(s)) for s in range(1, 6)]
        clock.step_wall(-15)  # date -s: the wall clock reads 15 s earlier...
        await clock.advance(4.0)
        assert len(runs) == 5  # (the ticks it names again have run already)
        clock.step_wall(15)  # ...and NTP corrects it at 9.5
        await clock.advance(1.6)
    # Within a second of the correction: the overdue tick, then the grid again.
    assert runs[5:] == [(10, wall(6)), (11, wall(11))]


async def test_a_wall_clock_stepped_forward_is_followed_within_a_second(clock: PausingClock) -> None:
    service = make_service(clock, memory(clock)())
    runs: list[tuple[float, dt.datetime]] = []

    async def job(context: JobContext) -> None:
        runs.append((round(clock.monotonic() - T0, 3), context.scheduled_at))

    service.add_job(job, every=10)
    async with serving(service, clock):
        await clock.advance(10.5)
        clock.step_wall(8)  # the 20 s tick is now 1.5 s away, not 9.5 s
        await clock.advance(2.0)
    assert runs == [(10, wall(10)), (12, wall(20))]


async def test_after_a_step_forward_and_back_this_replica_runs_no_tick_twice(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend)
    runs: list[tuple[float, dt.datetime, int]] = []

    async def job(context: JobContext) -> None:
        runs.append((round(clock.monotonic() - T0, 3), context.scheduled_at, context.fencing_token))

    service.add_job(job, every=1)
    async with serving(service, clock):
        await clock.advance(3.5)
        clock.step_wall(5)  # ahead: ticks 10 and 11 run early, 5-9 fall in the jump
        await clock.advance(3.0)
        assert [tick for _, tick, _ in runs] == [wall(s) for s in (1, 2, 3, 4, 10, 11)]
        clock.step_wall(-5)  # corrected at 6.5: ticks 7-11 come again
        backend.script("renew", Conflict("other"))  # and leadership is lost and won back
        await clock.advance(15.0)
        assert service.is_leader
    ticks = Counter(tick for _, tick, _ in runs)
    assert max(ticks.values()) == 1, ticks
    # The new term goes on after the last tick this replica ran, not at the clock's 10.
    assert next(tick for _, tick, token in runs if token > 1) == wall(12)


# -- issue 10 -------------------------------------------------------------------------


async def test_stop_before_run_is_remembered(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend)
    service.add_job(noop, every=1)
    service.stop()
    await asyncio.wait_for(service.run(), timeout=2)  # returns at once: it was asked to stop
    assert backend.calls_to("try_acquire") == []
    assert not service.is_leader


async def test_a_second_run_while_the_first_runs_is_refused(clock: PausingClock) -> None:
    """A second run() would campaign again with the same identity and replace the
    first run's electors under it: it is refused, and the first run goes on."""
    backend = ScriptedBackend(clock)
    service = make_service(clock, backend)
    service.add_job(noop, every=1)
    async with serving(service, clock) as task:
        await clock.advance(0.5)
        with pytest.raises(RuntimeError, match="already running"):
            await asyncio.wait_for(service.run(), timeout=2)
        assert not task.done() and service.is_leader
        assert len(backend.calls_to("try_acquire")) == 1


async def test_the_shutdown_log_counts_the_runs_still_going(
    clock: PausingClock, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service(clock, memory(clock)(), shutdown_grace=1.0)
    release = threading.Event()
    service.add_job(lambda: release.wait(5), every=10, name="slow")
    service.add_job(noop, every=10, name="quick")
    async with serving(service, clock) as task:
        await clock.advance(10)
        await real_wait(lambda: service._jobs["quick"].thread is None)
        with caplog.at_level(logging.INFO, logger="leaderlib.runtime"):
            service.stop()
            await clock.settle()
        [waiting] = [r for r in caplog.records if constant_message(r) == "waiting for running jobs to finish"]
        assert waiting.count == 1  # type: ignore[attr-defined]
        release.set()
        await real_wait(lambda: service._jobs["slow"].thread is None)
        await clock.advance(0.1)
        assert task.done()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("bogus://x", "unknown backend scheme 'bogus'"),
        ("not a url", "is not a backend URL"),
    ],
)
def test_a_bad_backend_url_is_refused_at_construction(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as raised:
        Service("x", backend=url)
    assert raised.value.field == "backend"


def test_a_bad_cron_names_the_job_once(clock: PausingClock) -> None:
    service = make_service(clock, ScriptedBackend(clock))
    with pytest.raises(ConfigError) as raised:
        service.add_job(noop, cron="61 * * * * *", name="x")
    assert str(raised.value).startswith("cron: job 'x': cron expression '61 * * * * *' is invalid")
    assert str(raised.value).count("cron:") == 1


def test_per_job_elections_on_kubernetes_are_valid_lease_names() -> None:
    service = Service("billing", backend="kubernetes://default", mode="per-job")
    service.add_job(noop, every=1, name="poll_invoices")
    service.add_job(noop, every=1, name="Send_Reminders")
    assert service.election_for("poll_invoices") == "billing.poll-invoices"
    assert service.election_for("Send_Reminders") == "billing.send-reminders"
    with pytest.raises(ConfigError) as raised:
        service.add_job(noop, every=1, name="nightly report!")
    assert raised.value.field == "name"
    assert "'nightly report!'" in str(raised.value) and "'billing.nightly report!'" in str(raised.value)
    assert service.jobs == ["poll_invoices", "Send_Reminders"]


def test_per_job_elections_elsewhere_keep_the_job_name() -> None:
    # Other stores accept these names as they are; renaming them would move running
    # services to new elections during an upgrade.
    service = Service("billing", backend="memory://", mode="per-job")
    service.add_job(noop, every=1, name="poll_invoices")
    assert service.election_for("poll_invoices") == "billing.poll_invoices"


def test_leader_mode_jobs_on_kubernetes_share_the_service_election() -> None:
    """Regression: in leader mode every job runs under the service's one election; the
    per-job name check took that shared election for a clash and refused the second job
    (the demo and every multi-job service could not start on Kubernetes)."""
    service = Service("demo-cron", backend="kubernetes://default")
    service.add_job(noop, every=1, name="poll-messages")
    service.add_job(noop, every=5, name="health-check")
    service.configure(backend="kubernetes://default")
    assert service.jobs == ["poll-messages", "health-check"]
    assert {service.election_for(job) for job in service.jobs} == {"demo-cron"}


def test_two_jobs_mapping_to_one_lease_name_are_refused() -> None:
    service = Service("billing", backend="kubernetes://default", mode="per-job")
    service.add_job(noop, every=1, name="poll_invoices")
    with pytest.raises(ConfigError, match="same election"):
        service.add_job(noop, every=1, name="poll-invoices")


def test_configure_keeps_the_config_from_code_and_takes_the_command_lines_backend(
    tmp_path: Any, clock: PausingClock
) -> None:
    file = tmp_path / "leaderlib.toml"
    file.write_text('[leaderlib]\nelection = "from-file"\nlease_duration = 30\nrenew_deadline = 20\n')
    code = config("code-id")
    service = Service("svc", backend=ScriptedBackend(clock), config=code, clock=clock)
    service.configure(file=file, backend="memory://from-cli")
    assert service.config is code  # the code's config is kept whole
    assert service.election == "from-file"  # the code does not name the election
    assert service.backend_url == "memory://from-cli"  # the command line wins over the code's Backend


def test_configure_checks_the_backend_url(clock: PausingClock) -> None:
    service = make_service(clock, ScriptedBackend(clock))
    with pytest.raises(ConfigError, match="unknown backend scheme"):
        service.configure(backend="bogus://x")

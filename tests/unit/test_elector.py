"""LeaderElector on a fake clock and a scripted store: every timing rule of the safety model."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from leaderlib import (
    AccessDenied,
    Acquisition,
    BackendUnavailable,
    ConfigError,
    CorruptLeaseRecord,
    ElectionConfig,
    ElectorState,
    LeaderElector,
    Leadership,
    LeaseLost,
    LeaseRecord,
    NotLeader,
)
from leaderlib._campaign import DENIAL_GRACE
from leaderlib._logging import constant_message

from .scripted import PROCEED, Behaviour, Conflict, Delay, Hang, PausingClock, Raise, Return, ScriptedBackend

ELECTION = "nightly-report"
T0 = 1000.0  # FakeClock's start
LEASE, DEADLINE, INTERVAL, RETRY = 10.0, 7.0, 2.0, 2.0
#: Slack for tenacity's random retry jitter and the follower's 2 ms past expiry.
SLACK = 0.005


def config(**changes: Any) -> ElectionConfig:
    values: dict[str, Any] = {
        "lease_duration": LEASE,
        "renew_deadline": DEADLINE,
        "renew_interval": INTERVAL,
        "retry_period": RETRY,
        "jitter": 0.0,
        "identity": "me",
    }
    return ElectionConfig(**{**values, **changes})


def make_elector(clock: PausingClock, backend: ScriptedBackend, **options: Any) -> LeaderElector:
    identity = options.pop("identity", "me")
    return LeaderElector(ELECTION, backend, config(identity=identity), clock=clock, **options)


@contextlib.asynccontextmanager
async def running(elector: LeaderElector, clock: PausingClock) -> AsyncIterator[asyncio.Task[None]]:
    """Run the elector in a task until the block ends; then cancel it if it still runs."""
    task = asyncio.create_task(elector.run())
    await clock.settle()
    try:
        yield task
    finally:
        backend = elector.backend
        if isinstance(backend, ScriptedBackend):
            backend.clear()  # no scripted hang may hold up the shutdown's release
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def current_leadership(elector: LeaderElector) -> Leadership:
    assert elector.leadership is not None, "expected this elector to lead"
    return elector.leadership


# -- acquiring ------------------------------------------------------------------------


async def test_acquires_a_free_lease_at_once(clock: PausingClock, backend: ScriptedBackend) -> None:
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        leadership = current_leadership(elector)
        assert elector.is_leader
        assert elector.state is ElectorState.LEADING
        assert elector.leader == "me"
        [call] = backend.calls_to("try_acquire")
        assert (call.at, call.election, call.args) == (T0, ELECTION, ("me", LEASE, None))
        assert leadership.identity == "me"
        assert leadership.fencing_token == 1
        assert leadership.valid_until == T0 + DEADLINE


@pytest.mark.parametrize(
    ("holder_renews_at", "takeover_at"),
    [
        pytest.param([], LEASE, id="dead-holder"),
        pytest.param([3.0], 3.0 + LEASE, id="holder-renewed-once"),
        pytest.param([3.0, 9.5], 9.5 + LEASE, id="holder-renewed-twice"),
    ],
)
async def test_takes_over_only_lease_duration_after_its_own_last_observation(
    clock: PausingClock, backend: ScriptedBackend, holder_renews_at: list[float], takeover_at: float
) -> None:
    # The record was written long ago by wall time and monotonic time alike:
    # only what this follower itself saw, and when, may count.
    held = backend.seize(ELECTION, "other", lease_duration=LEASE)
    assert held.expires_in is None  # a store without server-side expiry
    await clock.advance(100)
    start = clock.monotonic()
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        assert elector.leader == "other"
        for at in holder_renews_at:
            await clock.advance(start + at - clock.monotonic())
            backend.touch(ELECTION)
        await clock.advance(start + takeover_at - clock.monotonic() - 0.001)
        assert not elector.is_leader
        assert all(call.args[2] is None for call in backend.calls_to("try_acquire"))

        await clock.advance(2 * SLACK)
        assert elector.is_leader
        takeovers = [call for call in backend.calls_to("try_acquire") if call.args[2] is not None]
        assert takeovers[0].at == pytest.approx(start + takeover_at, abs=SLACK)
        assert takeovers[0].at >= start + takeover_at
        assert takeovers[0].args[2].holder == "other"
        assert current_leadership(elector).fencing_token == held.fencing_token + 1


async def test_counts_the_stores_remaining_ttl_where_the_store_expires_leases(clock: PausingClock) -> None:
    backend = ScriptedBackend(clock, server_expiry=True)
    backend.seize(ELECTION, "other", lease_duration=LEASE)
    await clock.advance(4)
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        await clock.advance(LEASE - 4 - 0.001)
        assert not elector.is_leader
        await clock.advance(2 * SLACK)
        assert elector.is_leader
        assert backend.times("try_acquire")[-1] == pytest.approx(T0 + LEASE, abs=SLACK)


async def test_a_lease_the_store_is_slow_to_drop_is_not_retried_in_a_hot_loop(clock: PausingClock) -> None:
    """The store keeps answering with a record past its TTL (etcd revokes expired leases
    up to ~0.5 s late): the follower retries at most every 20 ms, not every 2 ms."""
    backend = ScriptedBackend(clock, server_expiry=True)
    stuck = dataclasses.replace(backend.seize(ELECTION, "other", lease_duration=LEASE), expires_in=0.0)
    backend.script("try_acquire", Return(Acquisition(acquired=False, record=stuck)), times=None)

    async def live_watch_with_nothing_new() -> AsyncIterator[LeaseRecord | None]:
        yield stuck
        await asyncio.Event().wait()

    backend.lease(ELECTION).watch = live_watch_with_nothing_new  # type: ignore[method-assign]
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        await clock.advance(1.0)
        attempts = len(backend.calls_to("try_acquire"))
        assert 10 <= attempts <= 1.0 / 0.02 + 2, attempts
        assert not elector.is_leader


# -- followers do not poll ---------------------------------------------------------------


def breakable_watch(backend: ScriptedBackend) -> asyncio.Event:
    """Wrap the election's watch so that setting the returned event breaks the open one
    (it raises BackendUnavailable); reopening it then follows the backend's scripts."""
    lease = backend.lease(ELECTION)
    original = lease.watch
    broken = asyncio.Event()

    async def watch() -> AsyncIterator[LeaseRecord | None]:
        records = original().__aiter__()
        while True:
            following = asyncio.ensure_future(records.__anext__())
            breaking = asyncio.ensure_future(broken.wait())
            try:
                done, _ = await asyncio.wait({following, breaking}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                breaking.cancel()
            if following not in done:
                following.cancel()
                broken.clear()
                raise BackendUnavailable("watch broke", election=ELECTION, backend="scripted")
            yield following.result()

    lease.watch = watch  # type: ignore[method-assign]
    return broken


async def test_a_follower_with_a_live_watch_attempts_only_at_the_expiry_it_counted(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    """Renewals reach the follower through the watch: no attempt for a whole lease and
    more while the holder renews; one attempt a hair past the expiry once it stops."""
    held = backend.seize(ELECTION, "other", lease_duration=LEASE)
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        for _ in range(7):  # 14 s: longer than a lease, 7 retry periods
            await clock.advance(INTERVAL)
            backend.touch(ELECTION)
        last_renewal = clock.monotonic()
        assert backend.times("try_acquire") == [T0]
        await clock.advance(LEASE - 0.001)
        assert backend.times("try_acquire") == [T0]
        await clock.advance(2 * SLACK)
        assert elector.is_leader
        _, takeover = backend.calls_to("try_acquire")
        assert takeover.at == pytest.approx(last_renewal + LEASE, abs=SLACK)
        assert takeover.args[2] is not None and takeover.args[2].holder == "other"
        assert current_leadership(elector).fencing_token == held.fencing_token + 1


async def test_a_follower_polls_at_the_retry_period_only_while_its_watch_is_broken(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    backend.seize(ELECTION, "other", lease_duration=LEASE)
    broken = breakable_watch(backend)
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        await clock.advance(1.0)
        backend.touch(ELECTION)
        await clock.advance(2.5)
        assert backend.times("try_acquire") == [T0]  # live: no polling

        backend.script("watch", Raise(BackendUnavailable), times=None)
        broken.set()  # at T0 + 3.5; the break itself costs one attempt (events may be lost)
        for _ in range(3):
            await clock.advance(RETRY)
            backend.touch(ELECTION)  # the holder renews, unseen
        attempts = backend.times("try_acquire")
        assert attempts[1:] == pytest.approx([T0 + 3.5 + RETRY * n for n in range(4)]), attempts

        backend.clear("watch")  # the watch reopens within a retry period and is live again
        await clock.advance(RETRY)
        healed = len(backend.calls_to("try_acquire"))
        for _ in range(4):
            await clock.advance(RETRY)
            backend.touch(ELECTION)
        assert len(backend.calls_to("try_acquire")) == healed
        assert not elector.is_leader


async def test_the_first_attempt_is_made_before_the_watch_is_opened(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    backend.seize(ELECTION, "other", lease_duration=LEASE)
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        assert [call.method for call in backend.calls][:2] == ["try_acquire", "watch"]


async def test_an_elector_that_acquires_at_once_opens_no_watch_and_keeps_one_across_campaigns(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        assert elector.is_leader
        assert backend.calls_to("watch") == []
        for _ in range(2):  # lose the lease twice: each campaign after that follows one watch
            backend.seize(ELECTION, "other", lease_duration=LEASE)
            await clock.advance(INTERVAL)
            assert not elector.is_leader
            await clock.advance(LEASE + SLACK)
            assert elector.is_leader
        assert len(backend.calls_to("watch")) == 1


@pytest.mark.parametrize(
    ("behaviour", "attempt_ends"),
    [
        pytest.param(Hang(), DEADLINE, id="hang-times-out-at-renew-deadline"),
        pytest.param(Raise(BackendUnavailable), 0.0, id="unavailable"),
        pytest.param(Raise(LeaseLost), 0.0, id="lease-lost"),
    ],
)
async def test_failed_acquisition_attempts_are_retried(
    clock: PausingClock, backend: ScriptedBackend, behaviour: Behaviour, attempt_ends: float
) -> None:
    terms: list[float] = []

    async def lead(leadership: Leadership) -> None:
        terms.append(leadership.valid_until)

    backend.script("watch", Raise(BackendUnavailable), times=None)  # polling only: exact times
    backend.script("try_acquire", behaviour)
    elector = make_elector(clock, backend, on_started_leading=lead)
    async with running(elector, clock) as task:
        await clock.advance(attempt_ends + RETRY - 0.001)
        assert not elector.is_leader
        await clock.advance(0.002)
        assert elector.is_leader and not task.done()
        first, second = backend.calls_to("try_acquire")
        assert first.at == T0
        assert second.at == T0 + attempt_ends + RETRY
        # The term counts from when the successful request was sent.
        assert terms == [second.at + DEADLINE]


async def test_term_counts_from_when_the_acquiring_request_was_sent(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    terms: list[float] = []

    async def lead(leadership: Leadership) -> None:
        terms.append(leadership.valid_until)

    backend.script("try_acquire", Delay(3))
    elector = make_elector(clock, backend, on_started_leading=lead)
    async with running(elector, clock):
        await clock.advance(3)
        assert terms == [T0 + DEADLINE]


async def test_the_first_renewal_is_due_an_interval_after_the_acquisition_was_sent(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    """An answer that came late (queued behind thousands of elections' requests) leaves less
    of the term: the first renewal counts from the sending, as every later one does, not
    from the answer, so a term answered 5 s late is renewed at once, not 2 s later."""
    backend.script("try_acquire", Delay(5))
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        await clock.advance(5)
        assert elector.is_leader
        assert backend.times("renew") == [T0 + 5]
        await clock.advance(INTERVAL)
        assert backend.times("renew") == [T0 + 5, T0 + 5 + INTERVAL]
        assert current_leadership(elector).valid_until == T0 + 5 + INTERVAL + DEADLINE


@dataclasses.dataclass
class PausedInFlight(Behaviour):
    """The process freezes for ``seconds`` while the request is out; the answer is waiting on waking."""

    clock: PausingClock
    seconds: float

    async def act(self, backend: ScriptedBackend, method: str, call: Any) -> Any:
        self.clock.jump(self.seconds)
        return PROCEED


async def test_an_acquisition_answered_past_its_deadline_is_not_led_but_replaced(
    clock: PausingClock, backend: ScriptedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The term counts from when the request was sent, so an answer that comes back past
    sent + renew_deadline is a term already over: its work must never start."""
    started: list[tuple[int, bool]] = []

    async def lead(leadership: Leadership) -> None:
        started.append((leadership.fencing_token, leadership.is_valid()))

    backend.script("try_acquire", PausedInFlight(clock, DEADLINE + 1))
    elector = make_elector(clock, backend, on_started_leading=lead)
    async with running(elector, clock):
        await clock.settle()
        assert started == [(2, True)]  # the stale term was replaced by a new one, at once
        first, second = backend.calls_to("try_acquire")
        assert (first.at, second.at) == (T0, T0 + DEADLINE + 1)  # replaced on waking, no wait
        assert second.args[2] is not None and second.args[2].fencing_token == 1
        assert current_leadership(elector).valid_until == second.at + DEADLINE
    assert "acquired past the renew deadline; taking a new term" in [
        constant_message(r) for r in caplog.records
    ]


# -- renewing -------------------------------------------------------------------------


async def test_renews_every_renew_interval_keeping_its_token(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        leadership = current_leadership(elector)
        first_version = leadership.record.version
        await clock.advance(11)
        assert backend.times("renew") == [T0 + 2, T0 + 4, T0 + 6, T0 + 8, T0 + 10]
        assert elector.leadership is leadership
        assert leadership.valid_until == T0 + 10 + DEADLINE
        assert leadership.fencing_token == 1
        assert leadership.record.version != first_version


@pytest.mark.parametrize("failures", [1, 2, 4])
async def test_transient_renew_failures_are_retried_and_leadership_kept(
    clock: PausingClock, backend: ScriptedBackend, failures: int
) -> None:
    backend.script("renew", Raise(BackendUnavailable), times=failures)
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        leadership = current_leadership(elector)
        await clock.advance(INTERVAL + 1)
        times = backend.times("renew")
        assert len(times) == failures + 1
        assert times[0] == T0 + INTERVAL
        assert times == sorted(times) and times[-1] < T0 + INTERVAL + 1
        assert elector.leadership is leadership and elector.is_leader
        assert not leadership.lost.is_set()
        assert leadership.valid_until == pytest.approx(times[-1] + DEADLINE)


async def test_renew_retries_never_go_past_the_deadline(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    backend.script("renew", Raise(BackendUnavailable), times=None)
    stopped_at: list[float] = []
    elector = make_elector(clock, backend, on_stopped_leading=lambda _: stopped_at.append(clock.monotonic()))
    async with running(elector, clock):
        leadership = current_leadership(elector)
        await clock.advance(DEADLINE + 1)
        term = [call.at for call in backend.calls_to("renew") if call.args[0] == leadership.record]
        assert len(term) > 5
        assert all(at < T0 + DEADLINE for at in term)
        # It kept trying until the next retry would not fit (at most ~renew_interval / 2 apart).
        assert term[-1] > T0 + DEADLINE - INTERVAL / 2 - 0.05
        assert leadership.lost.is_set()
        assert stopped_at and stopped_at[0] <= T0 + DEADLINE


@pytest.mark.parametrize(
    ("script", "ends_at"),
    [
        pytest.param([(Hang(), 1)], T0 + DEADLINE, id="hang"),
        pytest.param([(Delay(30), 1)], T0 + DEADLINE, id="slower-than-the-deadline"),
        pytest.param([(Delay(0), 2), (Hang(), 1)], T0 + 4 + DEADLINE, id="hang-after-two-renewals"),
        pytest.param([(Raise(LeaseLost), 1)], T0 + INTERVAL, id="lease-lost"),
        pytest.param([(Conflict("other"), 1)], T0 + INTERVAL, id="taken-by-another"),
        pytest.param([(Raise(AccessDenied), 1)], T0 + INTERVAL, id="access-denied"),
        pytest.param([(Raise(CorruptLeaseRecord), 1)], T0 + INTERVAL, id="corrupt"),
    ],
)
async def test_term_ends_on_the_fake_clock_exactly_when_renewal_fails(
    clock: PausingClock,
    backend: ScriptedBackend,
    script: list[tuple[Behaviour, int]],
    ends_at: float,
) -> None:
    work_cancelled_at: list[float] = []
    on_stop: list[tuple[float, bool, ElectorState]] = []

    async def lead(leadership: Leadership) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            work_cancelled_at.append(clock.monotonic())
            raise

    def stopped(leadership: Leadership) -> None:
        on_stop.append((clock.monotonic(), elector.is_leader, elector.state))

    for behaviour, times in script:
        backend.script("renew", behaviour, times=times)
    elector = make_elector(clock, backend, on_started_leading=lead, on_stopped_leading=stopped)
    async with running(elector, clock) as task:
        leadership = current_leadership(elector)
        await clock.advance(ends_at - T0 - 0.001)
        assert not leadership.lost.is_set()
        assert elector.leadership is leadership
        await clock.advance(0.002)
        assert leadership.lost.is_set()
        assert not leadership.is_valid()
        assert work_cancelled_at == [pytest.approx(ends_at, abs=0.002)]
        [(stopped_at, was_leader, state)] = on_stop
        assert stopped_at == pytest.approx(ends_at, abs=0.002)
        assert (was_leader, state) == (False, ElectorState.FOLLOWING)
        # It does not exit: it campaigns again.
        assert not task.done()
        assert any(at >= ends_at - 0.002 for at in backend.times("try_acquire"))


async def test_lease_lost_steps_down_then_campaigns_and_takes_over_later(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    backend.script("renew", Conflict("other"))
    elector = make_elector(clock, backend)
    async with running(elector, clock) as task:
        first = current_leadership(elector)
        await clock.advance(INTERVAL)
        assert first.lost.is_set()
        assert not elector.is_leader
        assert elector.state is ElectorState.FOLLOWING
        assert elector.leader == "other"
        # "other" never renews: a full lease_duration after this follower saw it, it takes over.
        await clock.advance(LEASE + 0.01)
        assert not task.done()
        second = current_leadership(elector)
        assert second is not first
        assert second.fencing_token == 3  # 1: me, 2: other, 3: me again


# -- stepping down when the process was paused -------------------------------------


async def test_paused_leader_steps_down_without_acting(
    clock: PausingClock, backend: ScriptedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    acted: list[float] = []

    async def lead(leadership: Leadership) -> None:
        while True:
            await clock.sleep(1)
            leadership.check()
            acted.append(clock.monotonic())

    elector = make_elector(clock, backend, on_started_leading=lead)
    async with running(elector, clock):
        leadership = current_leadership(elector)
        await clock.advance(3.5)
        assert acted == [T0 + 1, T0 + 2, T0 + 3]
        renewed = len(backend.calls_to("renew"))

        await clock.pause(20)  # frozen well past the deadline (last renewal sent at T0 + 2)

        assert leadership.lost.is_set()
        assert acted == [T0 + 1, T0 + 2, T0 + 3]
        assert len(backend.calls_to("renew")) == renewed  # no renewal of the stale term either
        assert "renew deadline passed; stepping down" in [constant_message(r) for r in caplog.records]


@pytest.mark.parametrize(
    ("frozen_for", "healthy"),
    [
        pytest.param(DEADLINE - 0.1, True, id="before-deadline"),
        pytest.param(DEADLINE + INTERVAL - 0.1, True, id="within-grace"),
        pytest.param(DEADLINE + INTERVAL, False, id="deadline-plus-interval"),
        pytest.param(60.0, False, id="long-past"),
    ],
)
async def test_healthy_is_false_only_for_a_leader_wedged_past_its_deadline(
    clock: PausingClock, backend: ScriptedBackend, frozen_for: float, healthy: bool
) -> None:
    elector = make_elector(clock, backend)
    assert elector.healthy()  # idle
    async with running(elector, clock):
        assert elector.healthy()
        await clock.settle()
        clock.jump(frozen_for)  # the event loop is blocked: nobody renews, nobody steps down
        assert elector.healthy() is healthy
        await clock.advance(0)  # the loop runs again and the elector recovers
        assert elector.healthy()


async def test_a_healthy_follower_is_healthy(clock: PausingClock, backend: ScriptedBackend) -> None:
    backend.seize(ELECTION, "other")
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        await clock.advance(5)
        assert elector.state is ElectorState.FOLLOWING
        assert elector.healthy()


# -- stopping -------------------------------------------------------------------------


async def test_stop_releases_the_lease_and_run_returns(clock: PausingClock, backend: ScriptedBackend) -> None:
    elector = make_elector(clock, backend)
    async with running(elector, clock) as task:
        leadership = current_leadership(elector)
        await clock.advance(3)
        elector.stop()
        await clock.settle()
        assert task.done() and task.result() is None
        assert leadership.lost.is_set()
        [release] = backend.calls_to("release")
        assert release.args[0] == leadership.record
        assert backend.current(ELECTION) is None
        assert elector.state is ElectorState.STOPPED
        assert not elector.is_leader


async def test_no_release_once_the_term_has_expired(clock: PausingClock, backend: ScriptedBackend) -> None:
    elector = make_elector(clock, backend)
    async with running(elector, clock) as task:
        clock.jump(DEADLINE + 1)  # frozen past the deadline; the stop request is what it sees first
        elector.stop()
        await clock.advance(0)
        assert task.done() and task.result() is None
        assert backend.calls_to("release") == []  # a follower may hold it by now


async def test_stop_while_following_returns_without_release(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    backend.seize(ELECTION, "other")
    elector = make_elector(clock, backend)
    async with running(elector, clock) as task:
        await clock.advance(3)
        elector.stop()
        await clock.settle()
        assert task.done() and task.result() is None
        assert backend.calls_to("release") == []
        assert backend.current(ELECTION) is not None


async def test_cancelling_run_still_releases_the_lease(clock: PausingClock, backend: ScriptedBackend) -> None:
    elector = make_elector(clock, backend)
    task = asyncio.create_task(elector.run())
    await clock.advance(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(backend.calls_to("release")) == 1
    assert elector.state is ElectorState.STOPPED


async def test_run_cannot_be_called_twice(clock: PausingClock, backend: ScriptedBackend) -> None:
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        with pytest.raises(RuntimeError, match="runs once"):
            await elector.run()


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(AccessDenied("grant get/update on leases", election=ELECTION), id="access-denied"),
        pytest.param(ConfigError("bad namespace", field="backend"), id="config-error"),
    ],
)
async def test_unfixable_acquire_errors_make_run_raise(
    clock: PausingClock, backend: ScriptedBackend, error: Exception
) -> None:
    backend.script("try_acquire", Raise(BackendUnavailable), times=2)
    backend.script("try_acquire", Raise(error), times=None)
    elector = make_elector(clock, backend)
    task = asyncio.create_task(elector.run())
    await clock.advance(3 * RETRY)
    assert task.done()
    with pytest.raises(type(error)):
        task.result()
    assert len(backend.calls_to("try_acquire")) == 3  # no endless loop
    assert elector.state is ElectorState.STOPPED


async def test_a_record_naming_us_that_the_store_did_not_grant_is_not_leadership(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    """Regression (issue 9, item 1's trap): the store answers with a record whose holder
    is our identity (an abandoned etcd session's key still first in the queue) but says
    this attempt did not acquire. The elector must not lead on the identity string, nor
    announce itself as the new leader."""
    leaders: list[str | None] = []
    ghost = backend.seize(ELECTION, "me", lease_duration=LEASE)
    backend.script("try_acquire", Return(Acquisition(acquired=False, record=ghost)), times=None)
    elector = make_elector(clock, backend, on_new_leader=leaders.append)
    async with running(elector, clock):
        await clock.advance(3 * RETRY)
        assert not elector.is_leader
        assert "me" not in leaders


async def test_access_denied_after_credentials_worked_is_retried(
    clock: PausingClock, backend: ScriptedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 9, item 6): a store that restarts may refuse credentials that
    worked a moment ago (a kube-apiserver answers 403 while RBAC warms up). A leader that
    loses its term to that keeps campaigning, logs it, and leads again once it passes."""
    elector = make_elector(clock, backend)
    async with running(elector, clock) as task:
        assert elector.is_leader
        first = current_leadership(elector).fencing_token
        denied = AccessDenied("forbidden: RBAC warming up", election=ELECTION)
        backend.script("renew", Raise(denied), times=None)
        backend.script("try_acquire", Raise(denied), times=None)
        await clock.advance(DEADLINE + 5 * RETRY)
        assert not task.done(), "a passing denial of working credentials ended run()"
        assert not elector.is_leader
        assert "acquisition attempt failed; will retry" in [constant_message(r) for r in caplog.records]
        backend.clear()
        await clock.advance(RETRY + 0.01)
        assert elector.is_leader
        assert current_leadership(elector).fencing_token > first


async def test_access_denied_that_lasts_past_the_grace_makes_run_raise(
    clock: PausingClock, backend: ScriptedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    elector = make_elector(clock, backend)
    task = asyncio.create_task(elector.run())
    await clock.settle()
    assert elector.is_leader
    backend.script("renew", Raise(AccessDenied), times=None)
    backend.script("try_acquire", Raise(AccessDenied), times=None)
    await clock.advance(DEADLINE + DENIAL_GRACE / 2)
    assert not task.done()
    assert "acquisition attempts still failing" in [
        constant_message(r) for r in caplog.records
    ]  # a reminder while it lasts
    await clock.advance(DENIAL_GRACE / 2 + 2 * RETRY)
    assert task.done()
    with pytest.raises(AccessDenied):
        task.result()


async def test_corrupt_record_is_logged_and_retried_never_replaced(
    clock: PausingClock, backend: ScriptedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="leaderlib.elector")
    backend.script("try_acquire", Raise(CorruptLeaseRecord), times=None)
    elector = make_elector(clock, backend)
    async with running(elector, clock) as task:
        await clock.advance(5 * RETRY)
        attempts = backend.calls_to("try_acquire")
        assert len(attempts) >= 5  # it keeps trying...
        assert all(call.args[2] is None for call in attempts)  # ...never asking to replace what it saw
        assert not elector.is_leader and not task.done()
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [constant_message(r) for r in errors] == ["acquisition attempt failed; will retry"]
        assert "scripted failure" in errors[0].__dict__["error"]
        assert "acquisition attempt failed again" in [
            constant_message(r) for r in caplog.records
        ]  # repeats go to DEBUG

        backend.clear("try_acquire")  # repaired by an operator
        await clock.advance(RETRY + 0.01)
        assert elector.is_leader


# -- observing ------------------------------------------------------------------------


async def test_observe_returns_the_holders_record(clock: PausingClock, backend: ScriptedBackend) -> None:
    elector = make_elector(clock, backend)
    assert await elector.observe() is None
    backend.seize(ELECTION, "other")
    record = await elector.observe()
    assert record is not None and record.holder == "other"
    assert backend.calls_to("get")
    async with running(elector, clock):
        assert elector.leader == "other"


async def test_on_new_leader_is_called_with_each_holder(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    seen: list[str | None] = []
    held = backend.seize(ELECTION, "other")
    elector = make_elector(clock, backend, on_new_leader=seen.append)
    async with running(elector, clock):
        assert seen == ["other"]
        await clock.advance(1)
        await backend.lease(ELECTION).release(held)  # the other replica shuts down cleanly
        await clock.settle()
        assert seen == ["other", None, "me"]
        assert elector.is_leader


async def test_fencing_token_grows_with_each_term_and_is_kept_across_renewals(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    first = make_elector(clock, backend, identity="a")
    second = make_elector(clock, backend, identity="b")
    async with running(first, clock), running(second, clock):
        term_a = current_leadership(first)
        assert term_a.fencing_token == 1
        assert not second.is_leader
        await clock.advance(5)
        assert term_a.fencing_token == term_a.record.fencing_token == 1

        first.stop()  # releases: the follower's watch wakes it at once
        await clock.settle()
        term_b = current_leadership(second)
        assert term_b.identity == "b"
        assert term_b.fencing_token == 2
        assert backend.times("try_acquire")[-1] == T0 + 5


async def test_leadership_check_raises_not_leader_after_loss(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    backend.script("renew", Conflict("other"))
    elector = make_elector(clock, backend)
    async with running(elector, clock):
        leadership = current_leadership(elector)
        leadership.check()
        assert leadership.is_valid()
        assert not leadership.wait_lost(0)
        waiting = asyncio.ensure_future(asyncio.to_thread(leadership.wait_lost, 10.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await clock.advance(INTERVAL)
        assert await asyncio.wait_for(waiting, 5.0)  # a thread that waited wakes at the end
        assert not leadership.is_valid()
        assert leadership.wait_lost(0)
        with pytest.raises(NotLeader) as raised:
            leadership.check()
        assert raised.value.election == ELECTION
    # A term whose first wait_lost() comes after it ended (its thread event made then).
    record = LeaseRecord(election=ELECTION, holder="me", lease_duration=LEASE, fencing_token=1, version="1")
    ended = Leadership(record=record, valid_until=clock.monotonic() + 5, clock=clock)
    ended._end()
    assert ended.wait_lost(0)


def test_election_name_must_be_a_non_empty_string(clock: PausingClock, backend: ScriptedBackend) -> None:
    for bad in ("", None, 3):
        with pytest.raises(ConfigError, match="election"):
            LeaderElector(bad, backend, config(), clock=clock)  # type: ignore[arg-type]


# -- stores whose other electors may miss renewals --------------------------------------


async def test_term_is_shortened_to_the_lease_minus_the_stores_observation_granularity(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    """Regression (issue 9, item 5): on a Kubernetes Lease a client-go follower sees
    renewTime in whole seconds, so it may count the lease from up to 1 s before the
    leader's last renewal; the term must end by lease_duration - 1 s of that renewal."""
    backend.observation_granularity = 1.0
    backend.script("renew", Hang(), times=None)
    elector = LeaderElector(
        ELECTION,
        backend,
        config(lease_duration=4, renew_deadline=3.9, renew_interval=0.25),
        clock=clock,
    )
    assert elector.renew_deadline == 3.0
    async with running(elector, clock):
        leadership = current_leadership(elector)
        assert leadership.valid_until == T0 + 3.0
        await clock.advance(2.999)
        assert elector.is_leader
        await clock.advance(0.002)
        assert leadership.lost.is_set() and not leadership.is_valid()


@pytest.mark.parametrize(
    ("granularity", "timing", "kept"),
    [
        pytest.param(0.0, (4, 3.9, 0.25), 3.9, id="every-write-seen"),
        pytest.param(1.0, (10, 7, 2), 7.0, id="defaults-already-safe"),
        pytest.param(1.0, (4, 3, 0.25), 3.0, id="exactly-the-bound"),
        pytest.param(1.0, (2, 1.5, 0.3), 1.0, id="short-lease"),
    ],
)
def test_renew_deadline_kept_or_shortened(
    clock: PausingClock, backend: ScriptedBackend, granularity: float, timing: tuple[float, ...], kept: float
) -> None:
    backend.observation_granularity = granularity
    lease, deadline, interval = timing
    chosen = config(lease_duration=lease, renew_deadline=deadline, renew_interval=interval)
    assert LeaderElector(ELECTION, backend, chosen, clock=clock).renew_deadline == kept


def test_a_lease_too_short_for_the_granularity_is_refused(
    clock: PausingClock, backend: ScriptedBackend
) -> None:
    backend.observation_granularity = 1.0
    short = config(lease_duration=1.5, renew_deadline=1.0, renew_interval=0.5)
    with pytest.raises(ConfigError, match="lengthen lease_duration") as raised:
        LeaderElector(ELECTION, backend, short, clock=clock)
    assert raised.value.field == "lease_duration"

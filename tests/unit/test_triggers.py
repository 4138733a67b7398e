"""Cron and interval triggers: which instant is the next tick, and clear errors for bad rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from leaderlib import ConfigError, CronTrigger, IntervalTrigger
from leaderlib._triggers import make_trigger

UTC = dt.UTC


def at(hour: int, minute: int, second: int, micro: int = 0, day: int = 1) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        # Six fields, seconds first.
        ("*/10 * * * * *", at(10, 0, 9, 500_000), [at(10, 0, 10), at(10, 0, 20), at(10, 0, 30)]),
        ("*/10 * * * * *", at(10, 0, 10), [at(10, 0, 20), at(10, 0, 30), at(10, 0, 40)]),
        ("*/10 * * * * *", at(10, 0, 10, 1), [at(10, 0, 20), at(10, 0, 30), at(10, 0, 40)]),
        ("*/10 * * * * *", at(10, 0, 55), [at(10, 1, 0), at(10, 1, 10), at(10, 1, 20)]),
        ("30 * * * * *", at(10, 0, 0), [at(10, 0, 30), at(10, 1, 30), at(10, 2, 30)]),
        ("0 0 12 * * *", at(10, 0, 0), [at(12, 0, 0), at(12, 0, 0, day=2), at(12, 0, 0, day=3)]),
        # Five fields: the classic minute-first cron.
        ("*/5 * * * *", at(10, 4, 30), [at(10, 5, 0), at(10, 10, 0), at(10, 15, 0)]),
        ("*/5 * * * *", at(10, 5, 0), [at(10, 10, 0), at(10, 15, 0), at(10, 20, 0)]),
        ("0 3 * * *", at(10, 0, 0), [at(3, 0, 0, day=2), at(3, 0, 0, day=3), at(3, 0, 0, day=4)]),
    ],
)
def test_cron_ticks_are_strictly_after_the_moment(
    expression: str, moment: dt.datetime, expected: list[dt.datetime]
) -> None:
    trigger = CronTrigger(expression)
    ticks = []
    for _ in expected:
        moment = trigger.next_after(moment)
        ticks.append(moment)
    assert ticks == expected


#: NestJS ``CronExpression`` constants (@nestjs/schedule), and the six-field forms of
#: "every minute" and "every day at midnight" that NestJS users also write.
NESTJS = {
    "EVERY_SECOND": ("* * * * * *", at(10, 0, 1)),
    "EVERY_5_SECONDS": ("*/5 * * * * *", at(10, 0, 5)),
    "EVERY_10_SECONDS": ("*/10 * * * * *", at(10, 0, 10)),
    "EVERY_30_SECONDS": ("*/30 * * * * *", at(10, 0, 30)),
    "EVERY_MINUTE": ("*/1 * * * *", at(10, 1, 0)),
    "EVERY_MINUTE (six fields)": ("0 */1 * * * *", at(10, 1, 0)),
    "EVERY_5_MINUTES": ("0 */5 * * * *", at(10, 5, 0)),
    "EVERY_30_MINUTES": ("0 */30 * * * *", at(10, 30, 0)),
    "EVERY_HOUR": ("0 0-23/1 * * *", at(11, 0, 0)),
    "EVERY_DAY_AT_MIDNIGHT": ("0 0 * * *", at(0, 0, 0, day=2)),
    "EVERY_DAY_AT_MIDNIGHT (six fields)": ("0 0 0 * * *", at(0, 0, 0, day=2)),
    "EVERY_DAY_AT_1AM": ("0 01 * * *", at(1, 0, 0, day=2)),
    "EVERY_WEEKDAY": ("0 0 * * 1-5", at(0, 0, 0, day=2)),  # 2026-01-02 is a Friday
    "EVERY_WEEKEND": ("0 0 * * 6,0", at(0, 0, 0, day=3)),
    "EVERY_1ST_DAY_OF_MONTH_AT_MIDNIGHT": ("0 0 1 * *", dt.datetime(2026, 2, 1, tzinfo=UTC)),
}


@pytest.mark.parametrize(("expression", "first"), list(NESTJS.values()), ids=list(NESTJS))
def test_nestjs_cron_expression_constants(expression: str, first: dt.datetime) -> None:
    assert CronTrigger(expression).next_after(at(10, 0, 0, 250_000)) == first


def test_cron_in_a_timezone_ticks_at_local_time() -> None:
    tz = dt.timezone(dt.timedelta(hours=2))
    trigger = CronTrigger("0 0 9 * * *", timezone=tz)
    tick = trigger.next_after(at(10, 0, 0))  # 12:00 local: the next 09:00 local is tomorrow
    assert tick == dt.datetime(2026, 1, 2, 9, 0, 0, tzinfo=tz)
    assert tick == at(7, 0, 0, day=2)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        pytest.param("* * * *", "has 4 fields", id="four-fields"),
        pytest.param("* * * * * * *", "has 7 fields", id="seven-fields"),
        pytest.param("", "has 0 fields", id="empty"),
        pytest.param("61 * * * * *", "Bad second", id="second-out-of-range"),
        pytest.param("0 60 * * * *", "Bad minute", id="minute-out-of-range"),
        pytest.param("* * 25 * * *", "Bad hour", id="hour-out-of-range"),
        pytest.param("* * * 32 * *", "Bad day", id="day-out-of-range"),
        pytest.param("* * * * 13 *", "Bad month", id="month-out-of-range"),
        pytest.param("*/0 * * * * *", "a step of 0", id="zero-step"),
        pytest.param("a b c d e f", "invalid", id="garbage"),
        pytest.param("run it every ten seconds", "invalid", id="words"),
    ],
)
def test_bad_cron_expressions_name_the_expression_and_reason(expression: str, reason: str) -> None:
    makers: list[Callable[[], object]] = [
        lambda: CronTrigger(expression),
        lambda: make_trigger(cron=expression),
    ]
    for make in makers:
        with pytest.raises(ConfigError) as raised:
            make()
        assert raised.value.field == "cron"
        assert repr(expression) in str(raised.value)
        assert reason in str(raised.value)


@pytest.mark.parametrize("expression", [5, None, b"* * * * *", ["*"] * 6], ids=repr)
def test_non_string_cron_expression_through_make_trigger(expression: Any) -> None:
    if expression is None:  # make_trigger(cron=None) means "no cron": then `every` is missing
        with pytest.raises(ConfigError, match="exactly one"):
            make_trigger(cron=expression)
        return
    with pytest.raises(ConfigError, match="must be a string") as raised:
        make_trigger(cron=expression)
    assert raised.value.field == "cron"


def test_non_string_cron_expression_to_the_public_class() -> None:
    with pytest.raises(ConfigError):
        CronTrigger(5)  # type: ignore[arg-type]


# -- intervals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "first_now", "second_now", "tick"),
    [
        (10, at(10, 0, 0, 1), at(10, 0, 9, 999_999), at(10, 0, 10)),
        (10, at(10, 0, 3), at(10, 0, 7), at(10, 0, 10)),
        (60, at(10, 0, 1), at(10, 0, 59), at(10, 1, 0)),
        (3600, at(10, 0, 1), at(10, 59, 0), at(11, 0, 0)),
        (7, at(10, 0, 1, 1), at(10, 0, 7, 999_999), at(10, 0, 8)),  # 10:00:01 is on the 7 s grid
    ],
)
def test_interval_grid_is_anchored_at_the_epoch(
    seconds: float, first_now: dt.datetime, second_now: dt.datetime, tick: dt.datetime
) -> None:
    # Two replicas (or a leader and its successor) asking at different moments agree on the tick.
    trigger = IntervalTrigger(seconds)
    assert trigger.next_after(first_now) == trigger.next_after(second_now) == tick
    assert tick.timestamp() % seconds == 0


def test_interval_tick_on_the_grid_is_the_next_one() -> None:
    trigger = IntervalTrigger(10)
    assert trigger.next_after(at(10, 0, 10)) == at(10, 0, 20)


def test_interval_offset_shifts_the_grid() -> None:
    trigger = IntervalTrigger(10, offset=3)
    assert trigger.next_after(at(10, 0, 0)) == at(10, 0, 3)
    assert trigger.next_after(at(10, 0, 3)) == at(10, 0, 13)


@pytest.mark.parametrize("seconds", [1, 2.5, 10, 3600])
def test_interval_ticks_always_advance(seconds: float) -> None:
    trigger = IntervalTrigger(seconds)
    moment = at(0, 0, 0)
    for _ in range(2000):
        tick = trigger.next_after(moment)
        assert tick > moment
        moment = tick


@pytest.mark.parametrize("seconds", [0.1, 1.1])
def test_fractional_interval_ticks_always_advance(seconds: float) -> None:
    trigger = IntervalTrigger(seconds)
    moment = at(0, 0, 0)
    for _ in range(2000):
        tick = trigger.next_after(moment)
        assert tick > moment
        moment = tick


@pytest.mark.parametrize("every", [10, 10.0, dt.timedelta(seconds=10)], ids=repr)
def test_make_trigger_every(every: float | dt.timedelta) -> None:
    trigger = make_trigger(every=every)
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.next_after(at(10, 0, 1)) == at(10, 0, 10)
    assert trigger.describe() == "every 10s"


def test_make_trigger_cron() -> None:
    trigger = make_trigger(cron="*/10 * * * * *")
    assert isinstance(trigger, CronTrigger)
    assert trigger.describe() == "cron '*/10 * * * * *'"


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"cron": "* * * * *", "every": 10}, {"cron": None, "every": None}],
    ids=["neither", "both", "both-none"],
)
def test_make_trigger_needs_exactly_one_of_cron_or_every(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="exactly one of cron") as raised:
        make_trigger(**kwargs)
    assert raised.value.field == "trigger"


@pytest.mark.parametrize("every", [0, -1, -0.5, True, "10", dt.timedelta(0)], ids=repr)
def test_bad_intervals(every: Any) -> None:
    with pytest.raises(ConfigError, match="positive number of seconds") as raised:
        make_trigger(every=every)
    assert raised.value.field == "every"


# -- issue 10 ---------------------------------------------------------------------------


@pytest.mark.parametrize("every", [float("inf"), float("nan"), -float("inf"), 1e300], ids=repr)
def test_intervals_must_be_finite_and_representable(every: float) -> None:
    with pytest.raises(ConfigError) as raised:
        make_trigger(every=every)
    assert raised.value.field == "every"
    assert "finite" in str(raised.value)


@pytest.mark.parametrize(
    ("macro", "moment", "first"),
    [
        ("@hourly", at(10, 0, 1), at(11, 0, 0)),
        ("@daily", at(10, 0, 0), at(0, 0, 0, day=2)),
        ("@midnight", at(10, 0, 0), at(0, 0, 0, day=2)),
        ("@weekly", at(10, 0, 0), at(0, 0, 0, day=4)),  # 2026-01-04 is a Sunday
        ("@monthly", at(10, 0, 0), dt.datetime(2026, 2, 1, tzinfo=UTC)),
        ("@yearly", at(10, 0, 0), dt.datetime(2027, 1, 1, tzinfo=UTC)),
        ("@annually", at(10, 0, 0), dt.datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_cron_macros(macro: str, moment: dt.datetime, first: dt.datetime) -> None:
    trigger = CronTrigger(macro)
    assert trigger.next_after(moment) == first
    assert trigger.describe() == f"cron {macro!r}"


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("@reboot", "'@reboot' is not supported"),
        ("@every_minute", "unknown macro '@every_minute'"),
        ("*/0 * * * * *", "a step of 0"),
        ("0 */0 * * * *", "a step of 0"),
    ],
)
def test_cron_messages_say_what_is_wrong(expression: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        CronTrigger(expression)
    assert words in str(raised.value)
    assert "Bad second" not in str(raised.value) and "fields" not in str(raised.value)

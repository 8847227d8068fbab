"""Schedules: the time rules on daylight-saving days, intervals, bounds, and validation."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from nbflow.core.errors import JobsError, ParameterError
from nbflow.jobs.schedules import (
    TIME_RULES,
    Schedule,
    ScheduleError,
    iter_ticks,
    parse_every,
    parse_when,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks"

# Spring-forward and fall-back days of 2024.
BERLIN_SPRING, BERLIN_FALL = date(2024, 3, 31), date(2024, 10, 27)
NY_SPRING, NY_FALL = date(2024, 3, 10), date(2024, 11, 3)


def job(cron: str | None = None, every: str | None = None, tz: str = "UTC", **kw) -> Schedule:
    return Schedule(
        "j", "nb.ipynb", cron=cron, every=parse_every(every) if every else None, tz=tz, **kw
    )


def local_day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    """(just before local midnight starting `day`, just before the next local midnight), UTC."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    tiny = timedelta(microseconds=1)
    return start - tiny, end - tiny


def ticks_on(schedule: Schedule, day: date) -> list[datetime]:
    return schedule.ticks_between(*local_day_bounds(day, schedule.tz))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- fixed-time jobs ---------------------------------------------------------------------

FIXED_CASES = [
    # (zone, cron, day, expected UTC ticks that day, what it shows)
    ("Europe/Berlin", "30 2 * * *", BERLIN_SPRING, [utc(2024, 3, 31, 1, 0)], "gap: 03:00 CEST"),
    ("America/New_York", "30 2 * * *", NY_SPRING, [utc(2024, 3, 10, 7, 0)], "gap: 03:00 EDT"),
    ("Europe/Berlin", "30 2 * * *", BERLIN_FALL, [utc(2024, 10, 27, 0, 30)], "twice: first (CEST)"),
    ("America/New_York", "30 1 * * *", NY_FALL, [utc(2024, 11, 3, 5, 30)], "twice: first (EDT)"),
    (
        "America/New_York",
        "30 2 * * *",
        NY_FALL,
        [utc(2024, 11, 3, 7, 30)],
        "02:30 EST happens once",
    ),
    ("Europe/Berlin", "30 2 * * *", date(2024, 3, 30), [utc(2024, 3, 30, 1, 30)], "ordinary day"),
    ("Europe/Berlin", "30 2 * * *", date(2024, 4, 1), [utc(2024, 4, 1, 0, 30)], "day after"),
    # Two fixed times that both fall in the gap still run once.
    ("Europe/Berlin", "0,30 2 * * *", BERLIN_SPRING, [utc(2024, 3, 31, 1, 0)], "gap dedup"),
]


@pytest.mark.parametrize(("tz", "cron", "day", "expected", "why"), FIXED_CASES)
def test_fixed_time_job_runs_once_by_the_time_rules(tz, cron, day, expected, why):
    schedule = job(cron, tz=tz)
    assert not schedule.frequent
    assert ticks_on(schedule, day) == expected, why


def test_fixed_time_job_in_a_gap_runs_at_the_first_instant_after_the_gap():
    (tick,) = ticks_on(job("30 2 * * *", tz="Europe/Berlin"), BERLIN_SPRING)
    local = tick.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.utcoffset()) == (3, 0, timedelta(hours=2))
    # one instant earlier is still in winter time: the gap ends exactly there
    assert (tick - timedelta(seconds=1)).astimezone(ZoneInfo("Europe/Berlin")).hour == 1


# --- frequent jobs -----------------------------------------------------------------------

FREQUENT_CASES = [
    (tz, spec, day, period)
    for tz, days in (
        ("Europe/Berlin", (BERLIN_SPRING, BERLIN_FALL)),
        ("America/New_York", (NY_SPRING, NY_FALL)),
    )
    for day in days
    for spec, period in (
        (("cron", "0 * * * *"), timedelta(hours=1)),
        (("cron", "*/15 * * * *"), timedelta(minutes=15)),
        (("every", "30m"), timedelta(minutes=30)),
    )
]


@pytest.mark.parametrize(("tz", "spec", "day", "period"), FREQUENT_CASES)
def test_frequent_job_runs_at_every_real_occurrence(tz, spec, day, period):
    kind, value = spec
    schedule = job(**{kind: value}, tz=tz)
    assert schedule.frequent
    ticks = ticks_on(schedule, day)
    start, end = local_day_bounds(day, tz)
    real_length = end - start  # 23 h on spring-forward days, 25 h on fall-back days
    assert real_length != timedelta(hours=24)
    # No gap, no duplicate: consecutive real instants, one period apart, covering the day.
    assert len(ticks) == real_length / period
    assert len(set(ticks)) == len(ticks)
    assert all(b - a == period for a, b in itertools.pairwise(ticks))
    # and the day joins its neighbours without a hole
    before = schedule.ticks_between(start - period, start)
    assert ticks[0] - before[-1] == period


def test_hourly_job_on_fall_back_day_runs_the_repeated_hour_twice():
    ticks = ticks_on(job("0 * * * *", tz="Europe/Berlin"), BERLIN_FALL)
    zone = ZoneInfo("Europe/Berlin")
    two_am = [t for t in ticks if t.astimezone(zone).hour == 2]
    assert two_am == [utc(2024, 10, 27, 0), utc(2024, 10, 27, 1)]
    assert [t.astimezone(zone).utcoffset() for t in two_am] == [
        timedelta(hours=2),
        timedelta(hours=1),
    ]


def test_hourly_job_on_spring_forward_day_skips_only_the_missing_wall_hour():
    zone = ZoneInfo("America/New_York")
    hours = [t.astimezone(zone).hour for t in ticks_on(job("0 * * * *", tz=zone.key), NY_SPRING)]
    assert hours == [h for h in range(24) if h != 2]


def test_a_range_or_step_in_the_hour_field_makes_a_job_frequent():
    assert job("0 */2 * * *").frequent
    assert job("0 8-18/2 * * *").frequent
    assert job("0 1-5 * * *").frequent
    assert job("* 1-6 * * *").frequent
    assert job("0 0,8-18 * * *").frequent  # a range inside a list
    assert not job("0 2,14 * * *").frequent
    assert not job("0 1,2,3 * * *").frequent  # single hours, even when consecutive
    assert not job("* 3 * * *").frequent  # the minute field does not decide
    assert job(every="59m").frequent
    assert not job(every="1h").frequent


RIGA_SPRING, RIGA_FALL = date(2021, 3, 28), date(2021, 10, 31)  # 03:00 -> 04:00, 04:00 -> 03:00


def real_instants_with_local_hour(day: date, tz: str, hours: range, step: timedelta):
    """Every real instant of local `day`, one `step` apart from local midnight, whose wall
    hour is in `hours`: the oracle for a frequent cron, computed without cron or the rules."""
    start, end = local_day_bounds(day, tz)
    zone, moment = ZoneInfo(tz), start + timedelta(microseconds=1)
    found = []
    while moment <= end:
        if moment.astimezone(zone).hour in hours:
            found.append(moment)
        moment += step
    return found


@pytest.mark.parametrize(
    ("tz", "cron", "day", "hours", "step", "count"),
    [
        # the case: the repeated 03:00-03:59 runs twice, every minute of it
        ("Europe/Riga", "* 1-6 * * *", RIGA_FALL, range(1, 7), timedelta(minutes=1), 420),
        # spring forward: 03:00-03:59 does not exist; the other five real hours all run
        ("Europe/Riga", "* 1-6 * * *", RIGA_SPRING, range(1, 7), timedelta(minutes=1), 300),
        ("Europe/Berlin", "0 1-3 * * *", BERLIN_FALL, range(1, 4), timedelta(hours=1), 4),
        ("Europe/Berlin", "0 1-3 * * *", BERLIN_SPRING, range(1, 4), timedelta(hours=1), 2),
        ("America/New_York", "*/30 0-3 * * *", NY_FALL, range(4), timedelta(minutes=30), 10),
        ("America/New_York", "*/30 0-3 * * *", NY_SPRING, range(4), timedelta(minutes=30), 6),
    ],
)
def test_an_hour_range_runs_at_every_real_occurrence_on_dst_days(tz, cron, day, hours, step, count):
    ticks = ticks_on(job(cron, tz=tz), day)
    assert len(ticks) == count
    assert ticks == real_instants_with_local_hour(day, tz, hours, step)


def test_a_list_of_single_hours_keeps_the_fixed_time_rules():
    zone = ZoneInfo("Europe/Riga")
    fall = ticks_on(job("0 1,2,3 * * *", tz=zone.key), RIGA_FALL)
    # 03:00 happens twice that night; as a fixed time it runs once, in summer time
    assert [(t.astimezone(zone).hour, t.astimezone(zone).tzname()) for t in fall] == [
        (1, "EEST"),
        (2, "EEST"),
        (3, "EEST"),
    ]
    spring = ticks_on(job("0 1,2,3 * * *", tz=zone.key), RIGA_SPRING)
    # 03:00 does not exist that night; it runs at the end of the gap, 04:00 EEST
    assert [t.astimezone(zone).strftime("%H:%M %Z") for t in spring] == [
        "01:00 EET",
        "02:00 EET",
        "04:00 EEST",
    ]


# --- intervals, bounds, navigation ----------------------------------------------------------


def test_interval_is_a_fixed_utc_duration_anchored_at_start():
    schedule = job(every="45m", start=utc(2024, 1, 1, 0, 10))
    ticks = schedule.next_ticks(utc(2023, 12, 1), 3)
    assert ticks == [utc(2024, 1, 1, 0, 10), utc(2024, 1, 1, 0, 55), utc(2024, 1, 1, 1, 40)]
    # without --start it is anchored at the epoch: 15m ticks fall on quarter hours
    assert job(every="15m").next_ticks(utc(2024, 1, 1, 0, 7), 2) == [
        utc(2024, 1, 1, 0, 15),
        utc(2024, 1, 1, 0, 30),
    ]


def test_start_is_inclusive_and_end_stops_the_schedule():
    schedule = job("0 2 * * *", start=utc(2024, 1, 2, 2), end=utc(2024, 1, 4, 2))
    assert schedule.next_ticks(utc(2024, 1, 1), 10) == [
        utc(2024, 1, 2, 2),
        utc(2024, 1, 3, 2),
        utc(2024, 1, 4, 2),
    ]
    assert schedule.next_ticks(utc(2024, 1, 4, 2), 1) == []


def test_next_ticks_cross_a_dst_change_in_utc_order():
    schedule = job("30 2 * * *", tz="Europe/Berlin")
    assert schedule.next_ticks(utc(2024, 3, 29, 12), 4) == [
        utc(2024, 3, 30, 1, 30),  # 02:30 CET
        utc(2024, 3, 31, 1, 0),  # gap: 03:00 CEST
        utc(2024, 4, 1, 0, 30),  # 02:30 CEST
        utc(2024, 4, 2, 0, 30),
    ]


def test_rare_cron_is_found_years_ahead():
    leap_day = job("0 0 29 2 *")
    assert leap_day.next_ticks(utc(2024, 3, 1), 1) == [utc(2028, 2, 29)]


def test_previous_tick_and_period_give_the_data_interval():
    schedule = job("30 2 * * *", tz="Europe/Berlin")
    gap_tick = utc(2024, 3, 31, 1, 0)
    assert schedule.previous_tick(gap_tick) == utc(2024, 3, 30, 1, 30)
    assert schedule.period_before(gap_tick) == timedelta(hours=23, minutes=30)
    assert job(every="15m").period_before(utc(2024, 1, 1)) == timedelta(minutes=15)


def test_parse_when_reads_dates_in_the_job_zone():
    assert parse_when("2024-03-31", "Europe/Berlin") == utc(2024, 3, 30, 23)
    # a bare end date runs through the end of that day in the zone
    end = parse_when("2024-03-31", "Europe/Berlin", end_of_day=True)
    assert end == utc(2024, 3, 31, 22) - timedelta(microseconds=1)
    assert parse_when("2024-03-31T02:30", "Europe/Berlin") == utc(2024, 3, 31, 1)  # in the gap
    assert parse_when("2024-03-31T02:30+00:00", "Europe/Berlin") == utc(2024, 3, 31, 2, 30)


def test_parse_every_units_and_errors():
    assert [parse_every(t) for t in ("30s", "15m", "2h", "1d", "1w")] == [
        30,
        900,
        7200,
        86400,
        604800,
    ]
    with pytest.raises(ScheduleError, match="15m"):
        parse_every("15 minutes please")


def test_round_trip_through_dict():
    schedule = job(
        "30 2 * * *",
        tz="Europe/Berlin",
        parameters={"day": "{{ ds }}"},
        start=utc(2024, 1, 1),
        on_failure=("https://example.invalid/hook",),
    )
    assert Schedule.from_dict(schedule.to_dict()) == schedule


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "not a valid cron expression"),
        ({"cron": "0 0 2 * * *"}, "nbflow takes five"),
        ({"cron": "0 2 * *"}, "nbflow takes five"),
        ({"cron": "0 0 31 2 *"}, "never matches a real date"),
        ({"cron": "0 2 * * *", "tz": "Europe/Berln"}, "did you mean `Europe/Berlin`"),
        ({"cron": "0 2 * * *", "every": 60.0}, "not both"),
        ({}, "say when it runs"),
        ({"cron": "0 2 * * *", "max_active": 0}, "--max-active must be at least 1"),
        ({"cron": "0 2 * * *", "start": utc(2024, 2, 1), "end": utc(2024, 1, 1)}, "before --start"),
    ],
)
def test_invalid_schedules_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule("j", "nb.ipynb", **kwargs)


def test_cron_aliases_become_five_fields():
    assert job("@daily").cron == "0 0 * * *"
    assert job("@hourly").frequent and not job("@weekly").frequent


def test_bad_job_name_is_refused():
    with pytest.raises(ScheduleError, match="names a folder"):
        Schedule("../etl", "nb.ipynb", cron="0 2 * * *")


def test_check_notebook_names_missing_notebook_and_unknown_parameter(tmp_path):
    nb = tmp_path / "typed_parameters.ipynb"
    nb.write_bytes((FIXTURES / "typed_parameters.ipynb").read_bytes())
    missing = Schedule("j", str(tmp_path / "typed_parameter.ipynb"), cron="0 2 * * *")
    with pytest.raises(ScheduleError, match="did you mean `typed_parameters.ipynb`"):
        missing.check_notebook()
    unknown = Schedule("j", str(nb), cron="0 2 * * *", parameters={"rowz": "3"})
    with pytest.raises(ParameterError, match="did you mean `rows`"):
        unknown.check_notebook()
    # A templated value is rendered once against the next tick; its type is then checked.
    Schedule("j", str(nb), cron="0 2 * * *", parameters={"day": "{{ ds }}"}).check_notebook()
    with pytest.raises(JobsError, match="did you mean `ds`"):
        Schedule("j", str(nb), cron="0 2 * * *", parameters={"day": "{{ dss }}"}).check_notebook()


def test_iter_ticks_is_lazy_and_stops_at_end():
    ticks = iter_ticks(job("0 0 * * *", end=utc(2024, 1, 3)), utc(2023, 12, 30, 12))
    assert list(ticks) == [utc(2023, 12, 31), utc(2024, 1, 1), utc(2024, 1, 2), utc(2024, 1, 3)]
    endless = iter_ticks(job("* * * * *"), utc(2024, 1, 1))
    assert [next(endless) for _ in range(200)][-1] == utc(2024, 1, 1, 3, 20)


def test_the_scheduling_page_states_the_time_rules_verbatim():
    page = (Path(__file__).resolve().parents[2] / "docs" / "scheduling.md").read_text()
    assert TIME_RULES in page


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York"])
def test_a_whole_year_hourly_runs_every_utc_hour_exactly_once(tz):
    hourly = job("0 * * * *", tz=tz).ticks_between(utc(2024, 1, 1), utc(2025, 1, 1))
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hourly))
    assert len(hourly) == 366 * 24


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
def test_a_whole_year_daily_runs_once_per_local_day(tz):
    # Lord Howe shifts by 30 minutes: the rules do not assume whole-hour changes.
    for cron in ("30 2 * * *", "0 2 * * *", "45 1 * * *"):
        daily = job(cron, tz=tz).ticks_between(utc(2024, 1, 1), utc(2025, 1, 1))
        days = [t.astimezone(ZoneInfo(tz)).date() for t in daily]
        assert days == sorted(set(days)) and len(days) in (365, 366), cron


@pytest.mark.parametrize(
    ("tz", "day"), [("Europe/Berlin", BERLIN_FALL), ("America/New_York", NY_SPRING)]
)
def test_any_sub_range_agrees_with_the_whole(tz, day):
    schedule = job("*/15 * * * *", tz=tz)
    start = datetime.combine(day, time(), ZoneInfo(tz)).astimezone(UTC) - timedelta(hours=6)
    whole = schedule.ticks_between(start, start + timedelta(hours=36))
    for offset_min in range(0, 34 * 60, 37):
        a = start + timedelta(minutes=offset_min)
        b = a + timedelta(minutes=95)
        assert schedule.ticks_between(a, b) == [t for t in whole if a < t <= b]
    assert schedule.next_ticks(start, 3) == whole[:3]
    assert schedule.previous_tick(whole[50]) == whole[49]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"every": 0.5}, "at least 1 s"),
        ({"every": 1e15}, "at most 100 years"),
        ({"every": float("nan")}, "outside the allowed range"),
        ({"every": 60.0, "timeout": float("inf")}, "--timeout inf is not a usable number"),
        ({"every": 60.0, "retry_delay": float("nan")}, "--retry-delay nan is not a usable"),
        ({"every": 60.0, "on_failure": ("",)}, "is empty"),
        ({"every": 60.0, "parameters": {"x": "\udcff"}}, "not valid Unicode text"),
    ],
)
def test_the_api_refuses_the_values_the_cli_refuses(spec, message):
    """Issue 22 items 13-14: a Schedule made in Python (or read back) is held to the same
    bounds as `schedule add`."""
    with pytest.raises(ScheduleError, match=re.escape(message)):
        Schedule(name="j", notebook="nb.ipynb", **spec)

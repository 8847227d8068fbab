"""Schedules: what a job is, when its ticks fall, and the time rules around daylight saving.

Responsibilities:
- `Schedule`, the definition of one job (notebook, cron or interval, zone,
  parameters, bounds, retries, alerts, file sensor), validated when it is
  made: a bad cron, an unknown zone, a missing notebook or an unknown notebook
  parameter is a `ScheduleError` (nothing is stored).
- Ticks: `next_ticks`, `ticks_between`, `previous_tick`, computed in UTC by
  the rules in `TIME_RULES` (the same text `nbflow schedule show` prints and
  docs/scheduling.md quotes).

How ticks are computed: croniter walks the cron expression in the job's
*local wall-clock time* (naive datetimes, so it never applies DST itself);
each wall time is then mapped to UTC with zoneinfo and PEP 495's `fold`:
a wall time that exists once maps to its instant; one inside a spring-forward
gap maps to the end of the gap (fixed-time jobs) or is dropped (frequent
jobs, whose other times cover every real hour); one that happens twice maps
to its first instant (fixed-time jobs) or to both (frequent jobs). The wall-time
window walked is widened by the zone's offset changes near its ends, and the
instants are sorted and de-duplicated, so the result is in UTC order even
where folds interleave. Intervals (`--every`) are plain UTC durations anchored at `start`
(or at the Unix epoch, so `--every 15m` ticks on the quarter hour) and never
see DST.

A job is *frequent* when its cron hour field is `*`, a range or has a step
(`*/2`, `1-6`, `8-18/2`, also as one item of a list: `0,8-18`), or when its
interval is under an hour; otherwise *fixed-time*. The hour field decides
because it is the one a DST change moves: a range names a span of the day
("every minute from 01:00 to 06:59"), so its repeated hour must run twice and
no real hour may be left without runs, as for `*`; only single hours (and lists
of them) name moments of the day, which run once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

from nbflow.core.errors import JobsError, did_you_mean
from nbflow.jobs.errors import ScheduleError

__all__ = [
    "CRON_ALIASES",
    "TIME_RULES",
    "Schedule",
    "ScheduleError",
    "check_seconds",
    "check_text",
    "iter_ticks",
    "parse_every",
    "parse_when",
    "rules_summary",
]

TIME_RULES = """\
Time rules
- Times are stored in UTC together with the job's IANA zone name; cron
  expressions are read in the job's local wall-clock time.
- Fixed-time jobs (a cron whose hour field is one hour or a list of single hours,
  e.g. 30 2 * * * or 0 6,18 * * *):
  * a local time that does not exist on a spring-forward day (02:30 in
    Europe/Berlin on the last Sunday of March) runs once, at the first instant
    after the gap (03:00 local);
  * a local time that happens twice on a fall-back day runs once, at its first
    occurrence (the summer-time one).
- Frequent jobs (a cron whose hour field is *, a range or has a step, e.g.
  0 * * * *, */15 * * * *, * 1-6 * * * or 0 8-18/2 * * *, and intervals under
  an hour) run at every real occurrence: on a fall-back day the repeated hour
  runs twice (once per real UTC hour), on a spring-forward day the wall times
  that do not exist are skipped, and no real hour is left without its run.
- Intervals (--every 30m) are fixed durations in UTC, anchored at --start (or at
  1970-01-01T00:00Z), and ignore daylight saving.
- The logical date of a scheduled run is its tick; {{ ds }} is that tick's date
  in the job's zone.
- No run is made for a tick before --start, after --end, or before the job was
  added or last resumed."""

_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|w|week)s?\s*$", re.I)
CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MIN_EVERY = 1.0
"""The shortest interval: a tick is a database row and a scheduler pass, not a busy loop."""
MAX_SECONDS = 100 * 365.25 * 86400
"""The longest interval, timeout or retry delay (100 years): beyond it datetime arithmetic
overflows, and no job means it."""
MAX_NAME = 100
"""The longest job name: it names a folder and starts every output notebook's file name
(`NAME-<stamp>-<id>.attempt-N.ipynb`), which must fit the file system's 255 bytes."""


def check_seconds(label: str, value: float, *, low: float = 0.0, low_open: bool = False) -> None:
    """`value` is a finite number of seconds in [low, MAX_SECONDS] (or (low, ...] when
    `low_open`); otherwise a `ScheduleError` naming `label`, the value and the limits.
    NaN compares false with everything, so every bound is checked as a positive test."""
    above = value > low if low_open else value >= low
    if not (isinstance(value, int | float) and math.isfinite(value) and above):
        bound = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise ScheduleError(
            f"{label} {value!r} is not a usable number of seconds; give a finite number, "
            f"{bound} and at most {MAX_SECONDS:g} (100 years)",
            field=label.lstrip("-"),
        )
    if value > MAX_SECONDS:
        raise ScheduleError(
            f"{label} {value:g} s is longer than the limit of {MAX_SECONDS:g} s (100 years)",
            field=label.lstrip("-"),
        )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far we look for the next tick before giving up (a cron like "0 0 29 2 *"
# ticks once in four years, "0 0 31 2 *" never).
_LOOKAHEAD = timedelta(days=366 * 9)


def parse_every(text: str) -> float:
    """`15m`, `30s`, `2h`, `1d`, `1w` -> seconds (a positive number)."""
    match = _EVERY.match(text)
    if not match:
        raise ScheduleError(
            f"--every {text!r} is not an interval; write a number and a unit: "
            "30s, 15m, 2h, 1d or 1w",
            field="every",
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]
    _check_every(seconds, text)
    return seconds


def _check_every(seconds: float, text: str | None = None) -> None:
    shown = repr(text) if text is not None else f"{seconds:g}s"
    if not (math.isfinite(seconds) and MIN_EVERY <= seconds <= MAX_SECONDS):
        raise ScheduleError(
            f"--every {shown} is outside the allowed range: at least {MIN_EVERY:g} s and "
            f"at most 100 years",
            field="every",
        )


def check_text(what: str, text: str) -> None:
    """Refuse text that cannot be written as UTF-8: a lone surrogate (what Python makes of
    bytes in argv that are not UTF-8) would fail later, writing the notebook."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ScheduleError(
            f"{what}: {text!r} has a character that is not valid Unicode text at position "
            f"{exc.start} (a lone surrogate, e.g. from bytes that are not UTF-8); give UTF-8 text",
            field="parameters",
        ) from None


def format_every(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_when(text: str, tz: str, *, end_of_day: bool = False) -> datetime:
    """A `--start`/`--end` value in zone `tz` -> aware UTC datetime.

    A bare date means its first instant (or, with `end_of_day`, its last: the
    instant before the next day begins) in the job's zone; a datetime without
    an offset is local wall time in the zone; one with an offset is taken as is.
    """
    zone = _zone(tz)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = date.fromisoformat(text.strip())
            if end_of_day:
                nxt = _local_to_utc(datetime.combine(day + timedelta(days=1), time()), zone)
                return nxt - timedelta(microseconds=1)
            return _local_to_utc(datetime.combine(day, time()), zone)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(
            f"{text!r} is not a date or time; write 2024-03-31 or 2024-03-31T02:30",
            field="start/end",
        ) from None
    if moment.tzinfo is None:
        return _local_to_utc(moment, zone)
    return moment.astimezone(UTC)


def _zone(tz: str) -> ZoneInfo:
    try:
        if not tz or tz != tz.strip():
            raise ValueError(tz)
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        hint = did_you_mean(tz, available_timezones()) or (
            "; use an IANA name such as Europe/Berlin, America/New_York or UTC"
        )
        raise ScheduleError(f"unknown time zone `{tz}`{hint}", field="tz") from None


def _check_cron(expr: str) -> None:
    if not croniter.is_valid(expr):
        fields_ = expr.split()
        why = (
            f"it has {len(fields_)} fields; nbflow takes five: minute hour day-of-month "
            "month day-of-week"
            if len(fields_) != 5
            else "a field is out of range or misspelt"
        )
        raise ScheduleError(
            f"--cron {expr!r} is not a valid cron expression ({why}); "
            'for example "30 2 * * *" is 02:30 every day, "*/15 * * * *" every 15 minutes',
            field="cron",
        )
    if len(expr.split()) != 5:
        raise ScheduleError(
            f"--cron {expr!r} has {len(expr.split())} fields; nbflow takes five "
            "(minute hour day-of-month month day-of-week), without seconds",
            field="cron",
        )
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError(
            f"--cron {expr!r} never matches a real date (e.g. 31 February); fix the "
            "day-of-month or month field",
            field="cron",
        ) from None


def _local_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """One wall time (naive) -> its first UTC instant; a time in a gap -> the gap's end."""
    return _wall_instants(wall, zone, fixed_time=True)[0]


def _wall_instants(wall: datetime, zone: ZoneInfo, *, fixed_time: bool) -> list[datetime]:
    """The UTC instants at which wall time `wall` happens in `zone`, by the time rules."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) != wall:
        # In a spring-forward gap: zoneinfo gives fold=0 the offset before the
        # transition (an instant after it) and fold=1 the offset after it.
        return (
            [_transition_between(min(first, second), max(first, second), zone)]
            if fixed_time
            else []
        )
    if first == second or fixed_time:
        return [first]
    return [first, second]  # happens twice (fall-back): both are real


def _wall_window(after: datetime, until: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The wall-time range to walk so that every instant in (after, until] is reached.

    An instant u has wall time u + offset(u). Offsets near the ends of the range
    can differ from the ends' own (a DST change within a day), so the lowest
    offset of `after` and a day later opens the window, and the highest of
    `until` and a day earlier closes it; a minute's slack covers rounding.
    """
    day, slack = timedelta(days=1), timedelta(minutes=1)

    def offset(moment: datetime) -> timedelta:
        return moment.astimezone(zone).utcoffset() or timedelta(0)

    lo = after + min(offset(after), offset(after + day)) - slack
    hi = until + max(offset(until), offset(until - day)) + slack
    return lo.replace(tzinfo=None), hi.replace(tzinfo=None)


def _transition_between(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (lo, hi] whose UTC offset is `hi`'s: where the gap ends."""
    target = hi.astimezone(zone).utcoffset()
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == target:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


@dataclass(frozen=True)
class Schedule:
    """One job's definition. Times are aware UTC datetimes; `parameters` holds the
    values as given on the command line (text, possibly Jinja2 templates), parsed
    against the notebook's declared types when a run is made."""

    name: str
    notebook: str
    cron: str | None = None
    every: float | None = None
    """Interval in seconds (`--every 15m` is 900)."""
    tz: str = "UTC"
    parameters: dict[str, str] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    catchup: bool = False
    max_active: int = 1
    retries: int = 0
    retry_delay: float = 60.0
    timeout: float | None = None
    on_failure: tuple[str, ...] = ()
    on_success: tuple[str, ...] = ()
    on_retry: tuple[str, ...] = ()
    when_file: str | None = None
    paused: bool = False
    executor: str | None = None
    """Where runs execute: `local` (the scheduler's host), `dask` (a worker of the Dask
    scheduler at `address`), or None: as the scheduler that starts the run says."""
    address: str | None = None

    def __post_init__(self) -> None:
        if self.cron is not None and self.cron.strip().lower() in CRON_ALIASES:
            object.__setattr__(self, "cron", CRON_ALIASES[self.cron.strip().lower()])
        self.validate()

    # -- validation

    def validate(self) -> None:
        """Check everything that needs no file system (see `check_notebook` for the rest)."""
        where = f"job `{self.name}`: "
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name or ""):
            raise ScheduleError(
                f"job name {self.name!r} is not usable; use letters, digits, `_`, `-` and `.` "
                "(it names a folder under runs/)",
                job=self.name,
                field="name",
            )
        if len(self.name) > MAX_NAME:
            raise ScheduleError(
                f"job name {self.name[:20]!r}… is {len(self.name)} characters long; the limit "
                f"is {MAX_NAME} (it names a folder and its output notebooks' files)",
                job=self.name,
                field="name",
            )
        if self.cron is not None and self.every is not None:
            raise ScheduleError(
                where + "give either --cron or --every, not both", job=self.name, field="cron"
            )
        if self.cron is None and self.every is None and self.when_file is None:
            raise ScheduleError(
                where + 'say when it runs: --cron "30 2 * * *", --every 15m, or --when-file GLOB',
                job=self.name,
                field="cron",
            )
        if self.cron is not None:
            _check_cron(self.cron)
        if self.every is not None:
            _check_every(self.every)
        _zone(self.tz)
        for label, value in (("start", self.start), ("end", self.end)):
            if value is not None and (value.tzinfo is None or value.utcoffset() != timedelta(0)):
                raise ScheduleError(
                    where + f"{label} must be an aware UTC datetime", job=self.name, field=label
                )
        if self.start and self.end and self.end < self.start:
            raise ScheduleError(
                where + f"--end {self.end.isoformat()} is before --start {self.start.isoformat()}",
                job=self.name,
                field="end",
            )
        for label, number, low in (
            ("max-active", self.max_active, 1),
            ("retries", self.retries, 0),
        ):
            if number < low:
                raise ScheduleError(
                    where + f"--{label} must be at least {low} (got {number})",
                    job=self.name,
                    field=label,
                )
        if self.executor is not None or self.address is not None:
            from nbflow.jobs.dask_runs import check_executor

            try:
                check_executor(self.executor, self.address)
            except JobsError as exc:
                raise ScheduleError(where + str(exc), job=self.name, field="executor") from None
        check_seconds("--retry-delay", self.retry_delay)
        if self.timeout is not None:
            check_seconds("--timeout", self.timeout, low_open=True)
        from nbflow.jobs.alerts import check_target  # alerts imports this module

        for targets in (self.on_failure, self.on_success, self.on_retry):
            for target in targets:
                check_target(target)
        for key, text in self.parameters.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ScheduleError(
                    where + f"parameter name {key!r} is not a Python identifier",
                    job=self.name,
                    field="parameters",
                )
            if not isinstance(text, str):
                raise ScheduleError(
                    where + f"parameter `{key}` must be given as text (as on the command line)",
                    job=self.name,
                    field="parameters",
                )
            check_text(f"parameter `{key}`", text)

    def check_notebook(self, *, now: datetime | None = None) -> None:
        """Check the notebook exists, declares every parameter, and that each value fits its
        type (templates are rendered once against the next tick and then checked)."""
        from nbflow.jobs.parameters import check_parameters, notebook_parameters
        from nbflow.jobs.run_parameters import parse_run_parameters, render_run_parameters

        path = Path(self.notebook)
        if not path.is_file():
            siblings = [p.name for p in path.parent.glob("*.ipynb")] if path.parent.is_dir() else []
            hint = did_you_mean(path.name, siblings) or "; give the path of an existing .ipynb file"
            raise ScheduleError(
                f"job `{self.name}`: notebook `{self.notebook}` does not exist{hint}",
                job=self.name,
                field="notebook",
            )
        declared = notebook_parameters(path)
        # Checked as the next run will get them: rendered against its tick, then parsed.
        moment = now or datetime.now(UTC)
        sample_tick = (self.next_ticks(moment, 1) or [moment])[0]
        values = parse_run_parameters(path, render_run_parameters(self, sample_tick))
        check_parameters(values, declared, str(self.notebook))
        if self.when_file is not None and "path" not in declared:
            raise ScheduleError(
                f"job `{self.name}`: a --when-file job passes each file to the notebook as the "
                f'parameter `path`, which `{path.name}` does not declare; add `path = ""` to '
                "its cell tagged `parameters`",
                job=self.name,
                field="when_file",
            )

    # -- kind and ticks

    @property
    def frequent(self) -> bool:
        """True for frequent jobs (see the module docstring): every real occurrence runs."""
        if self.every is not None:
            return self.every < 3600
        if self.cron is None:
            return False
        # `*`, a range (`1-6`) or a step (`*/2`, `8-18/2`) anywhere in the hour field's
        # list names a span of hours; only single hours are moments (module docstring).
        hour = self.cron.split()[1]
        return any(mark in hour for mark in "*-/")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def kind(self) -> str:
        if self.cron is None and self.every is None:
            return "file sensor"
        return "frequent" if self.frequent else "fixed-time"

    def describe_when(self) -> str:
        parts = []
        if self.cron is not None:
            parts.append(f"cron {self.cron!r} in {self.tz}")
        if self.every is not None:
            parts.append(f"every {format_every(self.every)}")
        if self.when_file is not None:
            parts.append(f"when a file matching {self.when_file!r} is new or changed")
        return ", ".join(parts)

    def _raw_ticks(self, after: datetime, until: datetime) -> list[datetime]:
        """Ticks t with after < t <= until (UTC), ignoring start/end."""
        if until <= after:
            return []
        if self.every is not None:
            anchor = self.start or EPOCH
            step = timedelta(seconds=self.every)
            # Integer arithmetic on microseconds: float division drifts after years.
            step_us = round(self.every * 1_000_000)
            since_us = (after - anchor) // timedelta(microseconds=1)
            n = since_us // step_us + 1
            tick = anchor + timedelta(microseconds=n * step_us)
            ticks = []
            while tick <= until:
                ticks.append(tick)
                tick += step
            return ticks
        if self.cron is None:
            return []
        zone = self.zone
        fixed_time = not self.frequent
        lo, hi = _wall_window(after, until, zone)
        found: set[datetime] = set()
        walker = croniter(self.cron, lo)
        while True:
            try:
                wall = walker.get_next(datetime)
            except CroniterBadDateError:
                break  # croniter found no further date: the schedule has no more ticks
            if wall > hi:
                break
            for instant in _wall_instants(wall, zone, fixed_time=fixed_time):
                if after < instant <= until:
                    found.add(instant)
        return sorted(found)

    def ticks_between(self, after: datetime, until: datetime) -> list[datetime]:
        """Ticks t with after < t <= until (aware datetimes), within start and end, in UTC order."""
        after, until = after.astimezone(UTC), until.astimezone(UTC)
        if self.start is not None:
            after = max(after, self.start - timedelta(microseconds=1))
        if self.end is not None:
            until = min(until, self.end)
        return self._raw_ticks(after, until)

    def next_ticks(self, after: datetime, count: int = 5) -> list[datetime]:
        """The next `count` ticks strictly after `after` (fewer if the schedule ends)."""
        after = after.astimezone(UTC)
        ticks: list[datetime] = []
        span = timedelta(hours=1)
        horizon = after + _LOOKAHEAD
        cursor = after
        while len(ticks) < count and cursor < horizon:
            if self.end is not None and cursor >= self.end:
                break
            upto = min(cursor + span, horizon)
            ticks.extend(self.ticks_between(cursor, upto))
            cursor = upto
            span *= 2
        return ticks[:count]

    def previous_tick(self, before: datetime) -> datetime | None:
        """The latest tick strictly before `before`, ignoring start/end (the start of the
        data interval of the tick at `before`); None if there is none within nine years."""
        before = before.astimezone(UTC)
        span = timedelta(hours=1)
        while span <= _LOOKAHEAD:
            ticks = self._raw_ticks(before - span, before - timedelta(microseconds=1))
            if ticks:
                return ticks[-1]
            span *= 2
        return None

    def period_before(self, tick: datetime) -> timedelta | None:
        """Length of the schedule period that ends at `tick` (the default catch-up grace)."""
        if self.every is not None:
            return timedelta(seconds=self.every)
        previous = self.previous_tick(tick)
        return tick - previous if previous is not None else None

    # -- storage

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as UTC ISO text); `Schedule.from_dict` reads it back."""
        out = asdict(self)
        for key in ("start", "end"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        for key in ("on_failure", "on_success", "on_retry"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("start", "end"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key]).astimezone(UTC)
        for key in ("on_failure", "on_success", "on_retry"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)

    def summary(self) -> dict[str, Any]:
        """The fields `schedule list` shows."""
        return {
            "name": self.name,
            "notebook": self.notebook,
            "when": self.describe_when(),
            "kind": self.kind,
            "tz": self.tz,
            "paused": self.paused,
        }


def iter_ticks(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Every tick after `after`, lazily, in UTC order (stops at `end`)."""
    cursor = after
    while True:
        batch = schedule.next_ticks(cursor, 64)
        if not batch:
            return
        yield from batch
        cursor = batch[-1]


# What `schedule show` prints of TIME_RULES: the two lines that apply to a job of each kind
# (the whole text with `--rules`).
RULE_SUMMARIES = {
    "fixed-time": "fixed-time: a local time skipped in spring runs at the gap's end, "
    "a repeated one once",
    "frequent": "frequent: every real occurrence runs (a repeated autumn hour twice, "
    "skipped spring times not at all)",
    "interval": "interval: a fixed duration in UTC from --start (or 1970-01-01); "
    "daylight saving does not change it",
    "utc": "cron in UTC: no daylight saving, so every wall time is one instant",
    "file sensor": "file sensor: one run per new or changed file (by content); no clock ticks",
}


def rules_summary(schedule: Schedule) -> list[str]:
    """The two lines of time rules that apply to `schedule` (see `RULE_SUMMARIES`)."""
    if schedule.every is not None:
        kind = "interval"
    elif schedule.cron is not None and schedule.tz == "UTC":
        kind = "utc"
    else:
        kind = schedule.kind
    second = (
        "files already there when the job is added count as new"
        if kind == "file sensor"
        else "no run before --start, after --end, or before the job was added/resumed"
    )
    return [RULE_SUMMARIES[kind], second]

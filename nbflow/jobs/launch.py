"""Making job runs: the one place a run row is created, for every way a run starts.

The scheduler's due ticks and file sensors (`create_job_run`), `nbflow trigger`
(`trigger_run`, parameters checked first) and `nbflow backfill`
(`plan_backfill`) all make their runs here, with the parameters rendered by
`jobs.run_parameters`. The daemon (`jobs.scheduler`) only decides when.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nbflow.core.errors import JobsError
from nbflow.jobs.parameters import check_parameters, notebook_parameters
from nbflow.jobs.run_parameters import parse_run_parameters, render_run_parameters
from nbflow.jobs.runstore import (
    ACTIVE_STATES,
    RETRYABLE_STATES,
    JobRecord,
    RunRecord,
    RunStore,
    utc_now,
)
from nbflow.jobs.schedules import check_text

__all__ = [
    "MAX_BACKFILL_TICKS",
    "REPROCESS",
    "BackfillPlan",
    "create_job_run",
    "plan_backfill",
    "trigger_run",
]


def create_job_run(
    store: RunStore,
    record: JobRecord,
    run_type: str,
    logical_date: datetime,
    *,
    overrides: dict[str, str] | None = None,
    literals: dict[str, str] | None = None,
    now: datetime | None = None,
    reason: str | None = None,
) -> tuple[RunRecord, bool]:
    """Create a queued run with the job's rendered parameters (`literals`: data such as a
    sensed file's path, never rendered). A parameter that cannot be rendered makes a run
    that is `failed` at once, with the error (never a silent skip)."""
    try:
        texts = render_run_parameters(record.schedule, logical_date, overrides, literals=literals)
        problem = None
    except Exception as exc:
        texts, problem = {}, f"parameters could not be rendered: {exc}"
    run, made = store.create_run(
        record.name, run_type, logical_date, parameters=texts, reason=reason, now=now
    )
    if made and problem:
        store.finish_run(run.id, "failed", error=problem, now=now)
        run = store.get_run(run.id)
    return run, made


def trigger_run(
    store: RunStore,
    name: str,
    overrides: dict[str, str] | None = None,
    *,
    now: datetime | None = None,
) -> RunRecord:
    """A `manual` run of job `name` now (its logical date is this instant, to the
    microsecond, so it never takes a scheduled tick's slot). Parameters are checked
    first: an unknown name or a value of the wrong type raises, nothing is stored."""
    record = store.get_job(name)
    schedule = record.schedule
    for key, text in (overrides or {}).items():
        check_text(f"-p {key}", text)
    now = now or utc_now()
    if now.microsecond == 0:
        now = now.replace(microsecond=1)
    texts = render_run_parameters(schedule, now, overrides)
    values = parse_run_parameters(schedule.notebook, texts)
    check_parameters(values, notebook_parameters(schedule.notebook), schedule.notebook)
    run, _ = store.create_run(name, "manual", now, parameters=texts, now=now)
    return run


@dataclass
class BackfillPlan:
    """What `plan_backfill` did: the runs to wait for, and the ticks it left alone (why)."""

    run_ids: list[int] = field(default_factory=list)
    ticks: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    new: int = 0
    """Runs created or reopened (with `dry_run`: that would be)."""
    made: list[int] = field(default_factory=list)
    """The ids of the runs this backfill created or reopened (not those it waits for)."""
    interrupted: bool = False
    """`stop` was set before every tick was planned."""

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


REPROCESS = ("none", "failed", "all")


def plan_backfill(
    store: RunStore,
    name: str,
    start: datetime,
    end: datetime,
    *,
    reprocess: str = "none",
    now: datetime | None = None,
    dry_run: bool = False,
    stop: threading.Event | None = None,
) -> BackfillPlan:
    """Queue one `backfill` run per tick of job `name` in [start, end] (both inclusive).

    With `dry_run`, nothing is stored: the plan only counts (`new`: the runs it would
    create or reopen), so the CLI can say how many before it asks. A range of more than
    `MAX_BACKFILL_TICKS` ticks is refused before any is listed. When `stop` is set (Ctrl-C
    while a long plan is being stored), planning stops at the next tick (`interrupted`).

    Per tick, looking at its scheduled and backfill runs:
    - a run queued or running: left alone, never duplicated;
    - `none` (default): a tick that already ran (success, failed, crashed,
      timed_out) is skipped; ticks never run, or only `missed`/`skipped`/`cancelled`,
      get a run;
    - `failed`: also ticks whose runs failed/crashed/timed out and never succeeded;
    - `all`: every tick.
    An existing backfill run is reopened (`requeue_run`) rather than duplicated.
    """
    if reprocess not in REPROCESS:
        raise JobsError(f"--reprocess must be one of {', '.join(REPROCESS)}, not {reprocess!r}")
    record = store.get_job(name)
    schedule = record.schedule
    now = now or utc_now()
    plan = BackfillPlan()
    ticks = _backfill_ticks(schedule, start, end)
    plan.ticks = len(ticks)
    for tick in ticks:
        if stop is not None and stop.is_set():
            plan.interrupted = True
            break
        runs = [
            r
            for r in (
                store.find_run(name, "scheduled", tick),
                store.find_run(name, "backfill", tick),
            )
            if r is not None
        ]
        states = {r.state for r in runs}
        if states & set(ACTIVE_STATES):
            active = next(r for r in runs if r.state in ACTIVE_STATES)
            plan.skip(f"already {active.state}")
            if active.run_type == "backfill":
                plan.run_ids.append(active.id)  # wait for it too
            continue
        ran = "success" in states
        failed = bool(states & set(RETRYABLE_STATES)) and not ran
        if (ran and reprocess != "all") or (failed and reprocess == "none"):
            plan.skip("already succeeded" if ran else "already ran and failed")
            continue
        existing = store.find_run(name, "backfill", tick)
        if dry_run:
            plan.new += 1
            continue
        if existing is not None:
            reopen = (
                ("success", *RETRYABLE_STATES) if reprocess == "all" else RETRYABLE_STATES
            ) + ("missed", "skipped", "cancelled")
            why = f"reprocess requested by backfill (after {existing.attempts} attempt(s))"
            if store.requeue_run(
                existing.id, from_states=reopen, reason=why, new_round=True, now=now
            ):
                plan.run_ids.append(existing.id)
                plan.made.append(existing.id)
                plan.new += 1
            continue
        run, _ = create_job_run(store, record, "backfill", tick, now=now)
        plan.run_ids.append(run.id)
        plan.made.append(run.id)
        plan.new += 1
    return plan


MAX_BACKFILL_TICKS = 100_000
"""The most ticks one backfill may cover: more is a mistake (a one-second job over a year
is 31 million notebook runs), and listing them would take the memory of the machine."""


def _backfill_ticks(schedule: Any, start: datetime, end: datetime) -> list[datetime]:
    """The ticks in [start, end], listed in growing windows so that a range with more than
    `MAX_BACKFILL_TICKS` is refused after listing about that many, not all of them."""
    ticks: list[datetime] = []
    cursor = start - timedelta(microseconds=1)
    span = timedelta(days=1)
    while cursor < end:
        upto = min(cursor + span, end)
        ticks.extend(schedule.ticks_between(cursor, upto))
        if len(ticks) > MAX_BACKFILL_TICKS:
            raise JobsError(
                f"backfill of `{schedule.name}` from {start.isoformat()} to {end.isoformat()} "
                f"covers more than {MAX_BACKFILL_TICKS:,} ticks, the limit; backfill a "
                "shorter range at a time"
            )
        cursor = upto
        span *= 2
    return ticks

"""What the run store hands out: a job, a run, an ended attempt; and its two errors."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nbflow.core.errors import JobsError, did_you_mean
from nbflow.jobs.runstore.schema import (
    RUN_STATES,
    TERMINAL_STATES,
    _opt_time,
)
from nbflow.jobs.times import logical_iso, parse_utc, utc_iso


class UnknownJobError(JobsError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        known = list(known)
        hint = did_you_mean(name, known) or (
            f"; known jobs: {', '.join(f'`{k}`' for k in known)}"
            if known
            else "; there are no jobs yet: add one with `nbflow schedule add`"
        )
        super().__init__(f"no job named `{name}`{hint}")


class JobExistsError(JobsError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"a job named `{name}` already exists; pick another name, or remove it first "
            f"with `nbflow schedule remove {name}`"
        )


@dataclass(frozen=True)
class JobRecord:
    """One stored job. `spec` is the schedule as a dict (`Schedule.to_dict()`)."""

    name: str
    spec: dict[str, Any]
    paused: bool
    created_at: datetime
    updated_at: datetime
    resumed_at: datetime | None
    """When the job was last resumed; no run is made for a tick before it."""

    @property
    def schedule(self) -> Any:
        """The spec as a `nbflow.jobs.schedules.Schedule` (with `paused` from this record)."""
        from nbflow.jobs.schedules import Schedule

        return Schedule.from_dict({**self.spec, "name": self.name, "paused": self.paused})

    @property
    def active_since(self) -> datetime:
        """The earliest instant a tick may be run for: added, or last resumed."""
        return max(self.created_at, self.resumed_at or self.created_at)


@dataclass(frozen=True)
class RunRecord:
    """One row of run history. Times are aware UTC datetimes."""

    id: int
    job: str
    run_type: str
    logical_date: datetime
    state: str
    attempts: int
    retry_base: int
    """Attempts made before the current round: a backfill reprocess starts a new round,
    with the job's whole retry budget (`attempts - retry_base` counts against `retries`)."""
    pid: int | None
    heartbeat: datetime | None
    queued_at: datetime
    not_before: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    duration: float | None
    output_path: str | None
    error: str | None
    reason: str | None
    parameters: dict[str, Any]
    worker: dict[str, Any] | None = None
    """Where the latest attempt ran on a Dask cluster: the worker's `address`, `host` and
    `pid` (None: it ran on the scheduler's host, or has not started on a worker yet)."""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times as UTC ISO text)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = utc_iso(value) if isinstance(value, datetime) else value
        out["logical_date"] = logical_iso(self.logical_date)
        return out


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        job=row["job"],
        run_type=row["run_type"],
        logical_date=parse_utc(row["logical_date"]),
        state=row["state"],
        attempts=row["attempts"],
        retry_base=row["retry_base"],
        pid=row["pid"],
        heartbeat=_opt_time(row["heartbeat"]),
        queued_at=parse_utc(row["queued_at"]),
        not_before=_opt_time(row["not_before"]),
        started_at=_opt_time(row["started_at"]),
        ended_at=_opt_time(row["ended_at"]),
        duration=row["duration"],
        output_path=row["output_path"],
        error=row["error"],
        reason=row["reason"],
        parameters=json.loads(row["parameters"]),
        worker=json.loads(row["worker"]) if row["worker"] else None,
    )


def _job_from_row(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        name=row["name"],
        spec=json.loads(row["spec"]),
        paused=bool(row["paused"]),
        created_at=parse_utc(row["created_at"]),
        updated_at=parse_utc(row["updated_at"]),
        resumed_at=_opt_time(row["resumed_at"]),
    )


RetryPolicy = Callable[[RunRecord], datetime | None]
"""When to try a run again, asked inside the transaction that ends its attempt: it gets the
run as the attempt ended (failed/crashed/timed_out, with `ended_at`, `duration`, `error`)
and returns the time of the next attempt, or None (no retry). It may read the store (same
connection, same transaction) but must not write, and should not raise: an exception
rolls the whole transaction back (the attempt is not ended) and propagates."""


@dataclass(frozen=True)
class EndedAttempt:
    """An attempt that `end_attempt` or `end_stale_attempts` ended, as committed."""

    attempt: RunRecord
    """The run as this attempt ended: its terminal state, `ended_at`, `duration`, `error`
    (what the alerts report)."""
    retry_at: datetime | None = None
    """When the retry queued in the same transaction may start (the stored run is then
    `queued` with this `not_before`); None: the run stays in its terminal state."""

    @property
    def retrying(self) -> bool:
        return self.retry_at is not None


def _claim_clause(pid: int | None, attempt: int | None) -> tuple[str, tuple[int, ...]]:
    """SQL (` AND pid = ? AND attempts = ?`, each part when given) and its arguments: the
    rows of runs whose current claim is `pid`'s `attempt`-th attempt."""
    parts: list[str] = []
    args: list[int] = []
    for column, value in (("pid", pid), ("attempts", attempt)):
        if value is not None:
            parts.append(f" AND {column} = ?")
            args.append(value)
    return "".join(parts), tuple(args)


def _check_state(state: str, allowed: Iterable[str] = RUN_STATES) -> None:
    allowed = tuple(allowed)
    if state not in allowed:
        hint = did_you_mean(state, allowed) or f"; use one of {', '.join(allowed)}"
        raise JobsError(f"unknown run state `{state}`{hint}")

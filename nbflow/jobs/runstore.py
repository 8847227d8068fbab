"""The run store: jobs (schedules), run history and file-sensor records in one SQLite file.

It lives in `home_dir() / "nbflow.db"` and is shared by the CLI, the scheduler
daemon, `trigger`/`backfill` and the alert and sensor code, possibly in several
processes at once.

Policy:
- **Stdlib sqlite3, WAL mode, short transactions.** Readers never block the
  writer; every write is one `BEGIN IMMEDIATE ... COMMIT` (the write lock is
  taken up front, so two writers queue instead of deadlocking on an upgrade),
  and `busy_timeout` makes a waiting writer retry for up to 30 s. No
  transaction spans a notebook run. `synchronous=NORMAL` is safe in WAL mode: a
  power cut may lose the last commits, never corrupt the file.
- **One connection per thread and process.** A `RunStore` may be shared by
  threads; each thread (and a forked child) gets its own connection.
- **Run identity is a constraint**: `UNIQUE(job, run_type, logical_date)`.
  `create_run` inserts with `ON CONFLICT DO NOTHING` and returns the existing
  row when there is one, so a scheduler that restarts after a crash can
  re-create the runs of a tick without duplicating any. Manual runs
  (`run_type="manual"`) have their own type and never take a scheduled slot.
- **Claims are atomic**: `claim_run` is `UPDATE ... WHERE state='queued'`; of
  two processes claiming one run exactly one gets True.
- **An attempt is identified by (pid, attempt number).** `claim_attempt`
  returns the attempt number its claim took (`attempts` after the increment).
  A runner passes `pid=` and `attempt=` to `heartbeat`, `set_output_path`,
  `end_attempt` / `finish_run` and `release_run`, which then change nothing
  unless the run is still `running` under that very claim: a runner that
  stalled past the heartbeat timeout, was swept as crashed and whose run was
  claimed again (a later attempt, perhaps by a process with the same pid)
  cannot end or touch the attempt that replaced its own. Pids repeat; attempt
  numbers repeat only when an attempt is given back (`release_run`, by a
  process that then exits), so the pair is unique among live claims. The
  scheduler reaping a dead child passes that child's pid and attempt; the
  sweep (`end_stale_attempts`) goes by heartbeat age alone; callers without
  `pid=` (a removed job's run skipped, a run failed at creation) end whatever
  attempt the run has, as before.
- **Terminal states are final.** `finish_run`, `end_attempt` and
  `end_stale_attempts` only move a run out of `queued` or `running`; a late
  signal after `success` changes nothing. The only way out of a terminal state
  is an explicit `requeue_run` (a backfill that asks to reprocess, or a retry
  of a run already ended), which names the states it may reopen.
- **An attempt ends together with its retry.** `end_attempt` and
  `end_stale_attempts` (the sweep) take a retry policy: in the same write
  transaction that records the failed/crashed/timed-out attempt they ask it
  whether and when to try again, and leave the run `queued` with `not_before`
  when it says so. No process killed between two commits can leave a run
  terminal with retries unused.
- **Times are UTC.** Every timestamp column is ISO 8601 text in UTC with a
  `+00:00` offset and a fixed format per column, so text order is time order
  (timestamps to the microsecond; logical dates as `utc_iso(..., "seconds")`
  unless they carry microseconds, which only manual runs do). Every function
  that records a time takes `now=` so tests and the scheduler inject a clock.

Tables:
    jobs(name PK, spec JSON, paused, created_at, updated_at, resumed_at)
    runs(id PK, job, run_type, logical_date, state, attempts, retry_base, pid, heartbeat,
         queued_at, not_before, started_at, ended_at, duration, output_path,
         error, reason, parameters JSON, worker JSON)
                                               UNIQUE(job, run_type, logical_date)
    sensor_files(job, path, content_digest, seen_at, run_id)
                                               UNIQUE(job, path, content_digest)
    settings(key PK, value JSON)

Run states: `queued`, `running` (active); `success`, `failed`, `crashed`,
`timed_out`, `missed`, `skipped`, `cancelled` (terminal; `cancelled`: a
foreground `trigger`/`backfill` interrupted with Ctrl-C ended it). Run types: `scheduled`, `manual`,
`backfill`, `sensor`.

API at a glance (`store = RunStore()`; every `now=` is an aware datetime):

    jobs      add_job(name, spec) · get_job(name) / find_job(name) · job_names()
              list_jobs(include_paused=) · update_job(name, spec)
              pause_job(name) · resume_job(name)  (sets resumed_at) · remove_job(name)
              JobRecord: .spec (dict) .schedule (Schedule) .paused .active_since
    runs      create_run(job, run_type, logical_date, parameters=, state=, reason=)
                  -> (RunRecord, created)            idempotent per identity
              record_missed(job, logical_date, reason)
              claim_run(id, pid) -> bool             queued -> running, attempts + 1
              claim_attempt(id, pid) -> int | None   the same, returning the attempt number
              heartbeat(id, pid=, attempt=) -> bool  False: stop, it is not yours
              set_output_path(id, path, pid=, attempt=)
              set_worker(id, {address, host, pid}, pid=, attempt=)   a run on Dask
              finish_run(id, state, error=, reason=, output_path=, pid=, attempt=) -> bool
              end_attempt(id, state, error=, reason=, output_path=, retry=, pid=, attempt=,
                          before_commit=)
                  -> EndedAttempt | None             finish, and queue the retry, atomically
              release_run(id, pid=, attempt=) -> bool   running -> queued (SIGTERM hand-back)
              cancel_queued(ids, reason) -> [id]     queued -> cancelled (Ctrl-C in the foreground)
              requeue_run(id, from_states=, not_before=, new_round=) -> bool   retry / reprocess
              end_stale_attempts(older_than_seconds, retry=) -> [EndedAttempt]
                                                     the sweep: crashed, retries queued atomically
              get_run(id) · find_run(job, run_type, logical_date)
              list_runs(job, states=, run_types=, since=, until=, limit=, oldest_first=)
              run_cells(job, limit) -> [(id, run_type, logical_date, state)]   lean, for grids
              queued_runs(job, now=, limit=)         claimable, oldest logical date first
              count_runs(job, states=) · count_running(job) · last_tick(job)
    sensor    sensor_file_seen(job, path, digest) · record_sensor_file(...) -> bool
    settings  get_setting(key, default) · set_setting(key, value) · delete_setting(key)
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from nbflow.core.errors import JobsError, did_you_mean
from nbflow.core.home import ensure_private_dir, home_dir
from nbflow.jobs.times import logical_iso, parse_utc, utc_iso, utc_now

__all__ = [
    "ACTIVE_STATES",
    "RETRYABLE_STATES",
    "RUN_STATES",
    "RUN_TYPES",
    "TERMINAL_STATES",
    "EndedAttempt",
    "JobExistsError",
    "JobRecord",
    "RetryPolicy",
    "RunRecord",
    "RunStore",
    "UnknownJobError",
    "logical_iso",
    "parse_utc",
    "utc_iso",
    "utc_now",
]

RunState = Literal[
    "queued",
    "running",
    "success",
    "failed",
    "crashed",
    "timed_out",
    "missed",
    "skipped",
    "cancelled",
]
RunType = Literal["scheduled", "manual", "backfill", "sensor"]

ACTIVE_STATES: tuple[str, ...] = ("queued", "running")
TERMINAL_STATES: tuple[str, ...] = (
    "success",
    "failed",
    "crashed",
    "timed_out",
    "missed",
    "skipped",
    "cancelled",
)
RUN_STATES: tuple[str, ...] = ACTIVE_STATES + TERMINAL_STATES
RUN_TYPES: tuple[str, ...] = ("scheduled", "manual", "backfill", "sensor")
RETRYABLE_STATES: tuple[str, ...] = ("failed", "crashed", "timed_out")

SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 30_000

_RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT NOT NULL,
    run_type     TEXT NOT NULL CHECK (run_type IN ('scheduled','manual','backfill','sensor')),
    logical_date TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued','running','success','failed',
                                               'crashed','timed_out','missed','skipped',
                                               'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    retry_base   INTEGER NOT NULL DEFAULT 0,
    pid          INTEGER,
    heartbeat    TEXT,
    queued_at    TEXT NOT NULL,
    not_before   TEXT,
    started_at   TEXT,
    ended_at     TEXT,
    duration     REAL,
    output_path  TEXT,
    error        TEXT,
    reason       TEXT,
    parameters   TEXT NOT NULL DEFAULT '{{}}',
    worker       TEXT,
    UNIQUE (job, run_type, logical_date)
)"""
_RUN_COLUMNS = (
    "id, job, run_type, logical_date, state, attempts, retry_base, pid, heartbeat, queued_at, "
    "not_before, started_at, ended_at, duration, output_path, error, reason, parameters"
)
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS jobs (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    resumed_at  TEXT
);"""
    + _RUNS_TABLE.format(name="runs")
    + """;
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, job);
CREATE INDEX IF NOT EXISTS runs_by_job_date ON runs (job, logical_date);
CREATE TABLE IF NOT EXISTS sensor_files (
    job            TEXT NOT NULL,
    path           TEXT NOT NULL,
    content_digest TEXT NOT NULL,
    seen_at        TEXT NOT NULL,
    run_id         INTEGER,
    UNIQUE (job, path, content_digest)
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
)
# Upgrades of an existing file, by the version it has (`PRAGMA user_version`); statements
# separated by `;`, run in the one upgrade transaction.
_MIGRATIONS = {
    1: "ALTER TABLE runs ADD COLUMN retry_base INTEGER NOT NULL DEFAULT 0;",
    # The `cancelled` state: SQLite cannot change a CHECK constraint, so the table is
    # rebuilt (columns named: a file upgraded from version 1 has retry_base last). Its
    # indexes go with the old table and are made again by the schema that follows.
    2: _RUNS_TABLE.replace("    worker       TEXT,\n", "").format(name="runs_v3")
    + f"; INSERT INTO runs_v3 ({_RUN_COLUMNS}) SELECT {_RUN_COLUMNS} FROM runs"
    + "; DROP TABLE runs; ALTER TABLE runs_v3 RENAME TO runs;",
    # Where an attempt on a Dask cluster runs (`worker`, JSON: address, host, pid). The
    # version-2 rebuild above makes the table as it was in version 3, without it.
    3: "ALTER TABLE runs ADD COLUMN worker TEXT;",
}


def _opt_time(text: str | None) -> datetime | None:
    return parse_utc(text) if text else None


# --- errors -------------------------------------------------------------------------


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


# --- records ------------------------------------------------------------------------


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


# --- the store ----------------------------------------------------------------------


class RunStore:
    """Jobs, runs, sensor files and settings in one SQLite file (see the module docstring).

    `RunStore()` opens `home_dir() / "nbflow.db"`; `RunStore(path)` another file.
    Safe to share between threads; each process opens its own connections.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else home_dir() / "nbflow.db"
        ensure_private_dir(self.path.parent)
        self._local = threading.local()
        self._connect()  # creates the file and the schema now, so errors surface here

    # -- connections

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self._create_or_upgrade(conn)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _create_or_upgrade(self, conn: sqlite3.Connection) -> None:
        """Create the tables, or upgrade an older file, in one transaction: two processes
        doing it at once queue on the write lock, and the second finds it done."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            has_runs = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
            ).fetchone()
            if has_runs:
                for old in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS.get(old, "").split(";"):
                        if statement.strip():
                            conn.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        os.chmod(self.path, 0o600)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, with the write lock taken up front."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _read(self) -> sqlite3.Connection:
        return self._connect()

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def journal_mode(self) -> str:
        return str(self._read().execute("PRAGMA journal_mode").fetchone()[0])

    # -- jobs

    def add_job(
        self,
        name: str,
        spec: Mapping[str, Any],
        *,
        paused: bool = False,
        now: datetime | None = None,
    ) -> JobRecord:
        """Store a new job; `JobExistsError` if the name is taken (nothing changes then)."""
        stamp = utc_iso(now or utc_now())
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO jobs (name, spec, paused, created_at, updated_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, json.dumps(dict(spec)), int(paused), stamp, stamp),
            )
            if cursor.rowcount == 0:
                raise JobExistsError(name)
        return self.get_job(name)

    def get_job(self, name: str) -> JobRecord:
        """The job named `name`; `UnknownJobError` (with near misses) if there is none."""
        row = self._read().execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownJobError(name, self.job_names())
        return _job_from_row(row)

    def find_job(self, name: str) -> JobRecord | None:
        row = self._read().execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        return _job_from_row(row) if row is not None else None

    def job_names(self) -> list[str]:
        return [r[0] for r in self._read().execute("SELECT name FROM jobs ORDER BY name")]

    def list_jobs(self, *, include_paused: bool = True) -> list[JobRecord]:
        """All jobs by name (only active ones when `include_paused` is False)."""
        sql = "SELECT * FROM jobs" + ("" if include_paused else " WHERE paused = 0")
        return [_job_from_row(r) for r in self._read().execute(sql + " ORDER BY name")]

    def update_job(
        self, name: str, spec: Mapping[str, Any], *, now: datetime | None = None
    ) -> JobRecord:
        """Replace the spec of job `name`."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET spec = ?, updated_at = ? WHERE name = ?",
                (json.dumps(dict(spec)), utc_iso(now or utc_now()), name),
            )
            if cursor.rowcount == 0:
                raise UnknownJobError(name, self.job_names())
        return self.get_job(name)

    def pause_job(self, name: str, *, now: datetime | None = None) -> JobRecord:
        """Stop making runs for `name`'s ticks (queued and running runs are left alone)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET paused = 1, updated_at = ? WHERE name = ?",
                (utc_iso(now or utc_now()), name),
            )
            if cursor.rowcount == 0:
                raise UnknownJobError(name, self.job_names())
        return self.get_job(name)

    def resume_job(self, name: str, *, now: datetime | None = None) -> JobRecord:
        """Make runs again, from `now` on: ticks before `resumed_at` are never run or recorded."""
        stamp = utc_iso(now or utc_now())
        with self._write() as db:
            row = db.execute("SELECT paused FROM jobs WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownJobError(name, self.job_names())
            if row["paused"]:
                # Resuming a running job changes nothing: its missed ticks stay its own.
                db.execute(
                    "UPDATE jobs SET paused = 0, resumed_at = ?, updated_at = ? WHERE name = ?",
                    (stamp, stamp, name),
                )
        return self.get_job(name)

    def remove_job(self, name: str, *, now: datetime | None = None) -> int:
        """Delete job `name`; its queued runs become `skipped` ("job removed"), history stays.

        Returns how many queued runs were skipped.
        """
        stamp = utc_iso(now or utc_now())
        with self._write() as db:
            cursor = db.execute("DELETE FROM jobs WHERE name = ?", (name,))
            if cursor.rowcount == 0:
                raise UnknownJobError(name, self.job_names())
            skipped = db.execute(
                "UPDATE runs SET state = 'skipped', reason = 'job removed', ended_at = ? "
                "WHERE job = ? AND state = 'queued'",
                (stamp, name),
            ).rowcount
            db.execute("DELETE FROM sensor_files WHERE job = ?", (name,))
        return skipped

    # -- runs: creation and transitions

    def create_run(
        self,
        job: str,
        run_type: str,
        logical_date: datetime,
        *,
        parameters: Mapping[str, Any] | None = None,
        state: str = "queued",
        reason: str | None = None,
        now: datetime | None = None,
    ) -> tuple[RunRecord, bool]:
        """Insert a run for (job, run_type, logical_date), or return the one already there.

        Returns `(run, created)`: `created` is False when a run with that identity
        existed (it is returned unchanged, whatever its state). `state` may be
        `queued` (the usual), `missed` or `skipped` (recorded with `reason`, never run).
        """
        if run_type not in RUN_TYPES:
            raise JobsError(
                f"unknown run type `{run_type}`{did_you_mean(run_type, RUN_TYPES)}; "
                f"use one of {', '.join(RUN_TYPES)}"
            )
        _check_state(state, ("queued", "missed", "skipped"))
        stamp = utc_iso(now or utc_now())
        ended = stamp if state != "queued" else None
        key = (job, run_type, logical_iso(logical_date))
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (job, run_type, logical_date, state, queued_at, ended_at, "
                "reason, parameters) VALUES (?,?,?,?,?,?,?,?) "
                "ON CONFLICT (job, run_type, logical_date) DO NOTHING",
                (
                    *key,
                    state,
                    stamp,
                    ended,
                    reason,
                    json.dumps(dict(parameters or {}), default=str),
                ),
            )
            created = cursor.rowcount == 1
            row = db.execute(
                "SELECT * FROM runs WHERE job = ? AND run_type = ? AND logical_date = ?", key
            ).fetchone()
        return _run_from_row(row), created

    def record_missed(
        self, job: str, logical_date: datetime, reason: str, *, now: datetime | None = None
    ) -> tuple[RunRecord, bool]:
        """Record a scheduled tick that will not run (`missed`, with `reason`); idempotent."""
        return self.create_run(
            job, "scheduled", logical_date, state="missed", reason=reason, now=now
        )

    def cancel_queued(
        self, run_ids: Iterable[int], reason: str, *, now: datetime | None = None
    ) -> list[int]:
        """Make those of `run_ids` that are still `queued` (waiting for a slot or for their
        retry time) `cancelled`, with `reason`, in one transaction; returns their ids.
        A run claimed meanwhile is left to its runner."""
        ids = list(run_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._write() as db:  # no RETURNING: it needs SQLite 3.35
            found = [
                r[0]
                for r in db.execute(
                    f"SELECT id FROM runs WHERE id IN ({marks}) AND state = 'queued'", ids
                )
            ]
            db.executemany(
                "UPDATE runs SET state = 'cancelled', reason = ?, ended_at = ?, not_before = NULL "
                "WHERE id = ? AND state = 'queued'",
                [(reason, utc_iso(now or utc_now()), run_id) for run_id in found],
            )
        return sorted(found)

    def claim_run(self, run_id: int, pid: int, *, now: datetime | None = None) -> bool:
        """Atomically take a queued run: `running`, with `pid`, a heartbeat and attempts + 1.

        True for exactly one claimer; False if the run was not `queued` (taken,
        finished or skipped) or waits for its retry time (`not_before` > now).
        """
        return self.claim_attempt(run_id, pid, now=now) is not None

    def claim_attempt(self, run_id: int, pid: int, *, now: datetime | None = None) -> int | None:
        """`claim_run`, returning the number of the attempt the claim took (the run's
        `attempts` after it, read in the same transaction), or None when it took none.

        `(pid, attempt)` identifies this claim: pass both to `heartbeat`,
        `set_output_path`, `end_attempt` and `release_run` to act only while the
        run is still this claim's.
        """
        stamp = utc_iso(now or utc_now())
        with self._write() as db:
            cursor = db.execute(
                "UPDATE runs SET state = 'running', pid = ?, heartbeat = ?, started_at = ?, "
                "ended_at = NULL, duration = NULL, worker = NULL, attempts = attempts + 1 "
                "WHERE id = ? AND state = 'queued' AND (not_before IS NULL OR not_before <= ?)",
                (pid, stamp, stamp, run_id, stamp),
            )
            if cursor.rowcount != 1:
                return None
            row = db.execute("SELECT attempts FROM runs WHERE id = ?", (run_id,)).fetchone()
            return int(row[0])

    def heartbeat(
        self,
        run_id: int,
        *,
        pid: int | None = None,
        attempt: int | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Refresh a running run's heartbeat. False when it is no longer running (or no longer
        the claim `pid`/`attempt` names): the caller should stop working on it."""
        owner, owner_args = _claim_clause(pid, attempt)
        sql = "UPDATE runs SET heartbeat = ? WHERE id = ? AND state = 'running'" + owner
        with self._write() as db:
            return db.execute(sql, (utc_iso(now or utc_now()), run_id, *owner_args)).rowcount == 1

    def finish_run(
        self,
        run_id: int,
        state: str,
        *,
        error: str | None = None,
        reason: str | None = None,
        output_path: str | Path | None = None,
        pid: int | None = None,
        attempt: int | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Move a queued or running run to terminal `state`; False (nothing changes) if it is
        already terminal. `duration` is `ended_at - started_at` (None if it never started).

        With `pid` and/or `attempt` (a runner ending its own attempt), only a run
        still `running` under that claim is ended (see `end_attempt`); without
        them, any queued or running run is (the scheduler skipping a removed
        job's run, a run failed at creation)."""
        ended = self.end_attempt(
            run_id,
            state,
            error=error,
            reason=reason,
            output_path=output_path,
            pid=pid,
            attempt=attempt,
            now=now,
        )
        return ended is not None

    def end_attempt(
        self,
        run_id: int,
        state: str,
        *,
        error: str | None = None,
        reason: str | None = None,
        output_path: str | Path | None = None,
        retry: RetryPolicy | None = None,
        pid: int | None = None,
        attempt: int | None = None,
        before_commit: Callable[[], None] | None = None,
        now: datetime | None = None,
    ) -> EndedAttempt | None:
        """`finish_run`, and for a failed/crashed/timed-out attempt the retry, in one write
        transaction.

        The attempt is recorded as `finish_run` records it; then, still in the
        transaction, `retry(run as the attempt ended)` is asked for the time of
        the next attempt. When it gives one, the run is reopened as `requeue_run`
        (`not_before=` that time) reopens it: `queued`, `attempts` and
        `retry_base` kept, the attempt's `error` kept, `ended_at`/`duration`
        cleared. Success and skipped attempts never ask `retry`. Returns what was
        committed, or None (nothing changes) if the run was already terminal.

        **Whose attempt.** A runner ending its own attempt passes `pid` and
        `attempt` (what `claim_attempt` returned): the run is ended only if it
        is still `running` with that pid and that attempt number; otherwise
        (swept as crashed while the runner stalled, perhaps queued again and
        claimed by another process, or ended by anyone else) nothing changes,
        `retry` and `before_commit` are not called, and None is returned. The
        sweep (`end_stale_attempts`), the scheduler reaping a dead child (with
        the child's pid and attempt) and the commands that skip or fail a run
        pass neither and end whatever attempt the run has.

        `before_commit()` is called last inside the transaction, once the attempt
        is ended (and its retry decided) and so known to be the caller's, e.g. to
        move the attempt's output notebook into place: no other claim or end can
        come between the check and it. If it raises, the transaction is rolled
        back (the attempt is not ended) and the exception propagates.
        """
        _check_state(state, TERMINAL_STATES)
        moment = now or utc_now()
        owner, owner_args = _claim_clause(pid, attempt)
        with self._write() as db:
            row = db.execute(
                "SELECT started_at, state FROM runs WHERE id = ?"
                + (" AND state = 'running'" + owner if owner else ""),
                (run_id, *owner_args),
            ).fetchone()
            if row is None or row["state"] not in ACTIVE_STATES:
                return None
            duration = (
                (moment - parse_utc(row["started_at"])).total_seconds()
                if row["started_at"] and row["state"] == "running"
                else None
            )
            db.execute(
                "UPDATE runs SET state = ?, ended_at = ?, duration = ?, error = ?, "
                "reason = COALESCE(?, reason), output_path = COALESCE(?, output_path) "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (
                    state,
                    utc_iso(moment),
                    duration,
                    error,
                    reason,
                    str(output_path) if output_path is not None else None,
                    run_id,
                ),
            )
            ended = self._maybe_retry(db, run_id, retry, moment)
            if before_commit is not None:
                before_commit()
            return ended

    def _maybe_retry(
        self,
        db: sqlite3.Connection,
        run_id: int,
        retry: RetryPolicy | None,
        now: datetime,
    ) -> EndedAttempt:
        """Inside a write transaction that just ended run `run_id`'s attempt: ask `retry`, and
        reopen the run for the time it gives."""
        attempt = _run_from_row(db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())
        retry_at = (
            retry(attempt) if retry is not None and attempt.state in RETRYABLE_STATES else None
        )
        if retry_at is not None:
            self._reopen(db, run_id, (attempt.state,), not_before=retry_at, now=now)
        return EndedAttempt(attempt, retry_at)

    def set_output_path(
        self,
        run_id: int,
        output_path: str | Path,
        *,
        pid: int | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Record where a run's output notebook goes (before it starts; survives a crash).

        With `pid`/`attempt`, only while the run is `running` under that claim."""
        owner, owner_args = _claim_clause(pid, attempt)
        states = "state = 'running'" if owner else "state IN ('queued','running')"
        with self._write() as db:
            return (
                db.execute(
                    f"UPDATE runs SET output_path = ? WHERE id = ? AND {states}{owner}",
                    (str(output_path), run_id, *owner_args),
                ).rowcount
                == 1
            )

    def set_worker(
        self,
        run_id: int,
        worker: Mapping[str, Any],
        *,
        pid: int | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Record the Dask worker an attempt runs on (`address`, `host`, `pid`), while the
        run is `running` (under the claim `pid`/`attempt`, when given)."""
        owner, owner_args = _claim_clause(pid, attempt)
        with self._write() as db:
            return (
                db.execute(
                    f"UPDATE runs SET worker = ? WHERE id = ? AND state = 'running'{owner}",
                    (json.dumps(dict(worker)), run_id, *owner_args),
                ).rowcount
                == 1
            )

    def requeue_run(
        self,
        run_id: int,
        *,
        from_states: Iterable[str] = RETRYABLE_STATES,
        not_before: datetime | None = None,
        reason: str | None = None,
        new_round: bool = False,
        now: datetime | None = None,
    ) -> bool:
        """Reopen a finished run as `queued` (a retry, or a backfill reprocess).

        Only runs in `from_states` are reopened (default: failed, crashed,
        timed_out; pass e.g. `("success", ...)` for `--reprocess all`). `attempts`
        is kept, so the caller compares `attempts - retry_base` with the job's
        retries; `new_round` (a reprocess) sets `retry_base = attempts`, giving
        the run its whole retry budget again. `not_before` delays the next claim
        (the retry delay). Returns False if the run was in another state.
        """
        states = tuple(from_states)
        for s in states:
            _check_state(s, TERMINAL_STATES)
        with self._write() as db:
            return self._reopen(
                db,
                run_id,
                states,
                not_before=not_before,
                reason=reason,
                new_round=new_round,
                now=now or utc_now(),
            )

    @staticmethod
    def _reopen(
        db: sqlite3.Connection,
        run_id: int,
        states: tuple[str, ...],
        *,
        not_before: datetime | None,
        now: datetime,
        reason: str | None = None,
        new_round: bool = False,
    ) -> bool:
        """`requeue_run`'s update, inside the caller's write transaction."""
        marks = ",".join("?" * len(states))
        cursor = db.execute(
            "UPDATE runs SET state = 'queued', pid = NULL, heartbeat = NULL, ended_at = NULL, "
            "duration = NULL, queued_at = ?, not_before = ?, reason = COALESCE(?, reason), "
            "retry_base = CASE WHEN ? THEN attempts ELSE retry_base END "
            f"WHERE id = ? AND state IN ({marks})",
            (
                utc_iso(now),
                utc_iso(not_before) if not_before else None,
                reason,
                new_round,
                run_id,
                *states,
            ),
        )
        return cursor.rowcount == 1

    def release_run(
        self, run_id: int, *, pid: int | None = None, attempt: int | None = None
    ) -> bool:
        """Hand a running run back to the queue (a scheduler stopping on SIGTERM before its
        notebook finished): `queued` again, and the attempt it had taken is given back.
        Only from `running` (and only the claim `pid`/`attempt` names, when given)."""
        owner, owner_args = _claim_clause(pid, attempt)
        sql = (
            "UPDATE runs SET state = 'queued', pid = NULL, heartbeat = NULL, started_at = NULL, "
            "attempts = MAX(attempts - 1, 0) WHERE id = ? AND state = 'running'" + owner
        )
        with self._write() as db:
            return db.execute(sql, (run_id, *owner_args)).rowcount == 1

    def end_stale_attempts(
        self,
        older_than: float,
        *,
        retry: RetryPolicy | None = None,
        now: datetime | None = None,
    ) -> list[EndedAttempt]:
        """The sweep: `running` runs whose heartbeat is older than `older_than` seconds become
        `crashed` ("no heartbeat for N s"), and each one's retry is decided, in one write
        transaction.

        `retry` is asked for each crashed run as `end_attempt` asks it; a run it
        gives a time for is reopened (`queued`, `not_before`) before the commit.
        Returns the ended attempts (`attempt.state` is `crashed`, even for a run
        whose retry was queued).
        """
        moment = now or utc_now()
        cutoff = utc_iso(moment.astimezone(UTC) - timedelta(seconds=older_than))
        ended: list[EndedAttempt] = []
        with self._write() as db:
            stale = db.execute(
                "SELECT id, started_at FROM runs WHERE state = 'running' AND heartbeat < ?",
                (cutoff,),
            ).fetchall()
            for run_id, started_at in stale:
                duration = (moment - parse_utc(started_at)).total_seconds() if started_at else None
                db.execute(
                    "UPDATE runs SET state = 'crashed', ended_at = ?, duration = ?, "
                    "error = COALESCE(error, ?) WHERE id = ? AND state = 'running'",
                    (
                        utc_iso(moment),
                        duration,
                        f"no heartbeat for {older_than:g} s (the process running it died)",
                        run_id,
                    ),
                )
                ended.append(self._maybe_retry(db, run_id, retry, moment))
        return ended

    # -- runs: queries

    def get_run(self, run_id: int) -> RunRecord:
        row = self._read().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise JobsError(f"no run with id {run_id}; list runs with `nbflow runs`")
        return _run_from_row(row)

    def find_run(self, job: str, run_type: str, logical_date: datetime) -> RunRecord | None:
        row = (
            self._read()
            .execute(
                "SELECT * FROM runs WHERE job = ? AND run_type = ? AND logical_date = ?",
                (job, run_type, logical_iso(logical_date)),
            )
            .fetchone()
        )
        return _run_from_row(row) if row is not None else None

    def list_runs(
        self,
        job: str | None = None,
        *,
        states: str | Iterable[str] | None = None,
        run_types: str | Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        oldest_first: bool = False,
    ) -> list[RunRecord]:
        """Runs filtered by job, state(s), run type(s) and logical date range (both inclusive).

        Newest logical date first unless `oldest_first` (then the order the
        scheduler starts queued runs in: oldest logical date, then id).
        """
        where: list[str] = []
        args: list[Any] = []
        if job is not None:
            where.append("job = ?")
            args.append(job)
        for column, values, known in (
            ("state", states, RUN_STATES),
            ("run_type", run_types, RUN_TYPES),
        ):
            if values is None:
                continue
            chosen = (values,) if isinstance(values, str) else tuple(values)
            for value in chosen:
                if value not in known:
                    hint = did_you_mean(value, known) or f"; use one of {', '.join(known)}"
                    raise JobsError(f"unknown {column.replace('_', ' ')} `{value}`{hint}")
            where.append(f"{column} IN ({','.join('?' * len(chosen))})")
            args.extend(chosen)
        if since is not None:
            where.append("logical_date >= ?")
            args.append(logical_iso(since))
        if until is not None:
            where.append("logical_date <= ?")
            args.append(logical_iso(until))
        order = "ASC" if oldest_first else "DESC"
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY logical_date {order}, id {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [_run_from_row(r) for r in self._read().execute(sql, args)]

    def run_cells(self, job: str, limit: int) -> list[tuple[int, str, datetime, str]]:
        """The newest `limit` runs of `job` as (id, run type, logical date, state) only,
        newest logical date first: the dashboard's grid, from the `runs_by_job_date` index
        without building whole records."""
        rows = (
            self._read()
            .execute(
                "SELECT id, run_type, logical_date, state FROM runs WHERE job = ? "
                "ORDER BY logical_date DESC, id DESC LIMIT ?",
                (job, int(limit)),
            )
            .fetchall()
        )
        return [(r[0], r[1], parse_utc(r[2]), r[3]) for r in rows]

    def queued_runs(
        self, job: str | None = None, *, now: datetime | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Queued runs ready to claim (retry time reached), oldest logical date first."""
        stamp = utc_iso(now or utc_now())
        sql = (
            "SELECT * FROM runs WHERE state = 'queued' AND (not_before IS NULL OR not_before <= ?)"
        )
        args: list[Any] = [stamp]
        if job is not None:
            sql += " AND job = ?"
            args.append(job)
        sql += " ORDER BY logical_date ASC, id ASC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [_run_from_row(r) for r in self._read().execute(sql, args)]

    def count_running(self, job: str | None = None) -> int:
        """How many runs are `running` (of `job`, or of all jobs: the global limit)."""
        return self.count_runs(job, states=("running",))

    def count_runs(self, job: str | None = None, *, states: Iterable[str] = ACTIVE_STATES) -> int:
        """How many runs (of `job`, or of all jobs) are in `states` (default: queued, running)."""
        chosen = tuple(states)
        for state in chosen:
            _check_state(state)
        sql = f"SELECT COUNT(*) FROM runs WHERE state IN ({','.join('?' * len(chosen))})"
        args: list[Any] = list(chosen)
        if job is not None:
            sql += " AND job = ?"
            args.append(job)
        return int(self._read().execute(sql, args).fetchone()[0])

    def last_tick(self, job: str) -> datetime | None:
        """The latest logical date of a `scheduled` run of `job` in any state (missed too):
        the scheduler's memory of which ticks it has already handled."""
        row = (
            self._read()
            .execute(
                "SELECT MAX(logical_date) FROM runs WHERE job = ? AND run_type = 'scheduled'",
                (job,),
            )
            .fetchone()
        )
        return parse_utc(row[0]) if row[0] else None

    # -- file sensor

    def sensor_file_seen(self, job: str, path: str, content_digest: str) -> bool:
        """Has `job` already taken this file with this content?"""
        row = (
            self._read()
            .execute(
                "SELECT 1 FROM sensor_files WHERE job = ? AND path = ? AND content_digest = ?",
                (job, path, content_digest),
            )
            .fetchone()
        )
        return row is not None

    def record_sensor_file(
        self,
        job: str,
        path: str,
        content_digest: str,
        *,
        run_id: int | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Remember (job, path, content); True if it was new (atomic: one caller wins)."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO sensor_files (job, path, content_digest, seen_at, run_id) "
                "VALUES (?,?,?,?,?) ON CONFLICT (job, path, content_digest) DO NOTHING",
                (job, path, content_digest, utc_iso(now or utc_now()), run_id),
            )
            return cursor.rowcount == 1

    # -- settings

    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self._read().execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row is not None else default

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serializable setting (e.g. `smtp`: host, port, sender...)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def erase_setting_field(self, key: str, field: str) -> None:
        """Remove `field` from setting `key` and overwrite its old bytes on disk.

        A plain UPDATE leaves the old row in the database file's free pages and in the
        write-ahead log; for a value that must not stay on disk (a password moving to the
        secret store) the deleted content is zeroed (`secure_delete`) and the log is
        checkpointed and truncated.
        """
        conn = self._connect()
        conn.execute("PRAGMA secure_delete = ON")
        try:
            with self._write() as db:
                row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    value = json.loads(row[0])
                    value.pop(field, None)
                    db.execute(
                        "UPDATE settings SET value = ? WHERE key = ?", (json.dumps(value), key)
                    )
            # The old page stays in the log until a checkpoint copies it back, and the log
            # file keeps its frames until it is truncated.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.execute("PRAGMA secure_delete = OFF")

    def delete_setting(self, key: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM settings WHERE key = ?", (key,)).rowcount == 1

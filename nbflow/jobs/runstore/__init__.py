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

from nbflow.jobs.runstore.database import Database
from nbflow.jobs.runstore.jobs import JobsTable
from nbflow.jobs.runstore.records import (
    EndedAttempt,
    JobExistsError,
    JobRecord,
    RetryPolicy,
    RunRecord,
    UnknownJobError,
)
from nbflow.jobs.runstore.runs import RunsTable
from nbflow.jobs.runstore.schema import (
    ACTIVE_STATES,
    BUSY_TIMEOUT_MS,
    RETRYABLE_STATES,
    RUN_STATES,
    RUN_TYPES,
    SCHEMA_VERSION,
    TERMINAL_STATES,
    RunState,
    RunType,
)
from nbflow.jobs.runstore.sensor_files import SensorFilesTable
from nbflow.jobs.runstore.settings import SettingsTable
from nbflow.jobs.times import logical_iso, parse_utc, utc_iso, utc_now

__all__ = [
    "ACTIVE_STATES",
    "BUSY_TIMEOUT_MS",
    "RETRYABLE_STATES",
    "RUN_STATES",
    "RUN_TYPES",
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "EndedAttempt",
    "JobExistsError",
    "JobRecord",
    "RetryPolicy",
    "RunRecord",
    "RunState",
    "RunStore",
    "RunType",
    "UnknownJobError",
    "logical_iso",
    "parse_utc",
    "utc_iso",
    "utc_now",
]


class RunStore(JobsTable, RunsTable, SensorFilesTable, SettingsTable, Database):
    """Jobs, runs, sensor files and settings in one SQLite file (see the module docstring).

    One class over one database, its methods grouped by what they store: the jobs table
    (`jobs.py`), runs and their attempts (`runs.py`), file-sensor records
    (`sensor_files.py`), settings (`settings.py`); the connections and the schema in
    `database.py` and `schema.py`, the records it returns in `records.py`.

    `RunStore()` opens `home_dir() / "nbflow.db"`; `RunStore(path)` another file.
    Safe to share between threads; each process opens its own connections.
    """

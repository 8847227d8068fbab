"""The run store's SQLite schema: run states and types, the tables, the migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from nbflow.jobs.times import parse_utc

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

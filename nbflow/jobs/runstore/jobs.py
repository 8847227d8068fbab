"""The jobs table: a job's spec, added, updated, paused, resumed, removed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nbflow.jobs.runstore.database import Database
from nbflow.jobs.runstore.records import (
    JobExistsError,
    JobRecord,
    UnknownJobError,
    _job_from_row,
)
from nbflow.jobs.times import utc_iso, utc_now


class JobsTable(Database):
    """The jobs table: a job's spec, added, updated, paused, resumed, removed."""

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

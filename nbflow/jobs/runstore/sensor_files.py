"""The files a job's file sensor has seen (path and content digest)."""

from __future__ import annotations

from datetime import datetime

from nbflow.jobs.runstore.database import Database
from nbflow.jobs.times import utc_iso, utc_now


class SensorFilesTable(Database):
    """The files a job's file sensor has seen (path and content digest)."""

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

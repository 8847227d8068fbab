"""The runs table: runs created, moved between states, reopened, and read."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nbflow.core.errors import JobsError, did_you_mean
from nbflow.jobs.runstore.database import Database
from nbflow.jobs.runstore.records import (
    EndedAttempt,
    RetryPolicy,
    RunRecord,
    _check_state,
    _claim_clause,
    _run_from_row,
)
from nbflow.jobs.runstore.schema import (
    ACTIVE_STATES,
    RETRYABLE_STATES,
    RUN_STATES,
    RUN_TYPES,
    TERMINAL_STATES,
)
from nbflow.jobs.times import logical_iso, parse_utc, utc_iso, utc_now


class RunsTable(Database):
    """The runs table: runs created, moved between states, reopened, and read."""

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

"""The run store: identity constraint, atomic claims across threads and processes, final states."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nbflow.core.errors import JobsError
from nbflow.jobs.runstore import JobExistsError, RunStore, UnknownJobError

T0 = datetime(2024, 3, 31, 1, 0, tzinfo=UTC)


@pytest.fixture
def store(home: Path) -> RunStore:
    return RunStore()


def test_lives_in_the_home_in_wal_mode_private_to_the_user(store, home):
    assert store.path == home / "nbflow.db"
    assert store.journal_mode() == "wal"
    assert (store.path.stat().st_mode & 0o777) == 0o600


def test_a_run_is_unique_per_job_run_type_and_logical_date(store):
    first, created = store.create_run("etl", "scheduled", T0, parameters={"day": "2024-03-31"})
    again, created_again = store.create_run("etl", "scheduled", T0, parameters={"other": 1})
    assert created and not created_again
    assert again == first  # the existing run, unchanged
    # a manual run at the same instant is another run and takes no scheduled slot
    manual, created_manual = store.create_run("etl", "manual", T0)
    assert created_manual and manual.id != first.id
    # the constraint is in the database, not only in create_run
    with pytest.raises(sqlite3.IntegrityError):
        sqlite3.connect(store.path).execute(
            "INSERT INTO runs (job, run_type, logical_date, state, queued_at) VALUES (?,?,?,?,?)",
            ("etl", "scheduled", first.to_dict()["logical_date"], "queued", "x"),
        )


def test_claim_moves_queued_to_running_once_with_pid_heartbeat_and_attempt(store):
    run, _ = store.create_run("etl", "scheduled", T0)
    assert store.claim_run(run.id, 4242, now=T0)
    assert not store.claim_run(run.id, 4343, now=T0)
    claimed = store.get_run(run.id)
    assert (claimed.state, claimed.pid, claimed.heartbeat, claimed.attempts) == (
        "running",
        4242,
        T0,
        1,
    )


def test_atomic_claim_from_many_threads(store):
    runs = [store.create_run("etl", "scheduled", T0 + timedelta(hours=i))[0] for i in range(30)]
    wins: list[tuple[int, int]] = []
    barrier = threading.Barrier(6)

    def claimer(worker: int) -> None:
        barrier.wait()
        for run in runs:
            if store.claim_run(run.id, worker):
                wins.append((run.id, worker))

    threads = [threading.Thread(target=claimer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r for r, _ in wins) == [r.id for r in runs]  # each exactly once
    for run_id, worker in wins:
        assert store.get_run(run_id).pid == worker


CLAIMER = """
import os, sys
from nbflow.jobs.runstore import RunStore
store = RunStore(sys.argv[1])
ids = sys.argv[3:] if sys.argv[2] == "up" else sys.argv[:2:-1]
print("ready", flush=True)
sys.stdin.readline()  # both processes start claiming together
print(" ".join(i for i in ids if store.claim_run(int(i), os.getpid())))
"""


def test_atomic_claim_from_two_processes(store):
    ids = [
        str(store.create_run("etl", "backfill", T0 + timedelta(hours=i))[0].id) for i in range(2000)
    ]
    # Opposite orders, so the two meet in the middle and contend for the same rows.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(store.path), order, *ids],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for order in ("up", "down")
    ]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outs[0] + outs[1], key=int) == ids  # every run claimed by exactly one
    for out, proc in zip(outs, procs, strict=True):
        assert {store.get_run(int(i)).pid for i in out} <= {proc.pid}


def test_terminal_states_are_final(store):
    run, _ = store.create_run("etl", "scheduled", T0)
    store.claim_run(run.id, 1, now=T0)
    assert store.finish_run(
        run.id, "success", output_path="/out.ipynb", now=T0 + timedelta(seconds=7)
    )
    # a late signal, a late sweep, a late heartbeat: nothing changes
    assert not store.finish_run(run.id, "crashed", error="late")
    assert not store.heartbeat(run.id)
    assert store.end_stale_attempts(1, now=T0 + timedelta(days=1)) == []
    assert not store.claim_run(run.id, 2)
    assert not store.requeue_run(run.id)  # success is not retryable
    done = store.get_run(run.id)
    assert (done.state, done.duration, done.output_path, done.error) == (
        "success",
        7.0,
        "/out.ipynb",
        None,
    )


def test_finish_requires_a_terminal_state(store):
    run, _ = store.create_run("etl", "scheduled", T0)
    with pytest.raises(JobsError, match="use one of success"):
        store.finish_run(run.id, "running")
    with pytest.raises(JobsError, match="did you mean `success`"):
        store.finish_run(run.id, "sucess")


def test_sweep_marks_runs_without_heartbeat_crashed_and_retry_requeues_them(store):
    stale, _ = store.create_run("etl", "scheduled", T0)
    alive, _ = store.create_run("etl", "scheduled", T0 + timedelta(hours=1))
    store.claim_run(stale.id, 11, now=T0)
    store.claim_run(alive.id, 12, now=T0)
    assert store.heartbeat(alive.id, pid=12, now=T0 + timedelta(seconds=25))
    assert not store.heartbeat(alive.id, pid=99, now=T0 + timedelta(seconds=25))  # not its run
    crashed = [e.attempt for e in store.end_stale_attempts(30, now=T0 + timedelta(seconds=31))]
    assert [r.id for r in crashed] == [stale.id]
    assert crashed[0].state == "crashed" and "no heartbeat for 30 s" in crashed[0].error
    assert store.get_run(alive.id).state == "running"
    # a retry reopens it, waiting for its retry delay; attempts are kept
    later = T0 + timedelta(seconds=90)
    assert store.requeue_run(stale.id, not_before=later, now=T0 + timedelta(seconds=31))
    assert store.queued_runs(now=T0 + timedelta(seconds=60)) == []
    assert not store.claim_run(stale.id, 13, now=T0 + timedelta(seconds=60))
    assert [r.id for r in store.queued_runs(now=later)] == [stale.id]
    assert store.claim_run(stale.id, 13, now=later)
    assert store.get_run(stale.id).attempts == 2


def test_ending_a_failed_attempt_queues_its_retry_in_the_same_commit(store):
    from nbflow.jobs.attempt import retry_policy

    store.add_job("etl", {"retries": 1, "retry_delay": 60}, now=T0)
    run, _ = store.create_run("etl", "scheduled", T0)
    store.claim_run(run.id, 4242, now=T0)
    ended = store.end_attempt(
        run.id,
        "failed",
        error="boom",
        output_path="/out.ipynb",
        retry=retry_policy(store),
        now=T0 + timedelta(seconds=7),
    )
    # what the alerts report: the attempt as it ended
    assert ended.retrying and ended.retry_at == T0 + timedelta(seconds=67)
    assert (ended.attempt.state, ended.attempt.ended_at, ended.attempt.duration) == (
        "failed",
        T0 + timedelta(seconds=7),
        7.0,
    )
    # what is stored: queued for its retry, attempts kept, the attempt's error visible
    queued = store.get_run(run.id)
    assert (queued.state, queued.not_before, queued.attempts, queued.retry_base) == (
        "queued",
        T0 + timedelta(seconds=67),
        1,
        0,
    )
    assert (queued.error, queued.output_path, queued.ended_at, queued.duration) == (
        "boom",
        "/out.ipynb",
        None,
        None,
    )
    assert not store.claim_run(run.id, 4343, now=T0 + timedelta(seconds=60))  # its delay
    # the row is what finish_run and then requeue_run (two commits) leave
    other, _ = store.create_run("etl", "scheduled", T0 + timedelta(hours=1))
    store.claim_run(other.id, 4242, now=T0)
    store.finish_run(
        other.id, "failed", error="boom", output_path="/out.ipynb", now=ended.attempt.ended_at
    )
    store.requeue_run(other.id, not_before=ended.retry_at, now=ended.attempt.ended_at)
    two_step = store.get_run(other.id)
    assert {
        **two_step.to_dict(),
        "id": run.id,
        "logical_date": queued.to_dict()["logical_date"],
    } == queued.to_dict()

    # the retry fails too: no retry is left, the run stays failed
    assert store.claim_run(run.id, 4343, now=T0 + timedelta(seconds=67))
    last = store.end_attempt(
        run.id,
        "failed",
        error="boom again",
        retry=retry_policy(store),
        now=T0 + timedelta(seconds=70),
    )
    assert not last.retrying and last.retry_at is None
    done = store.get_run(run.id)
    assert (done.state, done.attempts, done.error) == ("failed", 2, "boom again")
    assert done == last.attempt
    # a terminal run is not ended again, and the policy is not asked
    assert store.end_attempt(run.id, "crashed", retry=lambda r: 1 / 0) is None


def test_the_retry_policy_is_asked_inside_the_transaction_and_only_for_failures(store):
    run, _ = store.create_run("etl", "scheduled", T0)
    store.claim_run(run.id, 1, now=T0)
    asked = []

    def policy(attempt):
        asked.append(attempt.state)
        # the attempt's end is not committed yet: another connection still sees it running
        assert RunStore(store.path).get_run(run.id).state == "running"
        raise RuntimeError("policy broke")

    with pytest.raises(RuntimeError, match="policy broke"):
        store.end_attempt(run.id, "timed_out", error="timeout", retry=policy, now=T0)
    assert asked == ["timed_out"]
    assert store.get_run(run.id).state == "running"  # rolled back: one transaction
    assert store.end_attempt(run.id, "success", retry=policy, now=T0).attempt.state == "success"
    assert asked == ["timed_out"]  # a success never asks for a retry


def test_the_sweep_ends_stale_attempts_and_queues_their_retries_in_one_commit(store):
    stale, _ = store.create_run("etl", "scheduled", T0)
    spent, _ = store.create_run("etl", "scheduled", T0 + timedelta(hours=1))
    store.claim_run(stale.id, 11, now=T0)
    store.claim_run(spent.id, 12, now=T0)
    later = T0 + timedelta(seconds=90)
    ended = store.end_stale_attempts(
        30,
        retry=lambda a: later if a.id == stale.id else None,
        now=T0 + timedelta(seconds=31),
    )
    assert [(e.attempt.id, e.attempt.state, e.retry_at) for e in ended] == [
        (stale.id, "crashed", later),
        (spent.id, "crashed", None),
    ]
    retried = store.get_run(stale.id)
    assert (retried.state, retried.not_before, retried.attempts) == ("queued", later, 1)
    assert "no heartbeat for 30 s" in retried.error
    assert store.get_run(spent.id).state == "crashed"


def test_release_hands_a_running_run_back_without_using_an_attempt(store):
    run, _ = store.create_run("etl", "scheduled", T0)
    store.claim_run(run.id, 7, now=T0)
    assert store.count_runs("etl") == 1 and store.count_running() == 1
    assert not store.release_run(run.id, pid=8)  # not its claim
    assert store.release_run(run.id, pid=7)
    back = store.get_run(run.id)
    assert (back.state, back.attempts, back.pid, back.started_at) == ("queued", 0, None, None)
    assert store.count_running() == 0 and store.count_runs(states=["queued"]) == 1
    store.claim_run(run.id, 9)
    store.finish_run(run.id, "success")
    assert not store.release_run(run.id)  # terminal states are final


def test_an_attempt_taken_over_by_another_claim_is_not_ended_by_its_old_owner(store):
    """Runner A (pid 11) stalls past the heartbeat timeout; the sweep crashes its attempt and
    queues the retry; B (pid 12) claims the run. A, waking up, ends nothing of B's."""
    run, _ = store.create_run("etl", "scheduled", T0)
    assert store.claim_attempt(run.id, 11, now=T0) == 1
    (swept,) = store.end_stale_attempts(
        30, retry=lambda a: a.ended_at, now=T0 + timedelta(seconds=31)
    )
    assert swept.retrying
    called: list[str] = []

    def policy(attempt):
        called.append("retry")
        return None

    def late_end(state: str = "failed") -> object:
        return store.end_attempt(
            run.id,
            state,
            error="A's late result",
            output_path="/a.ipynb",
            retry=policy,
            pid=11,
            attempt=1,
            before_commit=lambda: called.append("commit"),
            now=T0 + timedelta(seconds=40),
        )

    queued = store.get_run(run.id)
    assert late_end() is None  # queued for its retry: nobody's attempt, A's least of all
    assert store.get_run(run.id) == queued
    assert store.claim_attempt(run.id, 12, now=T0 + timedelta(seconds=32)) == 2
    taken = store.get_run(run.id)
    assert late_end() is None and late_end("success") is None
    assert not store.finish_run(run.id, "success", pid=11, attempt=1)
    assert not store.finish_run(run.id, "success", pid=11)  # the pid alone says so too
    assert not store.heartbeat(run.id, pid=11, attempt=1)
    assert not store.set_output_path(run.id, "/a.ipynb", pid=11, attempt=1)
    assert not store.release_run(run.id, pid=11, attempt=1)
    assert called == [] and store.get_run(run.id) == taken  # nothing changed, nothing asked
    # the current owner's calls work, and its end commits with its notebook moved in place
    assert store.heartbeat(run.id, pid=12, attempt=2, now=T0 + timedelta(seconds=33))
    assert store.set_output_path(run.id, "/b.partial.ipynb", pid=12, attempt=2)
    ended = store.end_attempt(
        run.id,
        "success",
        output_path="/b.ipynb",
        pid=12,
        attempt=2,
        before_commit=lambda: called.append("commit"),
        now=T0 + timedelta(seconds=42),
    )
    assert ended is not None and called == ["commit"]
    done = store.get_run(run.id)
    assert (done.state, done.attempts, done.pid, done.error, done.output_path, done.duration) == (
        "success",
        2,
        12,
        None,
        "/b.ipynb",
        10.0,
    )


def test_pids_repeat_so_an_attempt_is_its_pid_and_its_attempt_number(store):
    run, _ = store.create_run("etl", "scheduled", T0)
    assert store.claim_attempt(run.id, 11, now=T0) == 1
    store.end_stale_attempts(30, retry=lambda a: a.ended_at, now=T0 + timedelta(seconds=31))
    # the retry is claimed by another process that happens to have the same pid
    assert store.claim_attempt(run.id, 11, now=T0 + timedelta(seconds=32)) == 2
    assert not store.heartbeat(run.id, pid=11, attempt=1)
    assert not store.finish_run(run.id, "failed", error="late", pid=11, attempt=1)
    assert store.get_run(run.id).state == "running"
    assert store.finish_run(run.id, "success", pid=11, attempt=2)
    assert store.get_run(run.id).state == "success"
    assert store.claim_attempt(run.id, 13) is None  # claimed by nobody: terminal


def test_before_commit_runs_inside_the_transaction_and_its_failure_rolls_back(store):
    run, _ = store.create_run("etl", "scheduled", T0)
    attempt = store.claim_attempt(run.id, 5, now=T0)

    def publish():
        # the end is not committed yet: another connection still sees the run running
        assert RunStore(store.path).get_run(run.id).state == "running"
        raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space"):
        store.end_attempt(run.id, "success", pid=5, attempt=attempt, before_commit=publish, now=T0)
    assert store.get_run(run.id).state == "running"  # rolled back: the attempt goes on
    assert store.end_attempt(run.id, "success", pid=5, attempt=attempt, now=T0) is not None


def test_the_sweep_and_callers_without_a_claim_end_whatever_attempt_the_run_has(store):
    stale, _ = store.create_run("etl", "scheduled", T0)
    other, _ = store.create_run("etl", "scheduled", T0 + timedelta(hours=1))
    store.claim_attempt(stale.id, 11, now=T0)
    store.claim_attempt(other.id, 12, now=T0)
    assert store.heartbeat(other.id, pid=12, attempt=1, now=T0 + timedelta(seconds=25))
    # the sweep goes by the heartbeat only, whoever's claim it is
    ended = store.end_stale_attempts(30, now=T0 + timedelta(seconds=31))
    assert [(e.attempt.id, e.attempt.state, e.attempt.pid) for e in ended] == [
        (stale.id, "crashed", 11)
    ]
    # the scheduler skipping a removed job's run, a run failed at creation: no pid, any claim
    assert store.finish_run(other.id, "skipped", reason="job removed")
    assert store.get_run(other.id).state == "skipped"


def test_missed_ticks_and_last_tick(store):
    assert store.last_tick("etl") is None
    store.record_missed("etl", T0, "scheduler was down; catch-up is off")
    store.create_run("etl", "scheduled", T0 + timedelta(days=1))
    store.create_run("etl", "manual", T0 + timedelta(days=5))  # manual runs are not ticks
    assert store.last_tick("etl") == T0 + timedelta(days=1)
    missed = store.list_runs("etl", states="missed")
    assert [(r.logical_date, r.reason) for r in missed] == [
        (T0, "scheduler was down; catch-up is off")
    ]
    assert not store.claim_run(missed[0].id, 1)


def test_list_runs_filters_and_orders(store):
    for i in range(5):
        store.create_run("a", "scheduled", T0 + timedelta(hours=i))
    store.create_run("b", "backfill", T0)
    assert [r.logical_date.hour for r in store.list_runs("a", limit=2)] == [5, 4]
    assert [r.logical_date.hour for r in store.list_runs("a", oldest_first=True, limit=2)] == [1, 2]
    assert [r.job for r in store.list_runs(run_types="backfill")] == ["b"]
    assert len(store.list_runs(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))) == 3
    with pytest.raises(JobsError, match="did you mean `failed`"):
        store.list_runs(states="faild")


def test_jobs_add_pause_resume_remove(store):
    store.add_job("etl", {"cron": "30 2 * * *", "parameters": {"b": "1", "a": "2"}}, now=T0)
    with pytest.raises(JobExistsError, match="already exists"):
        store.add_job("etl", {}, now=T0)
    assert list(store.get_job("etl").spec["parameters"]) == ["b", "a"]  # order kept
    store.pause_job("etl", now=T0 + timedelta(hours=1))
    assert store.get_job("etl").paused
    assert store.list_jobs(include_paused=False) == []
    resumed = store.resume_job("etl", now=T0 + timedelta(hours=2))
    assert not resumed.paused and resumed.resumed_at == T0 + timedelta(hours=2)
    assert resumed.active_since == T0 + timedelta(hours=2)
    queued, _ = store.create_run("etl", "scheduled", T0 + timedelta(days=1))
    assert store.remove_job("etl") == 1
    assert store.get_run(queued.id).state == "skipped"  # history stays
    with pytest.raises(UnknownJobError, match="there are no jobs yet"):
        store.get_job("etl")


def test_unknown_job_suggests_a_near_name(store):
    store.add_job("daily_etl", {})
    with pytest.raises(UnknownJobError, match="did you mean `daily_etl`"):
        store.pause_job("daily_et")


def test_sensor_files_are_taken_once_per_path_and_content(store):
    assert not store.sensor_file_seen("ingest", "in/a.csv", "d1")
    assert store.record_sensor_file("ingest", "in/a.csv", "d1")
    assert not store.record_sensor_file("ingest", "in/a.csv", "d1")
    assert store.sensor_file_seen("ingest", "in/a.csv", "d1")
    assert store.record_sensor_file("ingest", "in/a.csv", "d2")  # changed content
    assert store.record_sensor_file("other", "in/a.csv", "d1")  # another job


def test_settings_round_trip(store):
    assert store.get_setting("smtp") is None
    store.set_setting("smtp", {"host": "127.0.0.1", "port": 2525})
    store.set_setting("smtp", {"host": "127.0.0.1", "port": 2526})
    assert store.get_setting("smtp") == {"host": "127.0.0.1", "port": 2526}
    assert store.delete_setting("smtp") and store.get_setting("smtp", "none") == "none"


def test_naive_times_are_refused(store):
    with pytest.raises(JobsError, match="no time zone"):
        store.create_run("etl", "scheduled", datetime(2024, 1, 1))


def test_a_reader_is_not_blocked_by_an_open_write_transaction(store):
    store.create_run("etl", "scheduled", T0)
    writer = sqlite3.connect(store.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs SET state = 'running'")
    try:
        # WAL: another connection still reads the last committed state at once
        assert [r.state for r in RunStore(store.path).list_runs()] == ["queued"]
    finally:
        writer.execute("ROLLBACK")


def test_a_reprocess_starts_a_new_retry_round_and_a_retry_does_not(store):
    from nbflow.jobs.attempt import _attempts_this_round

    run, _ = store.create_run("etl", "backfill", T0)
    for pid in (1, 2):  # two failed attempts: a job with retries=1 has used its budget
        store.claim_run(run.id, pid, now=T0)
        store.finish_run(run.id, "failed", error="boom", now=T0)
        store.requeue_run(run.id, now=T0)  # an ordinary retry keeps counting
    store.claim_run(run.id, 3, now=T0)
    store.finish_run(run.id, "failed", error="boom", now=T0)
    assert _attempts_this_round(store.get_run(run.id)) == 3
    assert store.requeue_run(run.id, new_round=True, reason="reprocess", now=T0)
    store.claim_run(run.id, 4, now=T0)
    again = store.get_run(run.id)
    assert (again.attempts, again.retry_base) == (4, 3)  # the history keeps every attempt
    assert _attempts_this_round(again) == 1


def test_a_file_of_the_first_schema_is_upgraded_in_place(home: Path):
    path = home / "nbflow.db"
    home.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, run_type TEXT NOT NULL,
            logical_date TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            pid INTEGER, heartbeat TEXT, queued_at TEXT NOT NULL, not_before TEXT,
            started_at TEXT, ended_at TEXT, duration REAL, output_path TEXT, error TEXT,
            reason TEXT, parameters TEXT NOT NULL DEFAULT '{}',
            UNIQUE (job, run_type, logical_date));
        INSERT INTO runs (job, run_type, logical_date, state, attempts, queued_at)
            VALUES ('etl', 'scheduled', '2024-03-31T01:00:00+00:00', 'failed', 2,
                    '2024-03-31T01:00:00.000000+00:00');
        PRAGMA user_version = 1;
        """
    )
    old.close()
    store = RunStore(path)
    (run,) = store.list_runs("etl")
    assert (run.attempts, run.retry_base) == (2, 0)
    assert store.requeue_run(run.id, new_round=True)
    assert store.get_run(run.id).retry_base == 2
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 4
    # version 3: the rebuilt table takes `cancelled`, keeps its rows, ids and indexes
    assert store.cancel_queued([run.id], "Ctrl-C") == [run.id]
    assert store.get_run(run.id).state == "cancelled"
    new, _ = store.create_run("etl", "scheduled", datetime(2024, 4, 1, tzinfo=UTC))
    assert new.id == run.id + 1
    indexes = {r[1] for r in sqlite3.connect(path).execute("PRAGMA index_list(runs)")}
    assert {"runs_by_state", "runs_by_job_date"} <= indexes


def test_a_version_3_file_gets_the_worker_column_and_keeps_its_runs(home: Path):
    """Version 4 adds `runs.worker` (where an attempt on Dask runs); a version-3 file, made
    by the schema as it was then, is upgraded in place and its runs read back unchanged."""
    from nbflow.jobs.runstore import schema as runstore

    path = home / "nbflow.db"
    home.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(path)
    old.executescript(
        runstore._RUNS_TABLE.replace("    worker       TEXT,\n", "").format(name="runs")
        + """;
        INSERT INTO runs (job, run_type, logical_date, state, attempts, queued_at, pid)
            VALUES ('etl', 'scheduled', '2024-03-31T01:00:00+00:00', 'queued', 0,
                    '2024-03-31T01:00:00.000000+00:00', NULL);
        PRAGMA user_version = 3;
        """
    )
    old.close()
    store = RunStore(path)
    (run,) = store.list_runs("etl")
    assert run.worker is None and run.state == "queued"
    columns = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(runs)")]
    assert columns[-1] == "worker"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 4
    attempt = store.claim_attempt(run.id, 7, now=T0)
    where = {"address": "tcp://10.0.0.5:4000", "host": "node5", "pid": 4242}
    assert not store.set_worker(run.id, where, pid=8, attempt=attempt)  # not that claim's
    assert store.set_worker(run.id, where, pid=7, attempt=attempt)
    assert store.get_run(run.id).worker == where
    assert store.get_run(run.id).to_dict()["worker"] == where
    store.finish_run(run.id, "crashed", now=T0)
    assert store.requeue_run(run.id)
    store.claim_attempt(run.id, 9, now=T0)
    assert store.get_run(run.id).worker is None  # a new attempt: not started on a worker yet


def test_cancel_queued_only_cancels_queued_runs(home: Path):
    store = RunStore()
    queued, _ = store.create_run("etl", "backfill", T0)
    running, _ = store.create_run("etl", "backfill", T0 + timedelta(hours=1))
    done, _ = store.create_run("etl", "backfill", T0 + timedelta(hours=2))
    store.claim_run(running.id, 1, now=T0)
    store.claim_run(done.id, 1, now=T0)
    store.finish_run(done.id, "success", now=T0)
    ids = [queued.id, running.id, done.id]
    assert store.cancel_queued(ids, "interrupted", now=T0) == [queued.id]
    assert [store.get_run(i).state for i in ids] == ["cancelled", "running", "success"]
    assert store.get_run(queued.id).reason == "interrupted"
    assert not store.finish_run(queued.id, "failed")  # terminal: final


def test_run_cells_are_the_newest_runs_in_brief(store):
    day = datetime(2024, 1, 1, 2, tzinfo=UTC)
    for i in range(5):
        store.create_run("etl", "scheduled", day + timedelta(days=i))
    cells = store.run_cells("etl", 3)
    assert [c[2] for c in cells] == [day + timedelta(days=i) for i in (4, 3, 2)]
    assert {(c[1], c[3]) for c in cells} == {("scheduled", "queued")}
    assert [c[0] for c in cells] == [r.id for r in store.list_runs("etl", limit=3)]

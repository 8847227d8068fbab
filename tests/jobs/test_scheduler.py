"""The scheduler's tick with an injected clock: downtime, catch-up, limits, sweep, file sensor.

The clock the scheduler sees is a fixed instant in 2024; runs it starts
execute in real child processes (with the real clock), so their heartbeats
are always newer than the injected `now` and never look stale unless a test
steps the clock past them on purpose.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nbflow.jobs.attempt import (
    AttemptOutcome,
    attempt_path_for,
    describe_outcome,
    execute_run,
    output_path_for,
    sweep,
)
from nbflow.jobs.launch import trigger_run
from nbflow.jobs.runstore import RunStore
from nbflow.jobs.scheduler import Scheduler, SchedulerLocked, _Child
from nbflow.jobs.schedules import Schedule
from tests.jobs.notebooks import write_notebook

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks"
T0 = datetime(2024, 1, 1, 0, 10, tzinfo=UTC)  # the job is added at 00:10 UTC
H = timedelta(hours=1)


@pytest.fixture
def store(home: Path) -> RunStore:
    return RunStore()


@pytest.fixture
def notebook(home: Path) -> Path:
    path = Path.cwd() / "job.ipynb"
    shutil.copy(FIXTURES / "scheduled_job.ipynb", path)
    return path


def add_job(store: RunStore, notebook: Path, name: str = "hourly", **spec) -> None:
    spec.setdefault("cron", "0 * * * *")
    job = Schedule(name=name, notebook=str(notebook), **spec)
    store.add_job(name, job.to_dict(), now=T0)


def states(store: RunStore, job: str = "hourly") -> list[tuple[str, str, str]]:
    return [
        (f"{r.logical_date:%H:%M}", r.run_type, r.state)
        for r in store.list_runs(job, oldest_first=True)
    ]


def wait_for(scheduler: Scheduler, now: datetime, done, timeout: float = 60.0) -> list[int]:
    """Tick at `now` until `done()`; returns the most runs seen running at one time."""
    most = []
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "runs did not finish in time"
        scheduler.tick_once(now)
        most.append(len(scheduler.active_counts()[1]))
        time.sleep(0.1)
    scheduler.kill_children()
    return most


def test_nothing_is_due_before_the_first_tick_after_the_job_was_added(store, notebook):
    add_job(store, notebook, start=datetime(2023, 1, 1, tzinfo=UTC))
    report = Scheduler(store).tick_once(T0 + timedelta(minutes=40), start=False)
    assert report.created == [] and report.missed == [] and states(store) == []
    # the first tick after `added` (01:00) is due at 01:00, not the ticks of 2023
    report = Scheduler(store).tick_once(T0 + timedelta(minutes=50), start=False)
    assert states(store) == [("01:00", "scheduled", "queued")]


def test_downtime_with_catchup_off_runs_the_latest_tick_and_records_the_others_missed(
    store, notebook
):
    add_job(store, notebook)
    scheduler = Scheduler(store)
    scheduler.tick_once(T0 + timedelta(minutes=1), start=False)  # up, nothing due yet
    # down from 00:11 to 03:05: the ticks at 01:00, 02:00 and 03:00 pass
    report = scheduler.tick_once(T0 + timedelta(hours=2, minutes=55), start=False)
    assert states(store) == [
        ("01:00", "scheduled", "missed"),
        ("02:00", "scheduled", "missed"),
        ("03:00", "scheduled", "queued"),
    ]
    assert len(report.missed) == 2 and len(report.created) == 1
    missed = store.list_runs("hourly", states="missed")
    assert all("catch-up is off" in r.reason for r in missed)
    # the next tick of a restarted scheduler records nothing twice
    Scheduler(store).tick_once(T0 + timedelta(hours=2, minutes=56), start=False)
    assert len(states(store)) == 3


def test_downtime_longer_than_the_grace_period_runs_nothing(store, notebook):
    # a job that ended at 02:30: after the downtime, its last tick (02:00) is 4 h late
    add_job(store, notebook, end=datetime(2024, 1, 1, 2, 30, tzinfo=UTC))
    Scheduler(store).tick_once(T0 + timedelta(hours=6), start=False)
    assert states(store) == [("01:00", "scheduled", "missed"), ("02:00", "scheduled", "missed")]
    assert "more than one schedule period" in store.list_runs("hourly")[0].reason


def test_downtime_with_catchup_runs_every_tick_in_order_one_at_a_time(store, notebook):
    log = Path.cwd() / "log.txt"
    add_job(store, notebook, catchup=True, max_active=1, parameters={"day": "{{ logical_date }}",
            "log": str(log)})  # fmt: skip
    scheduler = Scheduler(store, max_running=4)
    now = T0 + timedelta(hours=2, minutes=55)
    scheduler.tick_once(now, start=False)
    assert states(store) == [(f"0{h}:00", "scheduled", "queued") for h in (1, 2, 3)]
    most = wait_for(scheduler, now, lambda: store.count_runs("hourly", states=("success",)) == 3)
    assert max(most) == 1  # never more than --max-active at once
    runs = store.list_runs("hourly", oldest_first=True)
    for earlier, later in itertools.pairwise(runs):
        assert earlier.ended_at <= later.started_at  # in order, one after the other
    assert [line.split()[0][11:16] for line in log.read_text().splitlines()] == [
        "01:00",
        "02:00",
        "03:00",
    ]


def test_max_active_queues_the_excess_and_the_global_limit_caps_all_jobs(store, notebook):
    for name in ("a", "b"):
        add_job(store, notebook, name=name, catchup=True, max_active=2,
                parameters={"seconds": "30"})  # fmt: skip
    scheduler = Scheduler(store, max_running=3)
    now = T0 + timedelta(hours=3, minutes=55)  # four ticks due per job
    try:
        report = scheduler.tick_once(now)
        assert len(report.created) == 8
        started = [store.get_run(i).job for i in report.started]
        assert len(started) == 3 and started.count("a") == 2  # oldest first, a before b
        assert store.count_runs(states=("queued", "running")) == 8  # nothing dropped
        assert scheduler.tick_once(now).started == []  # limits still full
    finally:
        scheduler.kill_children()
    assert store.count_runs(states=("running",)) == 0  # handed back on the way out


def test_paused_jobs_wait_and_removed_jobs_are_skipped(store, notebook):
    add_job(store, notebook, name="p", catchup=True)
    add_job(store, notebook, name="r", catchup=True)
    scheduler = Scheduler(store)
    now = T0 + timedelta(minutes=55)
    scheduler.tick_once(now, start=False)
    store.pause_job("p")
    store.remove_job("r")
    assert scheduler.start_ready(now) == []
    assert states(store, "p") == [("01:00", "scheduled", "queued")]
    assert states(store, "r") == [("01:00", "scheduled", "skipped")]
    # resuming does not replay the paused time: no run for ticks before resumed_at
    store.resume_job("p", now=T0 + timedelta(hours=5, minutes=30))
    scheduler.tick_once(T0 + timedelta(hours=5, minutes=40), start=False)
    assert len(states(store, "p")) == 1


def test_the_sweep_marks_a_silent_run_crashed_and_retries_it_while_retries_remain(store, notebook):
    add_job(store, notebook, retries=1, retry_delay=60)
    run, _ = store.create_run("hourly", "scheduled", T0 + H)
    store.claim_run(run.id, 999_999, now=T0 + H)
    scheduler = Scheduler(store, heartbeat_timeout=30)
    assert scheduler.tick_once(T0 + H + timedelta(seconds=29), start=False).crashed == []
    (crashed,) = scheduler.tick_once(T0 + H + timedelta(seconds=31), start=False).crashed
    assert crashed.state == "queued" and crashed.attempts == 1  # requeued: a retry is left
    assert crashed.not_before == T0 + H + timedelta(seconds=91)
    assert "no heartbeat for 30 s" in crashed.error
    # the retry crashes too: no retry is left, it stays crashed
    store.claim_run(run.id, 999_999, now=T0 + 2 * H)
    (final,) = sweep(store, 30, now=T0 + 2 * H + timedelta(seconds=31))
    assert (final.state, final.attempts) == ("crashed", 2)


class Killed(BaseException):
    """The process dies here: nothing after this point runs (as after a SIGKILL)."""


def die_after_the_next_commit(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """`store`'s process 'dies' right after its next write transaction commits."""
    write = store._write

    @contextmanager
    def then_die():
        with write() as db:
            yield db
        raise Killed

    monkeypatch.setattr(store, "_write", then_die)


def test_a_sweep_killed_right_after_its_commit_has_already_queued_the_retry(
    store, notebook, monkeypatch
):
    add_job(store, notebook, retries=1, retry_delay=60)
    run, _ = store.create_run("hourly", "scheduled", T0 + H)
    store.claim_run(run.id, 999_999, now=T0 + H)
    die_after_the_next_commit(store, monkeypatch)
    with pytest.raises(Killed):
        sweep(store, 30, now=T0 + H + timedelta(seconds=31))
    after = RunStore().get_run(run.id)  # crashed and requeued in that one commit
    assert (after.state, after.attempts, after.not_before) == (
        "queued",
        1,
        T0 + H + timedelta(seconds=91),
    )
    assert "no heartbeat for 30 s" in after.error


def test_a_scheduler_killed_right_after_reaping_a_dead_runner_has_already_queued_the_retry(
    store, notebook, monkeypatch
):
    add_job(store, notebook, retries=1, retry_delay=60)
    run, _ = store.create_run("hourly", "scheduled", T0 + H)
    runner = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, never finishing the run
    runner.wait(timeout=30)
    store.claim_run(run.id, runner.pid, now=T0 + H)
    scheduler = Scheduler(store, echo=lambda line: None)
    scheduler.children[run.id] = _Child(store.get_run(run.id), runner)
    die_after_the_next_commit(store, monkeypatch)
    with pytest.raises(Killed):
        scheduler.reap(T0 + H + timedelta(seconds=5))
    after = RunStore().get_run(run.id)
    assert (after.state, after.attempts, after.not_before) == (
        "queued",
        1,
        T0 + H + timedelta(seconds=65),
    )
    assert "without finishing the run" in after.error


def test_terminal_states_are_final_for_the_sweep_the_runner_and_a_late_release(store, notebook):
    add_job(store, notebook)
    run, _ = store.create_run("hourly", "scheduled", T0 + H)
    outcome = execute_run(run.id, store=store)
    assert outcome.state == "success"
    done = store.get_run(run.id)
    assert sweep(store, 0.001, now=T0 + 1000 * H) == []
    assert not store.release_run(run.id)
    assert execute_run(run.id, store=store).state == "not claimed"  # a late second runner
    assert store.get_run(run.id) == done


def test_a_removed_jobs_running_attempt_is_left_to_its_runner(store, notebook):
    add_job(store, notebook)
    queued, _ = store.create_run("hourly", "scheduled", T0 + H)
    running, _ = store.create_run("hourly", "scheduled", T0 + 2 * H)
    assert store.claim_run(running.id, 4242)  # another runner's attempt
    store.remove_job("hourly")  # skips its queued runs itself
    assert (store.get_run(queued.id).state, store.get_run(queued.id).reason) == (
        "skipped",
        "job removed",
    )
    assert execute_run(queued.id, store=store).state == "not claimed"
    # A runner handed a run whose job is gone leaves another runner's attempt alone.
    assert execute_run(running.id, store=store).state == "not claimed"
    assert (store.get_run(running.id).state, store.get_run(running.id).pid) == ("running", 4242)


def eventually(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


GATED_CELL = """\
import os, time
with open(log, "a") as fh:
    fh.write(f"{os.getpid()}\\n")
with open(log) as fh:
    attempt = len(fh.read().split())
print(f"attempt {attempt} ran this notebook")
deadline = time.monotonic() + 120
while not os.path.exists(f"{gate}.{attempt}"):  # the test lets each attempt go on its own
    assert time.monotonic() < deadline, "never let go"
    time.sleep(0.05)
if attempt == 1:
    raise RuntimeError("attempt 1 fails, late")
"""


@pytest.mark.parametrize("first_to_end", ["stalled runner", "new owner"])
def test_a_stalled_runner_whose_attempt_was_taken_over_records_nothing_when_it_wakes(
    store, home, first_to_end
):
    """Runner A claims the run, then looks stalled (it never beats again); the sweep crashes
    its attempt and queues the retry; runner B claims and runs it. A's late end (a failure)
    must not end B's attempt, send an alert, or put A's notebook in the run's place."""
    work = Path.cwd()
    log, gate, alerts = work / "log.txt", work / "gate", work / "alerts.txt"
    notebook = write_notebook(work / "gated.ipynb", 'log = ""\ngate = ""', [GATED_CELL])
    record = f'echo "$NBFLOW_STATE $NBFLOW_ATTEMPTS" >> {alerts}'
    job = Schedule(
        name="gated",
        notebook=str(notebook),
        cron="0 0 1 1 *",
        retries=1,
        retry_delay=0,
        parameters={"log": str(log), "gate": str(gate)},
        on_success=(record,),
        on_failure=(record,),
        on_retry=(record,),
    )
    store.add_job("gated", job.to_dict())
    run = trigger_run(store, "gated")
    outcomes: dict[str, AttemptOutcome] = {}

    def runner(name: str, pid: int, interval: float | None) -> threading.Thread:
        def work() -> None:
            outcomes[name] = execute_run(run.id, store=store, pid=pid, interval=interval)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return thread

    def attempts_in_the_notebook() -> int:
        return len(log.read_text().split()) if log.exists() else 0

    a = runner("A", 4_000_001, 3600.0)  # claims, then never refreshes its heartbeat
    eventually(lambda: attempts_in_the_notebook() == 1, "attempt 1's kernel")
    # a sweep with a heartbeat timeout of 0.2 s finds A silent: crashed, retry queued
    (crashed,) = eventually(lambda: sweep(store, 0.2), "the sweep to find A stale")
    assert (crashed.state, crashed.attempts) == ("queued", 1)
    b = runner("B", 4_000_002, None)
    eventually(lambda: attempts_in_the_notebook() == 2, "attempt 2's kernel")
    taken = store.get_run(run.id)
    assert (taken.state, taken.pid, taken.attempts) == ("running", 4_000_002, 2)

    if first_to_end == "stalled runner":  # A wakes while B runs
        Path(f"{gate}.1").touch()
        a.join(60)
        after = store.get_run(run.id)
        assert (after.state, after.pid, after.attempts, after.ended_at) == (
            "running",
            4_000_002,
            2,
            None,
        )
        assert after.output_path == str(attempt_path_for(output_path_for(home, run), 2))
        Path(f"{gate}.2").touch()
        b.join(60)
    else:  # B ends the run, then A wakes
        Path(f"{gate}.2").touch()
        b.join(60)
        ended_by_b = store.get_run(run.id)
        Path(f"{gate}.1").touch()
        a.join(60)
        assert store.get_run(run.id) == ended_by_b

    late, owner = outcomes["A"], outcomes["B"]
    assert (late.state, late.attempt, late.discarded) == ("taken over", 1, "failed")
    assert (owner.state, owner.attempt) == ("success", 2)
    assert "taken over" in describe_outcome(late) and "(failed) was not recorded" in (
        describe_outcome(late)
    )
    done = store.get_run(run.id)
    assert (done.state, done.attempts, done.pid, done.error) == ("success", 2, 4_000_002, None)
    out = output_path_for(home, run)
    assert done.output_path == str(out)
    text = "".join(
        "".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"]
        for o in c.get("outputs", [])
    )  # fmt: skip
    assert "attempt 2 ran this notebook" in text and "attempt 1" not in text  # B's notebook
    assert list((out.parent / ".attempts").iterdir()) == []  # A's working copy is gone
    # the sweep's alert for A's crash, then B's success; nothing from A
    assert alerts.read_text().splitlines() == ["crashed 1", "success 2"]


def test_reap_leaves_a_run_its_dead_child_no_longer_holds(store, notebook):
    add_job(store, notebook, retries=1, retry_delay=0)
    run, _ = store.create_run("hourly", "scheduled", T0 + H)
    runner = subprocess.Popen([sys.executable, "-c", "pass"])
    runner.wait(timeout=30)
    store.claim_run(run.id, runner.pid, now=T0 + H)
    scheduler = Scheduler(store, echo=lambda line: None)
    scheduler.children[run.id] = _Child(store.get_run(run.id), runner)
    # before the scheduler reaps it, the sweep crashed that attempt and another took the retry
    sweep(store, 30, now=T0 + H + timedelta(seconds=31))
    assert store.claim_attempt(run.id, 999_999, now=T0 + 2 * H) == 2
    taken = store.get_run(run.id)
    scheduler.reap(T0 + 2 * H)
    assert store.get_run(run.id) == taken  # still the new claim's, running


def test_one_scheduler_per_home(store):
    first = Scheduler(store)
    first.acquire_lock()
    try:
        with pytest.raises(SchedulerLocked, match=r"pid \d+") as caught:
            Scheduler(RunStore()).acquire_lock()
        assert "already running" in str(caught.value)
    finally:
        first.release_lock()
    Scheduler(store).acquire_lock()  # free again


def test_file_sensor_runs_once_per_new_or_changed_file(store, notebook):
    inbox = Path.cwd() / "in"
    inbox.mkdir()
    job = Schedule(name="files", notebook=str(notebook), when_file=str(inbox / "*.csv"))
    store.add_job("files", job.to_dict(), now=T0)
    scheduler = Scheduler(store)
    (inbox / "a.csv").write_text("1,2\n")
    (inbox / "b.csv").write_text("3,4\n")
    (inbox / "ignored.txt").write_text("x")
    report = scheduler.tick_once(T0 + H, start=False)
    assert sorted(r.parameters["path"] for r in report.sensed) == [
        str(inbox / "a.csv"),
        str(inbox / "b.csv"),
    ]
    assert {r.run_type for r in report.sensed} == {"sensor"}
    assert scheduler.tick_once(T0 + 2 * H, start=False).sensed == []  # seen: nothing new
    (inbox / "a.csv").write_text("1,2\n")  # rewritten, same content: nothing
    assert Scheduler(store).tick_once(T0 + 3 * H, start=False).sensed == []
    (inbox / "a.csv").write_text("5,6\n")  # changed: one more run
    (changed,) = scheduler.tick_once(T0 + 4 * H, start=False).sensed
    assert changed.parameters["path"] == str(inbox / "a.csv")
    # the run gets the file's path as its `path` parameter
    outcome = execute_run(changed.id, store=store)
    assert outcome.state == "success", outcome.run.error
    assert store.count_runs("files", states=("queued",)) == 2


def test_a_sensed_file_name_is_a_value_never_a_template(store, notebook):
    """Issue 22 item 4: a file dropped into a watched folder cannot run code in the
    scheduler, and its name reaches the notebook exactly as it is."""
    inbox = Path.cwd() / "in"
    inbox.mkdir()
    job = Schedule(name="files", notebook=str(notebook), when_file=str(inbox / "*.csv"))
    store.add_job("files", job.to_dict(), now=T0)
    sum_file = inbox / "sum_{{ 7 * 7 }}.csv"
    attack = inbox / "x{{ cycler.__init__.__globals__.os.system('touch PWNED') }}.csv"
    sum_file.write_text("49\n")
    attack.write_text("attack\n")
    report = Scheduler(store).tick_once(T0 + H, start=False)
    assert sorted(r.parameters["path"] for r in report.sensed) == sorted(
        [str(sum_file), str(attack)]
    )
    assert all(r.state == "queued" for r in report.sensed)
    for run in report.sensed:
        outcome = execute_run(run.id, store=store)
        assert outcome.state == "success", outcome.run.error
    assert not (Path.cwd() / "PWNED").exists()


def test_the_ticks_one_tick_computes_are_bounded_not_the_downtime(store, notebook):
    """Issue 22 item 13: a one-second interval after 30 days away is the latest
    MISSED_CATCHUP_LIMIT ticks, not a list of 2.6 million instants."""
    from nbflow.jobs.scheduler import MISSED_CATCHUP_LIMIT

    add_job(store, notebook, cron=None, every=1.0)
    record = store.get_job("hourly")
    now = T0 + timedelta(days=30)
    due = Scheduler(store).due_ticks(record, now)
    assert len(due) == MISSED_CATCHUP_LIMIT
    assert due[-1] == now and due[0] == now - timedelta(seconds=MISSED_CATCHUP_LIMIT - 1)
    # a short downtime still yields every tick since the job was added (00:10:00 included)
    assert len(Scheduler(store).due_ticks(record, T0 + timedelta(seconds=90))) == 91


def test_a_backfilled_tick_is_not_scheduled_again(store, notebook):
    """Issue 22 item 11: backfill tick T, then the scheduler's tick at T: one notebook run."""
    from nbflow.jobs.launch import plan_backfill

    log = Path.cwd() / "log.txt"
    tick = T0 + timedelta(seconds=30)
    add_job(store, notebook, cron=None, every=30.0, start=tick, parameters={
            "day": "{{ logical_date }}", "log": str(log)})  # fmt: skip
    plan = plan_backfill(store, "hourly", tick, tick, now=T0)
    (run_id,) = plan.run_ids
    assert execute_run(run_id, store=store).state == "success"
    queued_tick = tick + timedelta(seconds=30)  # a backfill still queued covers its tick too
    plan_backfill(store, "hourly", queued_tick, queued_tick, now=T0)
    scheduler = Scheduler(store)
    report = scheduler.tick_once(tick + timedelta(seconds=1), start=False)
    assert report.created == [] and report.missed == []
    report = scheduler.tick_once(queued_tick + timedelta(seconds=1), start=False)
    assert report.created == []
    assert [(r.run_type, r.state) for r in store.list_runs("hourly", oldest_first=True)] == [
        ("backfill", "success"),
        ("scheduled", "skipped"),
        ("backfill", "queued"),
        ("scheduled", "skipped"),
    ]
    skipped = store.find_run("hourly", "scheduled", tick)
    assert skipped.reason == f"logical date already covered by backfill run {run_id} (success)"
    assert len(log.read_text().splitlines()) == 1
    # the next tick, not covered, is scheduled as usual
    later = scheduler.tick_once(queued_tick + timedelta(seconds=31), start=False)
    assert [r.logical_date for r in later.created] == [queued_tick + timedelta(seconds=30)]


def test_one_tick_makes_at_most_runs_per_tick_sensor_runs(store, notebook, monkeypatch):
    """Issue 22 item 13: the work one tick may create is bounded for file sensors too."""
    import nbflow.jobs.file_sensor as sensors

    monkeypatch.setattr(sensors, "RUNS_PER_TICK", 3)
    inbox = Path.cwd() / "in"
    inbox.mkdir()
    for i in range(5):
        (inbox / f"{i}.csv").write_text(str(i))
    job = Schedule(name="files", notebook=str(notebook), when_file=str(inbox / "*.csv"))
    store.add_job("files", job.to_dict(), now=T0)
    scheduler = Scheduler(store)
    assert len(scheduler.tick_once(T0 + H, start=False).sensed) == 3
    assert len(scheduler.tick_once(T0 + 2 * H, start=False).sensed) == 2
    assert scheduler.tick_once(T0 + 3 * H, start=False).sensed == []


def test_a_yearly_interval_job_ticks_without_overflow(store, notebook):
    add_job(store, notebook, cron=None, every=365 * 86400.0)
    report = Scheduler(store).tick_once(T0 + timedelta(days=400), start=False)
    assert len(report.created) + len(report.missed) == 1

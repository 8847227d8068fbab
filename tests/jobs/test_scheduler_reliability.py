"""The scheduler under SIGKILL, with real processes: no duplicate run, no lost run, no orphan.

Each test runs `nbflow scheduler` (and through it the runner children and their
kernels) as real processes. Faults are injected with `NBFLOW_FAULT=POINT`: the
process SIGKILLs itself at that point; `NBFLOW_FAULT_ONCE_DIR` makes each point
fire once, so the restarted scheduler gets past it. Heartbeats are every 0.3 s
and the heartbeat timeout is 2 s, so a crash is noticed in seconds.

"No orphan" is checked by looking for any process whose environment carries
this test's NBFLOW_HOME (the scheduler, its runners and their kernels all do).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from nbflow.jobs.runstore import RunStore, utc_now
from nbflow.jobs.schedules import Schedule

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks"
HEARTBEAT = {"NBFLOW_HEARTBEAT_INTERVAL": "0.3", "NBFLOW_HEARTBEAT_TIMEOUT": "2"}

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(),
    reason="Linux only: these tests find runner and kernel processes by their environment in /proc, which this OS lacks",
)


@pytest.fixture
def notebook(home: Path) -> Path:
    path = Path.cwd() / "job.ipynb"
    shutil.copy(FIXTURES / "scheduled_job.ipynb", path)
    return path


def scheduler(home: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """`nbflow scheduler ARGS` as a real process (stderr captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "nbflow.cli", "scheduler", "--poll", "0.2", *args],
        env={**os.environ, "NBFLOW_HOME": str(home), **HEARTBEAT, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_of(home: Path) -> list[int]:
    """Live processes (other than this one) whose environment has NBFLOW_HOME=home."""
    needle = f"NBFLOW_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def eventually(check: Callable[[], object], timeout: float = 30, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.1)


def no_processes_left(home: Path) -> None:
    eventually(lambda: not processes_of(home), 10, f"processes of {home} to exit")


def add_interval_job(store: RunStore, notebook: Path, *, catchup: bool, **spec) -> Schedule:
    """A job whose ticks already passed: added 65 minutes ago, every 30 minutes, ended now
    (so no new tick comes due while the test runs): two or three ticks are due."""
    now = utc_now()
    job = Schedule(
        name="job",
        notebook=str(notebook),
        every=1800,
        end=now,
        catchup=catchup,
        max_active=2,
        retries=1,
        retry_delay=0,
        parameters={"day": "{{ logical_date }}", "log": str(Path.cwd() / "log.txt"), **spec},
    )
    store.add_job("job", job.to_dict(), now=now - timedelta(minutes=65))
    return job


@pytest.mark.parametrize(
    ("point", "catchup"),
    [
        ("scheduler:after-tick", False),
        ("scheduler:after-insert", True),
        ("scheduler:after-spawn", False),
        ("runner:kernel-started", False),
        ("runner:before-finish", True),
    ],
)
def test_sigkill_at_a_fault_point_then_restart_gives_one_run_and_one_notebook_per_date(
    home, notebook, tmp_path, point, catchup
):
    store = RunStore()
    job = add_interval_job(store, notebook, catchup=catchup)
    record = store.get_job("job")
    due = job.ticks_between(record.active_since - timedelta(microseconds=1), job.end)
    assert len(due) in (2, 3)
    marks = tmp_path / "faults"
    marks.mkdir()
    fault = {"NBFLOW_FAULT": point, "NBFLOW_FAULT_ONCE_DIR": str(marks)}

    code, err = finish(scheduler(home, "--once", **fault))
    assert (marks / point.replace(":", "-")).exists(), err  # the fault did fire
    if point.startswith("scheduler:"):
        assert code == -signal.SIGKILL, err
        code, err = finish(scheduler(home, "--once", **fault))  # the restart
    assert code == 0, err

    runs = store.list_runs("job", oldest_first=True)
    assert [r.logical_date for r in runs] == due  # exactly one run per logical date
    expected = ["success"] * len(due) if catchup else ["missed"] * (len(due) - 1) + ["success"]
    assert [r.state for r in runs] == expected, [(r.state, r.error) for r in runs]
    ran = [r for r in runs if r.state == "success"]
    notebooks = sorted((home / "runs" / "job").glob("*.ipynb"))
    assert notebooks == sorted(Path(r.output_path) for r in ran)  # one notebook per run
    if point.startswith("runner:"):
        assert max(r.attempts for r in ran) == 2  # the killed attempt was retried
    no_processes_left(home)


def test_sigkill_right_after_a_failed_attempt_is_committed_still_retries_the_run(
    home, notebook, tmp_path
):
    """The attempt's end and its retry are one commit: a runner killed right after it
    (`runner:after-finish`) leaves the run queued for its retry, not failed."""
    store = RunStore()
    alerts = Path.cwd() / "alerts.txt"
    run_id = _one_manual_run(
        store,
        notebook,
        retry_delay=1,
        parameters={"fail_times": "1"},
        on_retry=(f'echo "retry $NBFLOW_STATE $NBFLOW_ATTEMPTS" >> {alerts}',),
        on_success=(f'echo "success $NBFLOW_ATTEMPTS" >> {alerts}',),
    )
    marks = tmp_path / "faults"
    marks.mkdir()
    fault = {"NBFLOW_FAULT": "runner:after-finish", "NBFLOW_FAULT_ONCE_DIR": str(marks)}

    # the first attempt fails; its runner is SIGKILLed right after committing that
    code, err = finish(scheduler(home, "--once", **fault))
    assert code == 0, err
    assert (marks / "runner-after-finish").exists(), err  # the fault did fire
    killed = store.get_run(run_id)
    assert (killed.state, killed.attempts) == ("queued", 1), (killed.state, killed.error, err)
    assert "attempt 1 fails on purpose" in killed.error  # the failed attempt's error shows
    assert killed.not_before >= killed.started_at + timedelta(seconds=1)  # its retry delay
    assert "crashed" not in err  # the scheduler saw its child die, the run was already settled

    # after the retry delay, the retry runs (and succeeds: only the first attempt fails)
    time.sleep(max((killed.not_before - utc_now()).total_seconds(), 0.0) + 0.1)
    code, err = finish(scheduler(home, "--once", **fault))
    assert code == 0, err
    done = store.get_run(run_id)
    assert (done.state, done.attempts, done.error) == ("success", 2, None), err
    assert len((Path.cwd() / "log.txt").read_text().splitlines()) == 2  # two attempts ran
    assert len(list((home / "runs" / "job").glob("*.ipynb"))) == 1
    # alerts are sent after the commit: the killed runner's `retry` alert is lost (at most
    # once, never the retry itself)
    assert alerts.read_text().splitlines() == ["success 2"]
    no_processes_left(home)


def start_long_run(home: Path, notebook: Path, *args: str) -> tuple[subprocess.Popen, int, int]:
    """A scheduler running a run whose first attempt sleeps; returns it, runner and kernel pid."""
    store = RunStore()
    alerts = Path.cwd() / "alerts.txt"
    run = store.get_run(
        _one_manual_run(
            store,
            notebook,
            retry_delay=0,
            parameters={"seconds": "120"},
            on_retry=(f'echo "$NBFLOW_STATE $NBFLOW_ATTEMPTS" >> {alerts}',),
        )
    )
    daemon = scheduler(home, *args)
    log = Path.cwd() / "log.txt"
    eventually(lambda: log.exists() and log.read_text().strip(), 60, "the kernel to start")
    kernel = int(log.read_text().split()[1])
    runner = store.get_run(run.id).pid
    assert runner and alive(runner) and alive(kernel)
    return daemon, runner, kernel


def _one_manual_run(
    store: RunStore,
    notebook: Path,
    *,
    retry_delay: float,
    parameters: dict[str, str],
    **alerts: tuple[str, ...],
) -> int:
    """Job `job` (one retry; logs to log.txt; never due by itself) and one queued manual run
    of it, for a scheduler to pick up. Returns the run's id."""
    from nbflow.jobs.launch import trigger_run

    job = Schedule(
        name="job",
        notebook=str(notebook),
        cron="0 0 1 1 *",
        retries=1,
        retry_delay=retry_delay,
        parameters={**parameters, "log": str(Path.cwd() / "log.txt")},
        **alerts,
    )
    store.add_job("job", job.to_dict())
    return trigger_run(store, "job").id


def test_sigkill_of_kernel_runner_and_scheduler_the_sweep_crashes_and_retries_the_run(
    home, notebook
):
    daemon, runner, kernel = start_long_run(home, notebook)
    os.kill(daemon.pid, signal.SIGSTOP)  # frozen: it cannot reap its child before dying
    os.kill(kernel, signal.SIGKILL)
    os.kill(runner, signal.SIGKILL)
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait(timeout=10)
    store = RunStore()
    (run,) = store.list_runs("job")
    assert run.state == "running"  # stuck, until a scheduler's sweep looks at it

    restarted = scheduler(home)
    try:
        eventually(lambda: store.get_run(run.id).state == "success", 60, "the retry")
    finally:
        restarted.send_signal(signal.SIGTERM)
        code, err = finish(restarted)
    assert code == 0, err
    done = store.get_run(run.id)
    assert done.attempts == 2 and done.output_path
    assert Path("alerts.txt").read_text().split() == ["crashed", "1"]  # crashed, then retried
    assert len(list((home / "runs" / "job").glob("*.ipynb"))) == 1
    no_processes_left(home)


def test_sigkill_of_the_runner_leaves_no_orphan_kernel_and_the_run_is_retried(home, notebook):
    daemon, runner, kernel = start_long_run(home, notebook)
    try:
        os.kill(runner, signal.SIGKILL)
        eventually(lambda: not alive(kernel), 10, "the orphaned kernel to exit")
        store = RunStore()
        (run,) = store.list_runs("job")
        eventually(lambda: store.get_run(run.id).state == "success", 60, "the retry")
        assert store.get_run(run.id).attempts == 2
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon)
    assert code == 0, err
    assert "crashed (the runner process" in err
    no_processes_left(home)


def test_sigkill_of_the_scheduler_hands_the_run_back_and_a_restart_runs_it(home, notebook):
    daemon, runner, kernel = start_long_run(home, notebook)
    daemon.kill()
    daemon.wait(timeout=10)
    no_processes_left(home)  # the runner noticed, handed its run back and exited; the kernel too
    store = RunStore()
    (run,) = store.list_runs("job")
    assert (run.state, run.attempts) == ("queued", 0)
    code, err = finish(scheduler(home, "--once"))
    assert code == 0, err
    done = store.get_run(run.id)
    assert (done.state, done.attempts) == ("success", 1)


def test_sigterm_hands_running_runs_back_and_exits_0(home, notebook):
    daemon, runner, kernel = start_long_run(home, notebook, "--grace", "0.5")
    daemon.send_signal(signal.SIGTERM)
    code, err = finish(daemon, timeout=30)
    assert code == 0, err
    assert "handed back to the queue" in err
    (run,) = RunStore().list_runs("job")
    assert (run.state, run.attempts, run.pid) == ("queued", 0, None)
    no_processes_left(home)


def test_a_second_scheduler_on_the_same_home_exits_1_naming_the_first(home):
    RunStore()
    first = scheduler(home)
    try:
        lock = home / "scheduler.lock"
        eventually(lambda: lock.exists() and lock.read_text().strip(), 30, "the first scheduler")
        code, err = finish(scheduler(home, "--once"), timeout=30)
        assert code == 1
        assert f"pid {first.pid}" in err and "already running" in err
    finally:
        first.send_signal(signal.SIGTERM)
        assert finish(first)[0] == 0


def test_a_runner_stopped_past_the_heartbeat_timeout_frees_its_slot_and_is_killed(home, notebook):
    """Issue 22 item 12: SIGSTOP the runner of a job with --max-active 1. The sweep crashes
    its attempt and queues the retry; the stopped runner is killed and the retry starts
    at once instead of waiting for the stopped process to continue."""
    daemon, runner, kernel = start_long_run(home, notebook)
    store = RunStore()
    (run,) = store.list_runs("job")
    try:
        os.kill(runner, signal.SIGSTOP)
        eventually(lambda: not alive(runner), 30, "the stopped runner to be killed")
        done = eventually(
            lambda: (r := store.get_run(run.id)).state == "success" and r, 60, "the retry"
        )
        assert done.attempts == 2 and done.pid != runner
        eventually(lambda: not alive(kernel), 10, "the stopped runner's kernel to exit")
    finally:
        if alive(runner):
            os.kill(runner, signal.SIGCONT)
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon)
    assert code == 0, err
    assert f"runner pid {runner} missed its heartbeat for 2 s; killed it" in err
    assert Path("alerts.txt").read_text().split() == ["crashed", "1"]
    no_processes_left(home)


def test_scheduler_once_ends_with_a_summary_and_the_next_tick(home, notebook):
    """Issue 17 item 5: what `--once` did (started, finished, failed, missed), and when
    the next tick is due."""
    store = RunStore()
    add_interval_job(store, notebook, catchup=False)  # its latest tick runs, older ones missed
    hourly = Schedule(name="later", notebook=str(notebook), cron="0 * * * *")
    store.add_job("later", hourly.to_dict())
    code, err = finish(scheduler(home, "--once"))
    assert code == 0, err
    last = err.strip().splitlines()[-1]
    missed = store.count_runs("job", states=("missed",))
    assert missed >= 1
    assert last.startswith(
        f"scheduler --once: 1 run(s) started, 1 finished (1 success, 0 failed), {missed} missed; "
        "next tick due "
    ), err
    nxt = (utc_now() + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    assert last.endswith(f"{nxt:%Y-%m-%d %H:%M} UTC (job `later`)"), last

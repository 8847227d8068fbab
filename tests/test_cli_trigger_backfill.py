"""`nbflow trigger` and `nbflow backfill` through the command line, with real notebook runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner, Result

from nbflow.cli import cli
from nbflow.jobs.runstore import RunStore

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"


@pytest.fixture
def notebook(home: Path) -> Path:
    path = Path.cwd() / "job.ipynb"
    path.write_bytes((FIXTURES / "scheduled_job.ipynb").read_bytes())
    return path


def nbflow(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def add_daily(*extra: str) -> None:
    result = nbflow(
        "schedule", "add", "etl", "job.ipynb", "--cron", "0 2 * * *", "--tz", "Europe/Berlin",
        "-p", "day", "{{ ds }}", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_backfill_runs_one_run_per_tick_and_a_second_backfill_skips_them(notebook, home):
    add_daily("-p", "log", str(Path.cwd() / "log.txt"))
    result = nbflow("backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-03")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("run ")]
    assert len(lines) == 3 and all(": success in " in line for line in lines)
    assert [line.split()[3] for line in lines] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert "3 run(s): 3 success" in result.output
    runs = RunStore().list_runs("etl", oldest_first=True)
    assert [(r.run_type, r.state, r.attempts) for r in runs] == [("backfill", "success", 1)] * 3
    # the bare --end date reached 02:00 Berlin on 3 January; {{ ds }} is the local date
    assert [r.parameters["day"] for r in runs] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    for run in runs:
        out = Path(run.output_path)
        assert out.parent == home / "runs" / "etl" and out.is_file()
        assert out.name == f"etl-{run.logical_date:%Y%m%dT%H%M%SZ}-{run.id}.ipynb"
        # papermill's record of where the notebook is: where it was published
        assert nbformat.read(out, as_version=4).metadata.papermill.output_path == str(out)
    for folder in (home / "runs", home / "runs" / "etl"):  # output notebooks may hold data
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    assert Path("log.txt").read_text().split()[::2] == ["2024-01-01", "2024-01-02", "2024-01-03"]

    again = nbflow("backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-03")
    assert again.exit_code == 0, again.output
    assert "skipped 3 tick(s): already succeeded" in again.output
    assert RunStore().count_runs("etl", states=("success",)) == 3
    assert len(Path("log.txt").read_text().splitlines()) == 3  # nothing ran again

    everything = nbflow("backfill", "etl", "--start", "2024-01-02", "--end", "2024-01-02",
                        "--reprocess", "all")  # fmt: skip
    assert everything.exit_code == 0, everything.output
    assert len(Path("log.txt").read_text().splitlines()) == 4
    assert len(RunStore().list_runs("etl")) == 3  # reopened, not duplicated


def test_a_failed_backfill_run_exits_1_and_reprocess_failed_runs_it_again(notebook):
    add_daily("-p", "log", str(Path.cwd() / "log.txt"), "-p", "fail_times", "1")
    result = nbflow("backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-01")
    assert result.exit_code == 1, result.output
    assert "failed" in result.output and "attempt 1 fails on purpose" in result.output
    (run,) = RunStore().list_runs("etl")
    assert run.state == "failed" and "RuntimeError" in run.error
    assert Path(run.output_path).is_file()  # the failed run keeps its output notebook

    skipped = nbflow("backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-01")
    assert "already ran and failed" in skipped.output and "--reprocess failed" in skipped.output
    retried = nbflow("backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-01",
                     "--reprocess", "failed")  # fmt: skip
    assert retried.exit_code == 0, retried.output
    (again,) = RunStore().list_runs("etl")
    assert again.id == run.id and again.state == "success" and again.attempts == 2


def test_retries_wait_their_delay_and_alert_each_retry(notebook):
    alerts = Path.cwd() / "alerts.txt"
    add_daily(
        "-p", "log", str(Path.cwd() / "log.txt"), "-p", "fail_times", "2",
        "--retries", "2", "--retry-delay", "0.5",
        "--on-retry", f'echo "retry $NBFLOW_ATTEMPTS $NBFLOW_STATE" >> {alerts}',
        "--on-success", f'echo "success $NBFLOW_ATTEMPTS" >> {alerts}',
    )  # fmt: skip
    result = nbflow("backfill", "etl", "--start", "2024-01-05", "--end", "2024-01-05")
    assert result.exit_code == 0, result.output
    assert result.output.count("retrying") == 2
    (run,) = RunStore().list_runs("etl")
    assert (run.state, run.attempts) == ("success", 3)
    assert alerts.read_text().splitlines() == ["retry 1 failed", "retry 2 failed", "success 3"]


def test_trigger_runs_now_with_overrides_as_a_manual_run(notebook):
    add_daily()
    result = nbflow("trigger", "etl", "-p", "day", "2030-05-06", "-p", "seconds", "0.1")
    assert result.exit_code == 0, result.output
    assert "success" in result.output and "1 run(s): 1 success" in result.output
    (run,) = RunStore().list_runs("etl")
    assert run.run_type == "manual" and run.parameters["day"] == "2030-05-06"
    assert run.logical_date.microsecond != 0  # never a scheduled tick's slot
    nb = json.loads(Path(run.output_path).read_text())
    assert any("2030-05-06" in "".join(c["source"]) for c in nb["cells"])


def test_trigger_refuses_an_unknown_parameter_and_stores_nothing(notebook):
    add_daily()
    result = CliRunner().invoke(cli, ["trigger", "etl", "-p", "dy", "x"])
    assert result.exit_code == 2
    assert "no parameter `dy`" in result.output and "day" in result.output
    assert RunStore().list_runs("etl") == []


def test_detach_only_queues_the_runs(notebook):
    add_daily()
    result = nbflow("backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-02", "--detach")
    assert result.exit_code == 0 and "queued 2 run(s)" in result.output
    trig = nbflow("trigger", "etl", "--detach")
    assert trig.exit_code == 0 and "queued run" in trig.output
    states = [(r.run_type, r.state) for r in RunStore().list_runs("etl", oldest_first=True)]
    assert states == [("backfill", "queued"), ("backfill", "queued"), ("manual", "queued")]
    # a queued backfill run is never duplicated by a second backfill
    again = nbflow("backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-02", "--detach")
    assert "already queued" in again.output
    assert RunStore().count_runs("etl") == 3


def test_unknown_job_and_reversed_range_are_clear_errors(notebook):
    add_daily()
    bad = CliRunner().invoke(
        cli, ["backfill", "etll", "--start", "2024-01-01", "--end", "2024-01-02"]
    )
    assert bad.exit_code == 2 and "did you mean `etl`" in bad.output
    rev = CliRunner().invoke(
        cli, ["backfill", "etl", "--start", "2024-01-05", "--end", "2024-01-02"]
    )
    assert rev.exit_code == 2 and "before --start" in rev.output


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(
    not Path("/proc/self/stat").exists(),
    reason="Linux only: the test checks the stopped kernel is gone through /proc, which this OS lacks",
)
@pytest.mark.parametrize("command", ["backfill", "trigger"])
def test_ctrl_c_stops_the_running_notebook_cancels_the_rest_and_exits_130(notebook, home, command):
    """Issue 17 item 3: a real SIGINT to a real foreground `nbflow backfill`/`trigger`."""
    log = Path.cwd() / "log.txt"
    add_daily("-p", "log", str(log), "-p", "seconds", "120", "--retries", "2",
              "--retry-delay", "0")  # fmt: skip
    args = ["backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-03"]
    if command == "trigger":
        args = ["trigger", "etl"]
    process = subprocess.Popen(
        [sys.executable, "-m", "nbflow", *args],
        env={**os.environ, "NBFLOW_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().strip()):
        assert time.monotonic() < deadline and process.poll() is None, "the kernel did not start"
        time.sleep(0.1)
    kernel = int(log.read_text().split()[1])
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    runs = RunStore().list_runs("etl", oldest_first=True)
    assert {r.state for r in runs} == {"cancelled"}
    first, *queued = runs
    assert first.attempts == 1 and first.duration is not None  # it was running: stopped
    assert "interrupted: stopped the notebook of run(s) 1" in err
    if command == "backfill":
        assert [r.attempts for r in queued] == [0, 0]
        assert "cancelled 2 queued run(s) (2, 3)" in err
    assert "Aborted" not in err and "KeyboardInterrupt" not in err + out
    assert len(log.read_text().splitlines()) == 1  # no retry, nothing else started
    deadline = time.monotonic() + 10
    while _alive(kernel):
        assert time.monotonic() < deadline, "the stopped notebook's kernel is still alive"
        time.sleep(0.1)
    table = CliRunner().invoke(cli, ["runs", "etl"], env={"COLUMNS": "200"}).output
    assert table.count("cancelled") >= len(runs)
    # a later backfill runs cancelled ticks again (they never finished)
    if command == "backfill":
        plan = nbflow("backfill", "etl", "--start", "2024-01-02", "--end", "2024-01-02",
                      "--detach")  # fmt: skip
        assert "1 to run" in plan.output, plan.output


def add_quarter_hourly() -> None:
    result = nbflow("schedule", "add", "q", "job.ipynb", "--every", "15m", "-p", "day", "{{ ds }}")
    assert result.exit_code == 0, result.output


def test_a_large_backfill_without_a_terminal_is_refused_unless_yes(notebook):
    """Issue 17 item 4: 96 runs for one day of a 15-minute job; no terminal to ask."""
    add_quarter_hourly()
    refused = CliRunner().invoke(
        cli, ["backfill", "q", "--start", "2024-01-01", "--end", "2024-01-01", "--detach"]
    )
    assert refused.exit_code == 2
    assert "96 tick(s) from 2024-01-01 to 2024-01-01 make 96 new run(s)" in refused.stderr
    assert "more than 25, and there is no terminal to ask; add --yes" in refused.stderr
    assert RunStore().list_runs("q") == []
    small = nbflow("backfill", "q", "--start", "2024-01-01T00:00", "--end", "2024-01-01T06:00",
                   "--detach")  # fmt: skip
    assert small.exit_code == 0 and "queued 25 run(s)" in small.output
    yes = nbflow("backfill", "q", "--start", "2024-01-01", "--end", "2024-01-01", "--detach", "-y")
    assert yes.exit_code == 0, yes.output
    assert "skipped 25 tick(s): already queued" in yes.output  # 71 new, 25 waited for
    assert RunStore().count_runs("q") == 96


def test_a_huge_backfill_range_is_refused_before_its_ticks_are_listed(notebook):
    nbflow("schedule", "add", "s", "job.ipynb", "--every", "1s")
    result = nbflow("backfill", "s", "--start", "2020-01-01", "--end", "2024-01-01", "--yes")
    assert result.exit_code == 2
    assert "covers more than 100,000 ticks, the limit" in result.stderr


@pytest.mark.skipif(
    sys.platform == "win32",
    reason="Windows has no pseudo-terminal (pty) for the test to type the confirmation into",
)
@pytest.mark.parametrize(("answer", "code", "runs"), [("n", 1, 0), ("y", 0, 96)])
def test_a_large_backfill_on_a_terminal_asks_first(notebook, home, answer, code, runs):
    import pty

    add_quarter_hourly()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "nbflow", "backfill", "q", "--start", "2024-01-01",
         "--end", "2024-01-01", "--detach"],
        env={**os.environ, "NBFLOW_HOME": str(home)},
        stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    while b"Go ahead?" not in seen:
        chunk = os.read(leader, 1024)
        assert chunk, seen
        seen += chunk
    assert b"make 96 new run(s)" in seen
    os.write(leader, answer.encode() + b"\n")
    assert process.wait(timeout=60) == code
    os.close(leader)
    assert RunStore().count_runs("q") == runs


def test_a_scheduled_runs_error_ends_with_how_to_rerun_it(home):
    """Issue 17 item 10: not RunFailed's "Fix it and run again; finished tasks are cached"
    (advice for a notebook), but the command that reruns this job for this date."""
    from tests.jobs.notebooks import write_notebook

    write_notebook(
        Path.cwd() / "pipe.ipynb",
        parameters='day = "2024-01-01"',
        cells=[
            "import nbflow as nf\n"
            "pipe = nf.Pipeline('p', cache_dir='cache')\n"
            "@pipe.task\n"
            "def load():\n"
            "    raise KeyError('south')\n"
            "pipe.run()"
        ],
    )
    assert nbflow("schedule", "add", "etl", "pipe.ipynb", "--cron", "0 2 * * *").exit_code == 0
    result = nbflow("backfill", "etl", "--start", "2024-01-01", "--end", "2024-01-01")
    assert result.exit_code == 1
    (run,) = RunStore().list_runs("etl")
    assert "RunFailed: task `load` failed: KeyError: 'south'" in run.error
    assert "run again; finished tasks are cached" not in run.error
    command = (
        "nbflow backfill etl --start 2024-01-01T02:00:00+00:00 --end 2024-01-01T02:00:00+00:00 "
        "--reprocess failed"
    )
    assert run.error.endswith(f"Fix it, then rerun with `{command}` (finished tasks are cached).")
    assert f"\n    Fix it, then rerun with `{command}`" in result.output  # shown whole
    again = nbflow(*command.split()[1:])  # the advice works as given
    assert again.exit_code == 1 and RunStore().get_run(run.id).attempts == 2
    trig = nbflow("trigger", "etl")
    assert trig.exit_code == 1
    manual = next(r for r in RunStore().list_runs("etl") if r.run_type == "manual")
    assert manual.error.endswith(
        "Fix it, then rerun with `nbflow trigger etl` (finished tasks are cached)."
    )


@pytest.mark.skipif(
    not Path("/proc/self/stat").exists(),
    reason="Linux only: the test checks the stopped kernel is gone through /proc, which this OS lacks",
)
def test_ctrl_c_while_a_long_backfill_is_being_planned_cancels_what_it_created(notebook, home):
    """Issue 17 item 3: Ctrl-C before any notebook started leaves no queued run behind."""
    nbflow("schedule", "add", "s", "job.ipynb", "--every", "1s")
    store = RunStore()
    process = subprocess.Popen(
        [sys.executable, "-m", "nbflow", "backfill", "s", "--start", "2024-01-01T00:00:00",
         "--end", "2024-01-01T08:00:00", "--yes"],
        env={**os.environ, "NBFLOW_HOME": str(home)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while store.count_runs("s") < 10:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    made = store.count_runs("s", states=("cancelled",))
    assert 10 <= made < 28_801  # stopped partway through the 28,801 ticks
    assert store.count_runs("s", states=("queued", "running")) == 0
    assert f"cancelled {made} queued run(s)" in err


def test_a_run_that_ends_does_not_interrupt_its_kernel(home):
    """Issue 22 item 15: jupyter_client sends SIGINT to a kernel before every shutdown; one
    that gets it inside a message handler prints `[IPKernelApp] ERROR | KeyboardInterrupt
    caught in kernel.` on the terminal of `backfill`, once per run (seen under load). The
    notebook below keeps its own SIGINT handler (ipykernel's per-message hooks disabled)
    and notes any SIGINT in a file: a run that ended must not have sent one."""
    from tests.jobs.notebooks import write_notebook

    marks = Path.cwd() / "sigint.txt"
    write_notebook(
        Path.cwd() / "quiet.ipynb",
        parameters='day = "2024-01-01"',
        cells=[
            "import signal\n"
            "kernel = get_ipython().kernel\n"
            "kernel.pre_handler_hook = kernel.post_handler_hook = lambda: None\n"
            "def noted(signum, frame):\n"
            f"    open({str(marks)!r}, 'a').write(day + '\\n')\n"
            "signal.signal(signal.SIGINT, noted)"
        ],
    )
    assert nbflow("schedule", "add", "q", "quiet.ipynb", "--cron", "0 2 * * *",
                  "-p", "day", "{{ ds }}").exit_code == 0  # fmt: skip
    result = nbflow("backfill", "q", "--start", "2024-01-01", "--end", "2024-01-02")
    assert result.exit_code == 0, result.output
    assert not marks.exists(), marks.read_text()

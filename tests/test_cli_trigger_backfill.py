"""`nbflow trigger` and `nbflow backfill` through the command line, with real notebook runs."""

from __future__ import annotations

import json
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

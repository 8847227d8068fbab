"""`nbflow schedule ...` and `nbflow runs` through the real command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from nbflow.cli import cli
from nbflow.jobs.runstore import RunStore
from nbflow.jobs.schedules import TIME_RULES
from tests.jobs.notebooks import write_notebook

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"


@pytest.fixture
def notebook(home: Path) -> Path:
    path = Path.cwd() / "report.ipynb"
    path.write_bytes((FIXTURES / "typed_parameters.ipynb").read_bytes())
    return path


def nbflow(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def stored_jobs() -> list[str]:
    return RunStore().job_names()


def test_add_stores_the_job_and_list_shows_its_next_run(notebook):
    result = nbflow(
        "schedule", "add", "etl", "report.ipynb",
        "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
        "-p", "day", "{{ ds }}", "-p", "rows", "5",
        "--retries", "2", "--on-failure", "echo failed",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "added job `etl`" in result.output and "next run" in result.output
    spec = RunStore().get_job("etl").schedule
    assert spec.notebook == str(notebook)  # absolute, so the daemon finds it from anywhere
    assert spec.parameters == {"day": "{{ ds }}", "rows": "5"}
    assert (spec.retries, spec.on_failure, spec.tz) == (2, ("echo failed",), "Europe/Berlin")
    (row,) = json.loads(nbflow("schedule", "list", "--json").output)
    assert row["name"] == "etl" and row["kind"] == "fixed-time" and not row["paused"]
    next_run = datetime.fromisoformat(row["next_run"])
    assert next_run > datetime.now(UTC) and next_run.minute in (0, 30)
    table = nbflow("schedule", "list").output
    assert "etl" in table and "active" in table


def test_show_prints_five_run_times_in_the_zone_and_utc_and_the_time_rules(notebook):
    nbflow(
        "schedule",
        "add",
        "etl",
        "report.ipynb",
        "--cron",
        "0 9 * * 1-5",
        "--tz",
        "America/New_York",
    )
    out = nbflow("schedule", "show", "etl").output
    times = re.findall(
        r"^  (\d{4}-\d\d-\d\d 09:00 E[SD]T) \((\d{4}-\d\d-\d\d \d\d:00) UTC\)$", out, re.M
    )
    assert len(times) == 5
    # issue 17 item 10: the rules that apply to this job, in two lines; all with --rules
    assert TIME_RULES not in out
    rules = out.strip().splitlines()[-2:]
    assert rules[0].startswith("time rules: fixed-time: a local time skipped in spring")
    assert rules[1].strip().startswith("no run before --start") and "--rules" in rules[1]
    assert all(len(line) <= 100 for line in rules)
    assert TIME_RULES in nbflow("schedule", "show", "etl", "--rules").output


@pytest.mark.parametrize(
    ("args", "first"),
    [
        (["--cron", "*/15 * * * *", "--tz", "Europe/Berlin"], "frequent: every real occurrence"),
        (["--cron", "0 2 * * *"], "cron in UTC: no daylight saving"),
        (["--every", "15m"], "interval: a fixed duration in UTC"),
    ],
)
def test_show_prints_the_rules_of_the_jobs_kind(notebook, args, first):
    nbflow("schedule", "add", "etl", "report.ipynb", *args)
    out = nbflow("schedule", "show", "etl").output
    assert out.strip().splitlines()[-2].startswith(f"time rules: {first}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *"], "not a valid cron expression"),
        (["--cron", "0 2 * * *", "--tz", "Europe/Berln"], "unknown time zone `Europe/Berln` (did you mean `Europe/Berlin`"),
        (["--cron", "0 2 * * *", "-p", "rowz", "3"], "has no parameter `rowz` (did you mean `rows`"),
        (["--cron", "0 2 * * *", "-p", "rows", "many"], "declared as int"),
        (["--cron", "0 2 * * *", "-p", "day", "{{ dss }}"], "did you mean `ds`"),
        (["--every", "fortnightly"], "not an interval"),
        (["--cron", "0 2 * * *", "--start", "2024-13-01"], "not a date"),
        ([], "say when it runs"),
        # issue 22 items 13 and 14: bounded intervals, alert targets checked at add time
        (["--every", "0.000001s"], "--every '0.000001s' is outside the allowed range: at least 1 s"),
        (["--every", "99999999999999d"], "at most 100 years"),
        (["--every", "1h", "--on-failure", ""], "alert target '' is empty"),
        (["--every", "1h", "--on-retry", "python:not a module"], "needs a module and a function"),
        (["--every", "1h", "--on-success", "mailto:"], "needs e-mail addresses"),
        (["--every", "1h", "-p", "title", "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}"],
         "does something templates may not do"),
        (["--every", "1h", "-p", "title", "{{ ''.__class__.__mro__[1].__subclasses__() }}"],
         "does something templates may not do"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error_exit_2_and_nothing_stored(notebook, args, message):
    result = nbflow("schedule", "add", "etl", "report.ipynb", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.startswith("nbflow: error: ")
    assert stored_jobs() == []


def test_missing_notebook_is_refused_with_the_near_miss(notebook):
    result = nbflow("schedule", "add", "etl", "reprot.ipynb", "--cron", "0 2 * * *")
    assert result.exit_code == 2
    assert "does not exist (did you mean `report.ipynb`?)" in result.stderr
    assert stored_jobs() == []


def test_a_taken_name_is_refused_and_the_first_job_kept(notebook):
    assert nbflow("schedule", "add", "etl", "report.ipynb", "--every", "15m").exit_code == 0
    again = nbflow("schedule", "add", "etl", "report.ipynb", "--cron", "0 2 * * *")
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert RunStore().get_job("etl").schedule.every == 900


def test_pause_resume_remove(notebook):
    nbflow("schedule", "add", "etl", "report.ipynb", "--every", "1h")
    assert nbflow("schedule", "pause", "etl").exit_code == 0
    assert RunStore().get_job("etl").paused
    assert json.loads(nbflow("schedule", "list", "--json").output)[0]["next_run"] is None
    before = datetime.now(UTC)
    assert nbflow("schedule", "resume", "etl").exit_code == 0
    record = RunStore().get_job("etl")
    assert not record.paused and record.resumed_at >= before - timedelta(seconds=1)
    assert nbflow("schedule", "remove", "etl").exit_code == 0
    assert stored_jobs() == []
    missing = nbflow("schedule", "pause", "etl")
    assert missing.exit_code == 2 and "no job named `etl`" in missing.stderr


def test_runs_shows_history_as_a_table_or_json_with_filters(notebook):
    nbflow("schedule", "add", "etl", "report.ipynb", "--cron", "0 2 * * *")
    store = RunStore()
    t0 = datetime(2024, 1, 1, 2, tzinfo=UTC)
    ok, _ = store.create_run("etl", "scheduled", t0, parameters={"rows": 5})
    store.claim_run(ok.id, 100, now=t0)
    store.finish_run(
        ok.id, "success", output_path="/runs/etl/1.ipynb", now=t0 + timedelta(seconds=3)
    )
    bad, _ = store.create_run("etl", "scheduled", t0 + timedelta(days=1))
    store.claim_run(bad.id, 101, now=t0 + timedelta(days=1))
    store.finish_run(bad.id, "failed", error="ZeroDivisionError: division by zero")
    store.record_missed("etl", t0 + timedelta(days=2), "scheduler was down")

    rows = json.loads(nbflow("runs", "etl", "--json").output)
    assert [r["state"] for r in rows] == ["missed", "failed", "success"]  # newest first
    assert rows[2]["output_path"] == "/runs/etl/1.ipynb" and rows[2]["duration"] == 3.0
    assert rows[2]["logical_date"] == "2024-01-01T02:00:00+00:00"
    failed = json.loads(nbflow("runs", "--status", "failed", "--json").output)
    assert [r["error"] for r in failed] == ["ZeroDivisionError: division by zero"]
    assert len(json.loads(nbflow("runs", "--limit", "1", "--json").output)) == 1

    table = CliRunner().invoke(cli, ["runs"], env={"COLUMNS": "200"}).output
    assert "ZeroDivisionError" in table and "scheduler was down" in table
    assert "2024-01-01 02:00" in table and "success" in table


def test_runs_of_an_unknown_job_or_state_is_an_error(notebook):
    nbflow("schedule", "add", "daily_etl", "report.ipynb", "--cron", "0 2 * * *")
    result = nbflow("runs", "daily_et")
    assert result.exit_code == 2 and "did you mean `daily_etl`" in result.stderr
    bad_state = nbflow("runs", "--status", "faild")
    assert bad_state.exit_code == 2 and "failed" in bad_state.stderr


def test_the_installed_command_exits_2_on_bad_input(notebook):
    proc = subprocess.run(
        [sys.executable, "-m", "nbflow.cli", "schedule", "add", "etl", "report.ipynb",
         "--cron", "0 2 * * *", "--tz", "Mars/Olympus"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("nbflow: error: unknown time zone `Mars/Olympus`")
    assert stored_jobs() == []


def test_file_sensor_job_stores_an_absolute_pattern_and_has_no_clock_ticks(notebook):
    refused = nbflow("schedule", "add", "ingest", "report.ipynb", "--when-file", "data/in/*.csv")
    assert refused.exit_code == 2
    assert "the parameter `path`, which `report.ipynb` does not declare" in refused.stderr
    assert stored_jobs() == []
    write_notebook(Path.cwd() / "ingest.ipynb", parameters='path = ""  # the new file')
    result = nbflow("schedule", "add", "ingest", "ingest.ipynb", "--when-file", "data/in/*.csv")
    assert result.exit_code == 0, result.output
    job = RunStore().get_job("ingest").schedule
    assert job.when_file == str(Path.cwd() / "data" / "in" / "*.csv")
    assert job.kind == "file sensor" and job.next_ticks(datetime.now(UTC), 5) == []
    assert "none (file sensor)" in nbflow("schedule", "show", "ingest").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "nan"], "--timeout nan is not a usable number of seconds"),
        (["--timeout", "inf"], "--timeout inf is not a usable number of seconds"),
        (["--timeout", "1e300"], "longer than the limit of"),
        (["--retry-delay", "nan"], "--retry-delay nan is not a usable number of seconds"),
        (["-p", "title", "a\udcffb"], "not valid Unicode text at position 1"),
        (["-p", "rows", "1", "-p", "rows", "2"], "parameter `rows` is given twice ('1' and '2')"),
    ],
)  # fmt: skip
def test_bad_option_values_are_refused_at_the_boundary_in_nbflows_form(notebook, args, message):
    """Issue 22 item 14, issue 17 item 10: one line naming the value and the limit, printed
    as nbflow prints its own errors (click's `Error:` form is not used)."""
    result = nbflow("schedule", "add", "etl", "report.ipynb", "--every", "1h", *args)
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("nbflow: error: ") and message in last, result.stderr
    assert "Error:" not in result.stderr
    assert stored_jobs() == []


def test_a_job_name_too_long_for_a_file_name_is_refused(notebook):
    result = nbflow("schedule", "add", "j" * 250, "report.ipynb", "--every", "1h")
    assert result.exit_code == 2
    assert "is 250 characters long; the limit is 100" in result.stderr
    assert stored_jobs() == []
    ok = nbflow("schedule", "add", "j" * 100, "report.ipynb", "--every", "1h")
    assert ok.exit_code == 0, ok.output


def test_runs_limit_is_bounded(notebook):
    result = nbflow("runs", "--limit", "99999999999999999999999")
    assert result.exit_code == 2
    assert "nbflow: error: " in result.stderr and "1<=x<=1000000" in result.stderr
    assert "Traceback" not in result.output


def test_click_usage_errors_print_in_nbflows_form(notebook):
    result = nbflow("schedule", "add", "etl")
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: ")
    assert result.stderr.strip().splitlines()[-1] == "nbflow: error: Missing argument 'NOTEBOOK'."


def test_python_dash_m_nbflow_is_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "nbflow", "runs", "--limit", "0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "nbflow: error: " in proc.stderr and "--limit" in proc.stderr
    assert (
        subprocess.run([sys.executable, "-m", "nbflow", "--help"], capture_output=True).returncode
        == 0
    )


def test_a_parameter_with_bytes_that_are_not_utf8_is_refused_by_the_installed_command(notebook):
    nbflow("schedule", "add", "etl", "report.ipynb", "--every", "1h")
    proc = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"nbflow", b"trigger", b"etl", b"-p", b"title",
         b"caf\xe9"],
        capture_output=True,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.decode(errors="replace")
    assert "not valid Unicode text at position 3" in err
    assert RunStore().list_runs("etl") == []

"""`nbflow export airflow|prefect`: the generated files, and runs of them on the real orchestrators.

The fast tests check the files and `run_job` (what the generated task calls) in
this environment. The tests marked `orchestrators` install Airflow 3 and Prefect
3 each into its own virtual environment (so nbflow's dependencies do not pin
theirs), kept between runs under `$NBFLOW_TEST_ENVS` (default
`~/.cache/nbflow-test-envs/`), and run the exported job there:
`pytest -m "not orchestrators"` leaves them out.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbflow.cli import cli
from nbflow.jobs.export import ExportError, export_job
from nbflow.jobs.export.runtime import run_job, send_alerts
from nbflow.jobs.notebook import NotebookFailed
from nbflow.jobs.runstore import RunStore, UnknownJobError
from nbflow.jobs.schedules import Schedule
from tests.jobs.notebooks import write_notebook

ROOT = Path(__file__).resolve().parents[2]
ENVS = Path(os.environ.get("NBFLOW_TEST_ENVS") or Path.home() / ".cache" / "nbflow-test-envs")
AIRFLOW_SPEC = "apache-airflow>=3.0,<4"
PREFECT_SPEC = "prefect>=3.0,<4"

# A notebook whose inner pipeline task appends each execution to the file `marks`:
# a second run of the same date is served from nbflow's cache, leaving one line.
CACHED_CELL = """\
import nbflow as nf

@nf.task
def load(day):
    with open(marks, "a") as fh:
        fh.write(str(day) + "\\n")
    return str(day)

result = nf.run(["load"], params={"day": day})
nf.record("day", str(day))
nf.record("executed", list(result.executed))
"""


def cached_job(work: Path, name: str = "daily", **options: object) -> Schedule:
    """Job `name`: cron 02:30 in Europe/Berlin, `day` = {{ ds }}, stored in the home's run store."""
    notebook = write_notebook(
        work / f"{name}.ipynb",
        'import datetime\nday = datetime.date(2024, 1, 1)\nmarks = ""',
        [CACHED_CELL],
    )
    spec = {
        "name": name,
        "notebook": str(notebook),
        "cron": "30 2 * * *",
        "tz": "Europe/Berlin",
        "parameters": {"day": "{{ ds }}", "marks": str(work / f"{name}-marks.txt")},
        "retries": 2,
        "retry_delay": 5.0,
        "timeout": 600.0,
        "start": "2024-02-29T23:00:00+00:00",
        **options,
    }
    schedule = Schedule.from_dict(spec)
    schedule.check_notebook()
    stored = schedule.to_dict()
    if "backoff" in options:  # a spec-only field (no `schedule add` option yet)
        stored["backoff"] = options["backoff"]
    RunStore().add_job(name, stored)
    return schedule


def broken_job(work: Path) -> Schedule:
    notebook = write_notebook(work / "broken.ipynb", 'day = ""', ["x = 1", "1 / 0"])
    schedule = Schedule(
        name="broken",
        notebook=str(notebook),
        cron="0 3 * * *",
        parameters={"day": "{{ ds }}"},
        start=datetime(2024, 3, 1, tzinfo=UTC),
        # a command alert: the orchestrator's failure callback sends it through nbflow
        on_failure=(f'echo "$NBFLOW_EVENT $NBFLOW_JOB $NBFLOW_RUN_TYPE" >> {work / "alerts.txt"}',),
    )
    RunStore().add_job("broken", schedule.to_dict())
    return schedule


def marks(work: Path, name: str = "daily") -> list[str]:
    path = work / f"{name}-marks.txt"
    return path.read_text().split() if path.exists() else []


# --- the generated files ------------------------------------------------------------------


def test_airflow_file_maps_every_option(tmp_path: Path) -> None:
    work = Path.cwd()
    cached_job(
        work,
        catchup=True,
        max_active=3,
        backoff=2.0,
        end="2024-12-31T22:59:59+00:00",
        on_failure=["echo failed"],
    )
    path = export_job("airflow", "daily", tmp_path / "dags")
    text = path.read_text()
    ast.parse(text)  # valid Python
    assert path.name == "daily_airflow.py"
    for expected in (
        "CronTriggerTimetable('30 2 * * *', timezone='Europe/Berlin')",
        "catchup=True",
        "max_active_runs=3",
        "retries=2,",
        "retry_delay=dt.timedelta(seconds=5),",
        "retry_exponential_backoff=2,",
        "execution_timeout=dt.timedelta(seconds=660),",
        "END_DATE = dt.datetime(2024, 12, 31, 22, 59, 59, tzinfo=dt.timezone.utc)",
        "'day': Param('{{ ds }}', type=\"string\")",
        'on_failure_callback=_alert("failure")',
        # the mapping of {{ ds }} and the DST differences are said in the file
        "Airflow's own {{ ds }} is its day in UTC",
        "Airflow runs at 03:30",
        "--on-failure echo failed",
    ):
        assert expected in text, expected
    # catch-up on: Airflow must not reach back before the job was added
    record = RunStore().get_job("daily")
    start_line = next(line for line in text.splitlines() if line.startswith("START_DATE = "))
    start = eval(start_line.split("=", 1)[1], {"dt": __import__("datetime")})
    assert start >= record.created_at


def test_prefect_file_maps_every_option(tmp_path: Path) -> None:
    cached_job(Path.cwd(), backoff=3.0, max_active=2)
    path = export_job("prefect", "daily", tmp_path)
    text = path.read_text()
    ast.parse(text)
    for expected in (
        "schedules=[Cron('30 2 * * *', timezone='Europe/Berlin')]",
        "RETRIES = 2",
        "RETRY_DELAYS = [5, 15]",  # 5 * 3 ** 0, 5 * 3 ** 1: nbflow's backoff, exactly
        "TIMEOUT = 660",
        "concurrency_limit=2",
        "Prefect runs at 03:30",
        "Prefect has no catch-up",
    ):
        assert expected in text, expected


def test_interval_and_sensor_jobs_export(tmp_path: Path) -> None:
    work = Path.cwd()
    notebook = write_notebook(work / "files.ipynb", 'path = ""')
    store = RunStore()
    every = Schedule(name="every", notebook=str(notebook), every=900.0)
    files = Schedule(name="files", notebook=str(notebook), when_file=str(work / "*.csv"))
    store.add_job("every", every.to_dict())
    store.add_job("files", files.to_dict())
    every_airflow = export_job("airflow", "every", tmp_path).read_text()
    assert "DeltaTriggerTimetable(dt.timedelta(seconds=900))" in every_airflow
    every_prefect = export_job("prefect", "every", tmp_path).read_text()
    assert "Interval(dt.timedelta(seconds=900), anchor_date=dt.datetime(1970, 1, 1" in every_prefect
    files_airflow = export_job("airflow", "files", tmp_path).read_text()
    assert "PythonSensor(" in files_airflow and "run_notebook.expand(path=" in files_airflow
    assert "schedule=SCHEDULE" in files_airflow and 'SCHEDULE = "@continuous"' in files_airflow
    files_prefect = export_job("prefect", "files", tmp_path).read_text()
    assert "schedules=[]" in files_prefect and 'path: str = ""' in files_prefect
    for name in ("every_airflow.py", "every_prefect.py", "files_airflow.py", "files_prefect.py"):
        ast.parse((tmp_path / name).read_text())


def test_file_name_is_an_importable_module(tmp_path: Path) -> None:
    cached_job(Path.cwd(), name="daily-etl.v2")
    path = export_job("prefect", "daily-etl.v2", tmp_path)
    assert path.name == "daily_etl_v2_prefect.py"
    assert "name='daily-etl.v2'" in path.read_text()  # the flow keeps the job's name


def test_bad_input_names_the_thing(tmp_path: Path) -> None:
    cached_job(Path.cwd())
    with pytest.raises(UnknownJobError, match="daly"):
        export_job("airflow", "daly", tmp_path)
    with pytest.raises(ExportError, match="did you mean `airflow`"):
        export_job("airflwo", "daily", tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="is a file"):
        export_job("airflow", "daily", tmp_path / "file")


def test_cli_export(tmp_path: Path) -> None:
    cached_job(Path.cwd())
    result = CliRunner().invoke(cli, ["export", "airflow", "daily", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"exported job `daily` to airflow: {tmp_path / 'daily_airflow.py'}" in result.output
    result = CliRunner().invoke(cli, ["export", "prefect", "nope", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "nbflow: error:" in result.output


# --- run_job: what the generated task calls ------------------------------------------------


def test_run_job_renders_in_the_job_zone_and_reuses_the_cache(home: Path) -> None:
    work = Path.cwd()
    schedule = cached_job(work)
    spec = RunStore().get_job("daily").spec | {"name": "daily"}
    # 23:30 UTC on 4 March is 00:30 on 5 March in Berlin: {{ ds }} is the zone's day
    first = run_job(spec, logical_date="2024-03-04T23:30:00+00:00", home=home, orchestrator="t")
    assert first["parameters"]["day"] == "2024-03-05"
    assert first["outputs"] == {"day": "2024-03-05", "executed": ["load"]}
    assert Path(first["output_path"]) == home / "runs/daily/daily-20240304T233000Z-t-try1.ipynb"
    again = run_job(spec, logical_date="2024-03-04T23:30:00+00:00", home=home, orchestrator="t")
    assert again["outputs"]["executed"] == []  # served from nbflow's cache
    assert marks(work) == ["2024-03-05"]
    assert schedule.timeout == 600.0


def test_run_job_failure_names_the_cell(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken_job(Path.cwd())
    spec = RunStore().get_job("broken").spec | {"name": "broken"}
    with pytest.raises(NotebookFailed, match=r"cell 2 `1 / 0`: ZeroDivisionError"):
        run_job(spec, logical_date="2024-03-05T03:00:00+00:00", home=home, orchestrator="t")
    assert "ZeroDivisionError" in capsys.readouterr().out  # the notebook's traceback, logged


def test_send_alerts_uses_nbflows_senders(home: Path) -> None:
    work = Path.cwd()
    broken_job(work)
    spec = RunStore().get_job("broken").spec | {"name": "broken"}
    send_alerts("failure", spec, logical_date=None, home=home, orchestrator="t", error="boom")
    send_alerts("success", spec, logical_date=None, home=home, orchestrator="t")  # no targets
    assert (work / "alerts.txt").read_text() == "failure broken t\n"


# --- the real orchestrators ----------------------------------------------------------------


def _pip_quiet(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if "is ignored" not in line)


def orchestrator_env(name: str, spec: str) -> Path:
    """A venv with `spec` and nbflow's runtime dependencies, under ENVS/<name> (made once,
    reused while its `ready` marker is there); nbflow itself is installed from this
    checkout (editable, no deps) each session. Returns the venv's bin folder."""
    env = ENVS / name
    bin_dir = env / "bin"
    ready = env / "ready"
    if not ready.is_file():
        ENVS.mkdir(parents=True, exist_ok=True)
        if not (bin_dir / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        done = subprocess.run(
            [str(bin_dir / "pip"), "install", "-q", spec, "-e", str(ROOT)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            pytest.fail(
                f"could not install {spec} with nbflow into {env}:\n{_pip_quiet(done.stderr)}"
            )
        ready.write_text(spec + "\n")
    done = subprocess.run(
        [str(bin_dir / "pip"), "install", "-q", "--no-deps", "-e", str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, _pip_quiet(done.stderr)
    return bin_dir


@pytest.fixture(scope="session")
def airflow_bin() -> Path:
    return orchestrator_env("airflow-3", AIRFLOW_SPEC)


@pytest.fixture(scope="session")
def prefect_bin() -> Path:
    return orchestrator_env("prefect-3", PREFECT_SPEC)


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without our PYTHONPATH: the orchestrator's venv imports
    nbflow from its own (editable) install."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def airflow(bin_dir: Path, airflow_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = _env(
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(airflow_home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return subprocess.run(
        [str(bin_dir / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture
def airflow_home(airflow_bin: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "airflow"
    (folder / "dags").mkdir(parents=True)
    done = airflow(airflow_bin, folder, "db", "migrate")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


@pytest.mark.orchestrators
@pytest.mark.timeout(600)
def test_airflow_dags_test_runs_the_notebook_through_nbflow(
    airflow_bin: Path, airflow_home: Path, home: Path
) -> None:
    work = Path.cwd()
    cached_job(work)
    broken_job(work)
    export_job("airflow", "daily", airflow_home / "dags")
    export_job("airflow", "broken", airflow_home / "dags")
    date = "2024-03-05T01:30:00+00:00"  # 02:30 CET: nbflow's tick of 5 March

    first = airflow(airflow_bin, airflow_home, "dags", "test", "daily", date)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log
    output = home / "runs/daily/daily-20240305T013000Z-airflow-try1.ipynb"
    assert output.is_file()
    assert "'day': '2024-03-05'" in log  # {{ ds }} rendered to the logical date's day
    assert "'executed': ['load']" in log
    assert marks(work) == ["2024-03-05"]

    second = airflow(airflow_bin, airflow_home, "dags", "test", "daily", date)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log
    assert "'executed': []" in log  # served from nbflow's cache inside the notebook
    assert marks(work) == ["2024-03-05"]

    failed = airflow(
        airflow_bin, airflow_home, "dags", "test", "broken", "2024-03-05T03:00:00+00:00"
    )
    log = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "exception in cell 2 `1 / 0`: ZeroDivisionError: division by zero" in log
    assert "state=failed" in log
    assert (home / "runs/broken/broken-20240305T030000Z-airflow-try1.ipynb").is_file()
    assert (work / "alerts.txt").read_text() == "failure broken airflow\n"


@pytest.mark.orchestrators
@pytest.mark.timeout(600)
def test_airflow_file_sensor_runs_once_per_new_file(
    airflow_bin: Path, airflow_home: Path, home: Path
) -> None:
    work = Path.cwd()
    notebook = write_notebook(work / "files.ipynb", 'path = ""', ["rows = open(path).read()"])
    inbox = work / "in"
    inbox.mkdir()
    (inbox / "a.csv").write_text("a\n")
    (inbox / "b.csv").write_text("b\n")
    job = Schedule(name="files", notebook=str(notebook), when_file=str(inbox / "*.csv"))
    RunStore().add_job("files", job.to_dict())
    export_job("airflow", "files", airflow_home / "dags")

    done = airflow(airflow_bin, airflow_home, "dags", "test", "files")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert f"'path': '{inbox / 'a.csv'}'" in log and f"'path': '{inbox / 'b.csv'}'" in log
    outputs = sorted(p.name for p in (home / "runs/files").glob("*.ipynb"))
    assert len(outputs) == 2 and outputs[0].endswith("-airflow-file0-try1.ipynb"), outputs
    seen = json.loads((home / "runs/files/.airflow-files.json").read_text())
    assert sorted(seen) == [str(inbox / "a.csv"), str(inbox / "b.csv")]


PREFECT_SCRIPT = """\
import json, sys
sys.path.insert(0, {folder!r})
from {module} import deployment, job_flow, run_notebook

if {check_deployment!r}:
    d = deployment()
    schedule = d.schedules[0].schedule
    print("DEPLOYMENT", json.dumps({{
        "cron": schedule.cron, "timezone": schedule.timezone, "parameters": d.parameters,
        "concurrency_limit": d.concurrency_limit, "retries": run_notebook.retries,
        "retry_delay_seconds": run_notebook.retry_delay_seconds,
        "timeout_seconds": run_notebook.timeout_seconds,
    }}))
for _ in range({runs}):
    print("RESULT", json.dumps(job_flow(logical_date={date!r})))
"""


def prefect_run(
    bin_dir: Path, folder: Path, module: str, date: str, *, runs: int = 1, check: bool = False
) -> subprocess.CompletedProcess[str]:
    script = PREFECT_SCRIPT.format(
        folder=str(folder), module=module, date=date, runs=runs, check_deployment=check
    )
    env = _env(
        PREFECT_HOME=str(folder / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_URL="",  # an ephemeral local server, started by the flow run
    )
    return subprocess.run(
        [str(bin_dir / "python"), "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=folder,
    )


@pytest.mark.orchestrators
@pytest.mark.timeout(600)
def test_prefect_flow_runs_the_notebook_through_nbflow(
    prefect_bin: Path, tmp_path: Path, home: Path
) -> None:
    work = Path.cwd()
    cached_job(work, backoff=2.0, max_active=2)
    broken_job(work)
    flows = tmp_path / "flows"
    export_job("prefect", "daily", flows)
    export_job("prefect", "broken", flows)
    date = "2024-03-05T01:30:00+00:00"

    done = prefect_run(prefect_bin, flows, "daily_prefect", date, runs=2, check=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    deployment = json.loads(
        next(line[11:] for line in done.stdout.splitlines() if line.startswith("DEPLOYMENT "))
    )
    assert deployment == {
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "parameters": {"parameters": {"day": "{{ ds }}", "marks": str(work / "daily-marks.txt")}},
        "concurrency_limit": 2,
        "retries": 2,
        "retry_delay_seconds": [5.0, 10.0],
        "timeout_seconds": 660.0,
    }
    results = [
        json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")
    ]
    assert len(results) == 2
    first, second = results
    assert first["parameters"]["day"] == "2024-03-05"
    assert first["outputs"]["executed"] == ["load"]
    assert (
        Path(first["output_path"]) == home / "runs/daily/daily-20240305T013000Z-prefect-try1.ipynb"
    )
    assert Path(first["output_path"]).is_file()
    assert second["outputs"]["executed"] == []  # served from nbflow's cache
    assert marks(work) == ["2024-03-05"]

    failed = prefect_run(prefect_bin, flows, "broken_prefect", "2024-03-05T03:00:00+00:00")
    log = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "exception in cell 2 `1 / 0`: ZeroDivisionError: division by zero" in log
    assert "Finished in state Failed" in log
    assert (work / "alerts.txt").read_text() == "failure broken prefect\n"


# The DST rows of docs/export.md, measured on the orchestrators themselves (Europe/Berlin,
# 2024): the UTC times of `30 2 * * *` on both change days and of `0 * * * *` on the fall-back
# day. nbflow's own rows are checked in test_schedules.py.
AIRFLOW_TICKS = """\
import pendulum
from airflow.timetables.base import TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable
def ticks(cron, start, end):
    tt, last, out = CronTriggerTimetable(cron, timezone="Europe/Berlin"), None, []
    restriction = TimeRestriction(earliest=pendulum.parse(start), latest=None, catchup=True)
    while True:
        info = tt.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.logical_date >= pendulum.parse(end):
            return out
        out.append(info.logical_date.in_timezone("UTC").strftime("%m-%d %H:%M"))
        last = info.data_interval
"""

PREFECT_TICKS = """\
import asyncio, inspect
from datetime import datetime, timezone
from prefect.server.schemas.schedules import CronSchedule
def ticks(cron, start, end):
    dates = CronSchedule(cron=cron, timezone="Europe/Berlin").get_dates(
        n=1000, start=datetime.fromisoformat(start), end=datetime.fromisoformat(end))
    if inspect.isawaitable(dates):  # async in Prefect 3.x
        dates = asyncio.run(dates)
    return [
        d.astimezone(timezone.utc).strftime("%m-%d %H:%M")
        for d in dates
        if d < datetime.fromisoformat(end)
    ]
"""

TICKS_MAIN = """
import json
print(json.dumps({
    "spring": ticks("30 2 * * *", "2024-03-30T22:00:00+00:00", "2024-03-31T22:00:00+00:00"),
    "fall": ticks("30 2 * * *", "2024-10-26T22:00:00+00:00", "2024-10-27T23:00:00+00:00"),
    "fall_hourly": len(ticks("0 * * * *", "2024-10-26T22:00:00+00:00", "2024-10-27T23:00:00+00:00")),
}))
"""


@pytest.mark.orchestrators
@pytest.mark.parametrize(
    ("orchestrator", "expected"),
    [
        ("airflow", {"spring": ["03-31 01:30"], "fall": ["10-27 01:30"], "fall_hourly": 25}),
        ("prefect", {"spring": ["03-31 01:30"], "fall": ["10-27 00:30"], "fall_hourly": 24}),
    ],
)
def test_dst_differences_in_the_docs_hold(orchestrator: str, expected: dict, request) -> None:
    bin_dir = request.getfixturevalue(f"{orchestrator}_bin")
    code = (AIRFLOW_TICKS if orchestrator == "airflow" else PREFECT_TICKS) + TICKS_MAIN
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", textwrap.dedent(code)],
        env=_env(AIRFLOW_HOME=str(Path.cwd() / "af")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected

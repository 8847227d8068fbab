"""Where run output goes: never through a planted link, and readable by its user alone.

`runs/JOB` replaced by a link into another user's folder must not make the
next run's output notebook land there; output notebooks are 0600. Real runs
(papermill, a kernel) through the command line; the other user is a real one
made by the test (`tests/other_user.py`).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from nbflow.cli import cli
from nbflow.jobs.runstore import RunStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks"


def nbflow(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def job(home: Path) -> str:
    (Path.cwd() / "job.ipynb").write_bytes((FIXTURES / "scheduled_job.ipynb").read_bytes())
    result = nbflow(
        "schedule", "add", "etl", "job.ipynb", "--cron", "0 2 * * *", "-p", "day", "{{ ds }}"
    )
    assert result.exit_code == 0, result.output
    return "etl"


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def usual_umask():
    """022, under which files are made 0644 unless nbflow says otherwise."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_output_notebooks_are_private(job, home, usual_umask):
    result = nbflow("trigger", job)
    assert result.exit_code == 0, result.output
    (run,) = RunStore().list_runs(job)
    assert run.state == "success"
    assert mode(Path(run.output_path)) == 0o600
    assert mode(home / "runs" / job) == 0o700

    result = nbflow("run", "job.ipynb", "-p", "day", "2024-01-01")
    assert result.exit_code == 0, result.output
    (adhoc,) = (home / "runs" / "adhoc").glob("*.ipynb")
    assert mode(adhoc) == 0o600 and mode(home / "runs" / "adhoc") == 0o700
    result = nbflow("run", "job.ipynb", "-p", "day", "2024-01-01", "-o", "mine.ipynb")
    assert result.exit_code == 0, result.output
    assert mode(Path("mine.ipynb")) == 0o600


def test_a_planted_link_for_runs_job_does_not_redirect_output(job, home, other_user):
    theirs = other_user.shared / f"theirs-{uuid.uuid4().hex[:6]}"
    other_user.run("mkdir", "-m", "777", str(theirs))
    (home / "runs").mkdir(parents=True, exist_ok=True)
    (home / "runs" / job).symlink_to(theirs)  # as if planted while the home was open

    result = nbflow("trigger", job)
    assert result.exit_code == 1, result.output
    (run,) = RunStore().list_runs(job)
    assert run.state == "failed" and run.attempts == 1
    assert f"run folder `{home / 'runs' / job}` is a symbolic link (to `{theirs}`)" in run.error
    assert "remove" in run.error
    assert list(theirs.iterdir()) == []  # nothing landed in their folder
    assert (home / "runs" / job).is_symlink()  # refused, not followed nor removed

    # once the link is gone, the next run makes a real folder of its own
    (home / "runs" / job).unlink()
    result = nbflow("trigger", job)
    assert result.exit_code == 0, result.output
    assert not (home / "runs" / job).is_symlink() and mode(home / "runs" / job) == 0o700
    assert list(theirs.iterdir()) == []


def test_a_planted_link_in_place_of_the_output_notebook_is_not_written_through(home, tmp_path):
    (Path.cwd() / "job.ipynb").write_bytes((FIXTURES / "scheduled_job.ipynb").read_bytes())
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    Path("out.ipynb").symlink_to(target)
    result = CliRunner().invoke(cli, ["run", "job.ipynb", "-p", "day", "x", "-o", "out.ipynb"])
    assert result.exit_code == 2
    assert (
        "is a symbolic link" in result.output
        and "does not write output through a link" in result.output
    )
    assert target.read_text() == "keep me"

"""The environment of every run: Python, platform, nbflow, packages (once per set), the source
file's digest and its git commit — recorded by real runs, in this process and in others."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import nbflow as nf
from nbflow.cli import cli
from nbflow.core.cache.planner import file_digest
from nbflow.history import get_run
from nbflow.history.api import children
from nbflow.history.diff import packages_of
from nbflow.history.recorder import drain
from tests.jobs.notebooks import write_notebook

ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """
import nbflow as nf

pipe = nf.Pipeline("etl", cache_dir="cache")


@pipe.task
def raw(n: int) -> list[int]:
    return list(range(n))


@pipe.task
def total(raw: list[int]) -> int:
    return sum(raw){edit}


if __name__ == "__main__":
    print(pipe.run(params={{"n": {n}}}).run_id)
"""


def write_pipeline(path: Path, n: int = 3, edit: str = "") -> Path:
    path.write_text(PIPELINE.format(n=n, edit=edit), encoding="utf-8")
    return path


def run_script(path: Path, home: Path) -> str:
    """Run the pipeline module `path` in a new Python process; its run id."""
    env = {**os.environ, "NBFLOW_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def git_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "Test")
    return path


def fake_dist(site: Path, name: str, version: str) -> Path:
    """A real distribution for importlib.metadata: a `.dist-info` folder with METADATA."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    return info


def test_a_run_records_python_platform_nbflow_and_its_source_file(
    tmp_path: Path, home: Path
) -> None:
    script = write_pipeline(tmp_path / "etl.py")
    run = get_run(run_script(script, home))
    env = run.env
    assert env is not None
    assert (env["python"], env["implementation"]) == (
        platform.python_version(),
        platform.python_implementation(),
    )
    u = platform.uname()
    assert env["platform"] == f"{u.system}-{u.release}-{u.machine}"
    assert env["nbflow"] == nf.__version__ == run.version
    assert env["source"] == {"path": str(script), "digest": file_digest(str(script))}
    assert "git" not in env  # tmp_path is in no repository
    packages = packages_of(run)
    assert packages is not None and env["packages"] == len(packages) > 0
    assert packages["blake3"] == __import__("importlib.metadata").metadata.version("blake3")


def test_two_runs_store_their_package_set_once(tmp_path: Path, home: Path) -> None:
    script = write_pipeline(tmp_path / "etl.py")
    first, second = get_run(run_script(script, home)), get_run(run_script(script, home))
    assert first.packages is not None and first.packages == second.packages
    pipe = nf.Pipeline("here")
    pipe.task(lambda: 1, name="one")
    pipe.run()
    pipe.run()
    drain()
    conn = sqlite3.connect(home / "history.sqlite")
    sets = conn.execute("SELECT digest FROM package_sets").fetchall()
    runs = conn.execute("SELECT DISTINCT packages FROM runs").fetchall()
    # One row per distinct set, never one per run: 4 runs, as many rows as distinct sets
    # (this process's sys.path may hold another set than the subprocesses').
    assert sorted(sets) == sorted(runs) and len(sets) <= 2
    ours = [r.packages for r in nf.history("here")]
    assert len(set(ours)) == 1 and (ours[0],) in sets


def test_an_installed_distribution_is_a_new_package_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = nf.Pipeline("pkgs")
    pipe.task(lambda: 1, name="one")
    before = get_run(pipe.run().run_id)
    site = tmp_path / "site"
    fake_dist(site, "fake_pkg", "1.2.3")
    monkeypatch.syspath_prepend(str(site))
    installed = get_run(pipe.run().run_id)
    assert installed.packages != before.packages
    assert packages_of(installed)["fake-pkg"] == "1.2.3"  # type: ignore[index]
    # An upgrade in place (a new .dist-info folder) moves the folder's mtime: seen at once.
    (site / "fake_pkg-1.2.3.dist-info").rename(site / "fake_pkg-1.3.0.dist-info")
    (site / "fake_pkg-1.3.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake_pkg\nVersion: 1.3.0\n", encoding="utf-8"
    )
    upgraded = get_run(pipe.run().run_id)
    assert packages_of(upgraded)["fake-pkg"] == "1.3.0"  # type: ignore[index]
    d = nf.diff_runs(before, installed)
    assert d.packages.added == {"fake-pkg": "1.2.3"} and not d.packages.removed
    d = nf.diff_runs(installed, upgraded)
    assert d.packages.changed == {"fake-pkg": ("1.2.3", "1.3.0")}
    assert "package fake-pkg: 1.2.3 → 1.3.0" in str(d)
    assert not d.tasks and not d.params  # the task was cached: only the packages differ


def test_git_commit_and_dirty_flag_of_the_repository_holding_the_source(
    tmp_path: Path, home: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    script = write_pipeline(repo / "etl.py")
    untracked = get_run(run_script(script, home)).env["git"]  # type: ignore[index]
    assert untracked["commit"] is None and untracked["dirty"] and not untracked["tracked"]
    git(repo, "add", "etl.py")
    git(repo, "commit", "-qm", "first")
    clean = get_run(run_script(script, home)).env["git"]  # type: ignore[index]
    assert clean["root"] == str(repo) and clean["commit"] == git(repo, "rev-parse", "HEAD")
    assert clean["dirty"] is False and clean["tracked"] is True
    write_pipeline(script, edit=" * 2")
    edited = get_run(run_script(script, home))
    assert edited.env["git"]["dirty"] is True  # type: ignore[index]
    assert edited.env["git"]["commit"] == clean["commit"]  # type: ignore[index]
    git(repo, "commit", "-qam", "double")
    committed = get_run(run_script(script, home)).env["git"]  # type: ignore[index]
    assert committed["commit"] == git(repo, "rev-parse", "HEAD") != clean["commit"]
    assert committed["dirty"] is False


def test_git_is_looked_at_again_in_one_process_when_the_source_or_commit_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_repo(tmp_path / "repo")
    module = repo / "steps.py"
    module.write_text("def one():\n    return 1\n", encoding="utf-8")
    git(repo, "add", "steps.py")
    git(repo, "commit", "-qm", "first")
    monkeypatch.syspath_prepend(str(repo))
    import steps  # type: ignore[import-not-found]

    pipe = nf.Pipeline("in_process")
    pipe.task(steps.one)
    first = get_run(pipe.run().run_id).env
    assert first is not None and first["source"]["path"] == str(module)
    assert first["git"]["dirty"] is False
    module.write_text("def one():\n    return 1  # edited\n", encoding="utf-8")
    second = get_run(pipe.run().run_id).env
    assert second is not None and second["git"]["dirty"] is True
    git(repo, "commit", "-qam", "edit")
    third = get_run(pipe.run().run_id).env
    assert third is not None and third["git"]["dirty"] is False
    assert third["git"]["commit"] == git(repo, "rev-parse", "HEAD") != first["git"]["commit"]


def test_a_missing_git_never_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / "nogit.py").write_text("def one():\n    return 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(repo))
    import nogit  # type: ignore[import-not-found]

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git on the path
    pipe = nf.Pipeline("no_git")
    pipe.task(nogit.one)
    r = pipe.run()
    assert r.ok
    git_info = get_run(r.run_id).env["git"]  # type: ignore[index]
    assert git_info == {"root": str(repo), "error": "git is not installed"}


def test_history_show_env_prints_the_environment(tmp_path: Path, home: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    script = write_pipeline(repo / "etl.py")
    git(repo, "add", "etl.py")
    git(repo, "commit", "-qm", "first")
    run_id = run_script(script, home)
    result = CliRunner().invoke(cli, ["history", "show", run_id, "--env"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"python   {platform.python_version()} (CPython)" in out
    assert f"nbflow   {nf.__version__}" in out
    assert f"source   {script} (digest {file_digest(str(script))})" in out
    assert f"git      {git(repo, 'rev-parse', 'HEAD')} on" in out and "(clean)" in out
    assert "blake3" in out and "distributions (set " in out
    plain = CliRunner().invoke(cli, ["history", "show", run_id], catch_exceptions=False)
    head = git(repo, "rev-parse", "HEAD")[:10]
    assert f"env      Python {platform.python_version()}, git {head}; `--env`" in plain.output
    result = CliRunner().invoke(cli, ["history", "show", run_id, "--env", "--json"])
    data = __import__("json").loads(result.output)
    assert data["env"]["git"]["dirty"] is False and "blake3" in data["packages"]


def test_a_notebook_run_and_the_pipeline_runs_in_its_kernel_name_the_notebook(
    tmp_path: Path,
) -> None:
    cell = (
        'import nbflow as nf\np = nf.Pipeline("in_kernel")\np.task(lambda: 1, name="one")\np.run()'
    )
    nb = write_notebook(tmp_path / "report.ipynb", cells=[cell])
    nr = nf.run_notebook(nb)
    assert nr.ok
    run = get_run(nr.run_id)
    expected = {"path": str(nb), "digest": file_digest(str(nb))}
    assert run.env is not None and run.env["source"] == expected
    [inner] = children(run.id)
    # The task is a cell's lambda (no file): the notebook the kernel ran is the source.
    assert inner.env is not None and inner.env["source"] == expected


def test_a_run_does_not_wait_for_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from nbflow.history import env

    real_git = shutil.which("git")
    assert real_git is not None
    repo = git_repo(tmp_path / "repo")
    (repo / "slowgit.py").write_text("def one():\n    return 1\n", encoding="utf-8")
    git(repo, "add", "slowgit.py")
    git(repo, "commit", "-qm", "first")
    # A `git` that answers only once the test lets it: a run that waited would hang here
    # (until the look's timeout, which then leaves no look pending).
    release = tmp_path / "release"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(
        f'#!/bin/sh\nwhile [ ! -e "{release}" ]; do sleep 0.02; done\nexec "{real_git}" "$@"\n'
    )
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.syspath_prepend(str(repo))
    import slowgit  # type: ignore[import-not-found]

    pipe = nf.Pipeline("slow_git")
    pipe.task(slowgit.one)
    r = pipe.run()
    assert r.ok and repo in env._PENDING  # the run ended; git has not answered yet
    release.touch()
    recorded = get_run(r.run_id).env["git"]  # type: ignore[index]
    assert recorded["commit"] == git(repo, "rev-parse", "HEAD") and recorded["dirty"] is False

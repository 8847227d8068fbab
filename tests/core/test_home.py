"""Which home is used (the rules `nbflow home` prints) and who may own it.

The ownership tests use a second, unprivileged user made by the test
(`tests/other_user.py`): it plants homes, secrets and links the way another
user of the machine could.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbflow import Pipeline
from nbflow.cli import cli
from nbflow.core.home import HomeError, home_dir, locate_home, secret_key
from tests.other_user import OtherUser


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --- which home ---------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $NBFLOW_HOME; a tree with nothing above it that would count (tmp_path)."""
    monkeypatch.delenv("NBFLOW_HOME")
    for folder in tmp_path.parents:  # the rules walk up: nothing above tmp_path may count
        assert not (folder / ".nbflow").exists() and not (folder / "pyproject.toml").exists()
        assert not (folder / ".git").exists()
    return tmp_path


def home_cli() -> list[str]:
    result = CliRunner().invoke(cli, ["home"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_nbflow_home_set_wins_over_a_nearer_folder(home, tmp_path):
    (Path.cwd() / ".nbflow").mkdir()
    location = locate_home()
    assert (location.path, location.rule) == (home, "env")
    assert home_cli()[:2] == [f"home:  {home}", f"why:   $NBFLOW_HOME is set to {home}"]


@pytest.mark.parametrize("depth", [0, 2])
def test_the_nearest_nbflow_folder_at_or_above_the_working_directory(no_env, depth, monkeypatch):
    project = no_env / "project"
    (project / ".nbflow").mkdir(parents=True, mode=0o700)
    (project / "pyproject.toml").write_text("")
    cwd = project.joinpath(*["notebooks", "deep"][:depth])
    cwd.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(cwd)
    location = locate_home()
    assert (location.path, location.rule) == (project / ".nbflow", "found")
    assert home_dir() == project / ".nbflow"
    lines = home_cli()
    assert lines[0] == f"home:  {project / '.nbflow'}"
    assert lines[1].startswith("why:   the nearest .nbflow folder is in ")
    assert lines[2] == "state: in use"


def test_a_nearer_nbflow_folder_wins_over_one_further_up(no_env, monkeypatch):
    (no_env / ".nbflow").mkdir(mode=0o700)
    (no_env / "sub" / ".nbflow").mkdir(parents=True, mode=0o700)
    monkeypatch.chdir(no_env / "sub")
    assert locate_home().path == no_env / "sub" / ".nbflow"


@pytest.mark.parametrize("marker", ["pyproject.toml", ".git"])
def test_a_new_home_goes_to_the_project_root(no_env, marker, monkeypatch):
    """A kernel started in notebooks/ and the CLI at the root share one home."""
    project = no_env / "project"
    (project / "notebooks").mkdir(parents=True)
    if marker == ".git":
        (project / ".git").mkdir()
    else:
        (project / marker).write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(project / "notebooks")
    location = locate_home()
    assert (location.path, location.rule) == (project / ".nbflow", "project")
    assert f"{project} is the project root (it holds {marker})" in location.reason
    lines = home_cli()
    assert lines[0] == f"home:  {project / '.nbflow'}"
    assert lines[2].startswith("state: not created yet")
    assert not (project / ".nbflow").exists()  # `nbflow home` creates nothing

    # a real run from notebooks/ creates and uses the project's home
    pipe = Pipeline("p")
    pipe.task(lambda: 1, name="one")
    assert pipe.run().ok
    assert (project / ".nbflow" / "cache").is_dir() and mode(project / ".nbflow") == 0o700
    assert not (project / "notebooks" / ".nbflow").exists()
    monkeypatch.chdir(project)
    assert locate_home().rule == "found"
    assert home_dir() == project / ".nbflow"


def test_without_a_project_the_working_directory(no_env, monkeypatch):
    (no_env / "loose").mkdir()
    monkeypatch.chdir(no_env / "loose")
    location = locate_home()
    assert (location.path, location.rule) == (no_env / "loose" / ".nbflow", "cwd")
    assert home_cli()[1].startswith("why:   no .nbflow folder and no project root")


def test_nbflow_home_path_prints_only_the_path(home):
    result = CliRunner().invoke(cli, ["home", "--path"], catch_exceptions=False)
    assert result.output == f"{home}\n"


# --- our own homes: tightened or refused ---------------------------------------


def test_a_home_of_ours_that_others_may_read_is_tightened(home):
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    assert home_dir() == home
    assert mode(home) == 0o700


def test_a_home_of_ours_that_others_may_write_is_refused(home):
    home.mkdir()
    os.chmod(home, 0o777)
    with pytest.raises(HomeError, match=r"has mode 0777, so others can write to it.*chmod 700"):
        home_dir()
    result = CliRunner().invoke(cli, ["cache", "info"])
    assert result.exit_code == 2
    assert result.output.startswith("nbflow: error: the nbflow home ($NBFLOW_HOME is set to")
    assert mode(home) == 0o777  # refused, not silently "fixed"


def test_a_secret_others_can_read_is_refused(home):
    secret_key()
    os.chmod(home / "secret.key", 0o644)
    with pytest.raises(HomeError, match=r"secret.key` has mode 0644.*chmod 600"):
        secret_key()


def test_a_secret_that_is_a_link_is_refused(home, tmp_path):
    home.mkdir(mode=0o700)
    (tmp_path / "elsewhere.key").write_bytes(b"k" * 32)
    os.chmod(tmp_path / "elsewhere.key", 0o600)
    (home / "secret.key").symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(HomeError, match="is a symbolic link"):
        secret_key()


def test_a_link_of_ours_to_a_private_folder_of_ours_is_a_home(home, tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    home.symlink_to(tmp_path / "real")
    pipe = Pipeline("p")
    pipe.task(lambda: 1, name="one")
    assert pipe.run().ok
    assert (tmp_path / "real" / "secret.key").is_file()


# --- homes another user controls -------------------------------------------------


def run_a_pipeline() -> bool:
    pipe = Pipeline("p")
    pipe.task(lambda: 1, name="one")
    return pipe.run().ok


def planted_home(user: OtherUser, mode_: str = "777") -> Path:
    """A home made by the other user, with their own secret and a cache (their pipeline ran)."""
    home = user.shared / f"home-{uuid.uuid4().hex[:6]}"
    user.run("mkdir", "-m", "700", str(home))
    assert user.call(run_a_pipeline, NBFLOW_HOME=str(home))
    user.run("chmod", mode_, str(home))  # nbflow (as them) keeps it 0700; the attack opens it
    assert (home / "secret.key").stat().st_uid == user.uid
    return home


@pytest.mark.parametrize("folder_mode", ["777", "755"])
def test_a_home_of_another_user_is_refused(other_user, monkeypatch, folder_mode):
    home = planted_home(other_user, folder_mode)
    monkeypatch.setenv("NBFLOW_HOME", str(home))
    pipe = Pipeline("p")
    pipe.task(lambda: 1, name="one")
    with pytest.raises(HomeError, match=rf"belongs to user `{other_user.name}`.*set NBFLOW_HOME"):
        pipe.run()
    with pytest.raises(HomeError):
        secret_key(home)  # the secret is never read from a home that is not ours
    result = CliRunner().invoke(cli, ["runs"])
    assert result.exit_code == 2 and f"user `{other_user.name}`" in result.output
    assert oct(home.stat().st_mode & 0o777) == oct(int(folder_mode, 8))  # left alone


def test_a_link_to_another_users_folder_is_refused(other_user, home):
    theirs = planted_home(other_user)
    home.symlink_to(theirs)  # our own link, to their folder
    with pytest.raises(HomeError, match=f"belongs to user `{other_user.name}`"):
        home_dir()


def test_a_link_made_by_another_user_is_refused_even_to_our_folder(
    other_user, monkeypatch, tmp_path
):
    ours = other_user.shared / f"ours-{uuid.uuid4().hex[:6]}"
    ours.mkdir(mode=0o700)
    link = other_user.shared / f"link-{uuid.uuid4().hex[:6]}"
    other_user.run("ln", "-s", str(ours), str(link))
    monkeypatch.setenv("NBFLOW_HOME", str(link))
    with pytest.raises(HomeError, match=rf"symbolic link .* made by user `{other_user.name}`"):
        home_dir()


def test_a_secret_planted_by_another_user_in_our_home_is_refused(other_user, home):
    home.mkdir(mode=0o700)
    (home / "secret.key").write_bytes(b"x" * 32)
    os.chown(home / "secret.key", other_user.uid, -1)
    os.chmod(home / "secret.key", 0o600)
    with pytest.raises(HomeError, match=f"secret.key` belongs to user `{other_user.name}`"):
        secret_key()


def test_a_cache_dir_of_another_user_is_refused(other_user):
    theirs = other_user.shared / f"cache-{uuid.uuid4().hex[:6]}"
    other_user.run("mkdir", "-m", "777", str(theirs))
    pipe = Pipeline("p", cache_dir=theirs)
    pipe.task(lambda: 1, name="one")
    with pytest.raises(HomeError, match=f"belongs to user `{other_user.name}`"):
        pipe.run()
    assert list(theirs.iterdir()) == []


def test_an_unprivileged_user_refuses_a_home_root_left_open(other_user):
    """The same check as the other user: a 0777 home made by root is not theirs."""
    home = other_user.shared / f"roots-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    os.chmod(home, 0o777)

    def nbflow_home() -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["home"])
        return result.exit_code, result.output

    code, output = other_user.call(nbflow_home, NBFLOW_HOME=str(home))
    assert code == 2
    assert "belongs to user `root` (uid 0), not to you (`" in output
    # and a private home of their own is fine
    own = other_user.shared / f"own-{uuid.uuid4().hex[:6]}"
    code, output = other_user.call(nbflow_home, NBFLOW_HOME=str(own))
    assert (code, output.splitlines()[0]) == (0, f"home:  {own}")

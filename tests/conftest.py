"""Shared fixtures: every test gets its own nbflow home and working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

import nbflow.core.pipeline.default as default_module
from nbflow import Pipeline

# The `other_user` fixture: a second, unprivileged user, for tests of who may own a home.
pytest_plugins = ["tests.other_user"]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private NBFLOW_HOME and cwd per test, and a fresh default pipeline."""
    home = tmp_path / "home"
    monkeypatch.setenv("NBFLOW_HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(default_module, "_DEFAULT", None)
    return home


@pytest.fixture
def pipe(home: Path) -> Pipeline:
    return Pipeline("test")


class Calls:
    """Counts task executions through a file, so the counter is not part of any fingerprint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def __call__(self, name: str) -> None:
        with open(self.path, "a") as fh:
            fh.write(name + "\n")

    @property
    def names(self) -> list[str]:
        return self.path.read_text().split()

    def count(self, name: str) -> int:
        return self.names.count(name)

    def reset(self) -> None:
        self.path.write_text("")


@pytest.fixture
def calls(tmp_path: Path) -> Calls:
    return Calls(tmp_path / "calls.txt")

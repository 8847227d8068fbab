"""The distribution name: `nbflow` on PyPI is an unrelated project, so nbflow is published as
`nbflow-pipelines` (import name and command stay `nbflow`), and every install line says so."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import nbflow
from tests.conftest import ROOT

DIST = "nbflow-pipelines"


def test_the_distribution_is_not_named_like_the_other_project_on_pypi():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    assert project["scripts"] == {"nbflow": "nbflow.cli:main"}
    self_refs = [r for extra in project["optional-dependencies"].values() for r in extra]
    assert sorted(r for r in self_refs if r.startswith("nbflow")) == [
        f"{DIST}[dask,browser,alerts,test]",
        f"{DIST}[s3]",
    ]


def test_no_install_line_in_the_docs_or_messages_names_the_wrong_package():
    texts = [ROOT / "README.md", ROOT / "environment.yml", *(ROOT / "docs").rglob("*.md")]
    texts += (ROOT / "nbflow").rglob("*.py")
    wrong = re.compile(r"pip install (?:-\S+ )*[\"']?nbflow(?![-\w])")
    found = [
        f"{p.relative_to(ROOT)}: {m.group(0)}" for p in texts for m in wrong.finditer(p.read_text())
    ]
    assert found == []
    readme = (ROOT / "README.md").read_text()
    assert f"pip install {DIST}" in readme


def test_version_comes_from_the_code_not_the_installed_metadata():
    done = subprocess.run(
        [sys.executable, "-m", "nbflow.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"nbflow, version {nbflow.__version__}"

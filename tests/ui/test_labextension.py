"""The JupyterLab extension that puts the dashboard in the launcher and the command palette:
its committed build matches its sources, a wheel installs it where JupyterLab looks, and
`jupyter labextension list` shows it. (In the browser: test_dashboard_in_browser.py.)"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from tests.conftest import ROOT
from tests.ui.conftest import LABEXTENSION, install_labextension

SOURCES = ROOT / "labextension"
SHARE = "share/jupyter/labextensions/nbflow-dashboard"


def digest_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("labextension_digest", SOURCES / "digest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_files() -> set[str]:
    return {p.relative_to(LABEXTENSION).as_posix() for p in LABEXTENSION.rglob("*") if p.is_file()}


def test_the_committed_build_is_in_step_with_its_sources():
    digest = digest_module()
    assert digest.BUILD == LABEXTENSION
    built_from = (LABEXTENSION / digest.DIGEST_FILE).read_text().strip()
    now = digest.sources_digest()
    assert built_from == now, (
        "labextension/ changed since nbflow/ui/labextensions/nbflow-dashboard was built: "
        "rebuild with labextension/build.sh and commit the result"
    )
    names = {p.relative_to(SOURCES).as_posix() for p in digest.source_files()}
    assert {"package.json", "tsconfig.json", "install.json", "src/index.ts"} <= names
    assert "style/nbflow-dashboard.svg" in names

    # The build's package.json is the source's plus what the builder adds; what it loads is there.
    source = json.loads((SOURCES / "package.json").read_text())
    built = json.loads((LABEXTENSION / "package.json").read_text())
    build_info = built["jupyterlab"].pop("_build")
    assert built == source
    assert (LABEXTENSION / build_info["load"]).is_file()
    assert json.loads((LABEXTENSION / "install.json").read_text()) == json.loads(
        (SOURCES / "install.json").read_text()
    )
    # Only the build is committed: no stale bundles of an earlier build beside it.
    bundles = {f for f in build_files() if f.startswith("static/remoteEntry.")}
    assert bundles == {build_info["load"]}


def test_a_wheel_installs_the_build_where_jupyterlab_looks():
    """What `[tool.setuptools.data-files]` puts in the wheel's data (checked by hand with
    `pip wheel --no-deps`): every file of the build, under share/jupyter/labextensions."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    installed: dict[str, str] = {}
    for dest, patterns in config["data-files"].items():
        for pattern in patterns:
            matches = glob.glob(pattern, root_dir=ROOT)
            assert matches, f"data-files pattern {pattern!r} matches nothing"
            for match in matches:
                assert (ROOT / match).is_file(), f"{match} is not a file"
                installed[f"{dest}/{Path(match).name}"] = match
    expected = {
        f"{SHARE}/{name}": (LABEXTENSION / name).relative_to(ROOT).as_posix()
        for name in build_files()
    }
    assert {k: v for k, v in installed.items() if k.startswith(SHARE + "/")} == expected

    # The package holds it too (package data), so an installed nbflow has it beside its code.
    package = ROOT / "nbflow"
    shipped = {
        p.relative_to(package).as_posix()
        for pattern in config["package-data"]["nbflow"]
        for p in package.glob(pattern)
        if p.is_file()
    }
    assert {(LABEXTENSION / f).relative_to(package).as_posix() for f in build_files()} <= shipped


def test_jupyterlab_lists_the_installed_extension(tmp_path: Path):
    install_labextension(tmp_path / "data")
    env = {
        **os.environ,
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert re.search(
        r"nbflow-dashboard v0\.1\.0 enabled\s+OK \(python, nbflow-pipelines\)", text
    ), text

"""The dashboard is a layer on top: nothing below imports it, and the CLI loads its web
stack only for `nbflow ui`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BELOW = ("core", "history", "jobs")


def test_no_lower_layer_imports_the_dashboard():
    for layer in BELOW:
        for path in sorted((ROOT / "nbflow" / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                bad = [n for n in names if n == "nbflow.ui" or n.startswith("nbflow.ui.")]
                assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_cli_loads_no_web_server_until_nbflow_ui(tmp_path: Path):
    code = (
        "import nbflow.cli, sys\n"
        "print(','.join(m for m in ('jupyter_server', 'tornado', 'nbconvert', 'nbflow.ui') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"NBFLOW_HOME": str(tmp_path / "h"), "PATH": "", "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == ""

"""A cache written before the modules moved into core/pipeline, cache, run, executors and
patterns is still served after the move: fingerprints and signed records name no module path
that moved. tests/fixtures/caches/premove-home was written by commit 70677f5 (main before the
move) installed as users have it, from a site-packages folder (`git archive 70677f5 nbflow`),
running tests/fixtures/pipelines/premove_pipe.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"


def test_a_cache_written_before_the_move_is_served_after_it(tmp_path: Path) -> None:
    home = tmp_path / "premove-home"
    shutil.copytree(FIXTURES / "caches" / "premove-home", home)
    # git keeps no 0600 mode; a secret others can read is refused (docs/security.md).
    os.chmod(home / "secret.key", 0o600)
    code = (
        "import premove_pipe as m; r = m.pipe.run(); "
        "print(r.executed, sorted(r.cached), r['total'], r['summary'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={
            "NBFLOW_HOME": str(home),
            "PATH": "",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(FIXTURES / "pipelines")]),
        },
    )
    assert out.stdout.split("\n")[0] == "[] ['raw', 'summary', 'total'] 6 {'total': 6}", out.stderr

"""The README's demo command stays true: scripts/demo.sh runs end to end (as `make demo` does
after set-up) and shows caching and a scheduled job's backfill."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_script_runs_the_quickstart_a_cached_rerun_then_schedules_and_backfills(
    tmp_path: Path,
):
    env = {**os.environ, "NBFLOW_HOME": str(tmp_path / "demo-home")}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    first, _, rest = out.partition("2. A parameterized notebook, twice")
    assert "first_executed: ['extract', 'clean', 'enrich', 'load']" in first
    assert "again_executed: []" in first, "the quickstart's own rerun is served from the cache"
    shared, _, rest = rest.partition("3. Schedule")
    assert shared.count("  executed: ") == 2 and "  executed: []" in shared.split("ok:")[2], (
        "the second run of the parameterized notebook is served from the shared cache"
    )
    assert "added job `demo-etl`" in out
    assert out.count(": success in ") == 3, "one backfill run per day"
    assert "3 skipped" in out, "the second backfill skips the days that succeeded"
    history = out.partition("7. Everything that ran, in the history")[2]
    assert len(re.findall(r"job-\d+-\d+ +job +demo-etl +ok", history)) == 3, history
    assert re.search(r" notebook +daily_etl +ok", history), history
    assert re.search(r" pipeline +\S+ +ok", history), history
    # A new shell has no `nbflow` on its PATH: the demo's last lines say how to get it.
    tail = out.rstrip().splitlines()[-10:]
    assert "source .venv/bin/activate" in "\n".join(tail)
    assert ".venv/bin/nbflow" in "\n".join(tail)
    # It ends by saying how to open the dashboard on what it ran (command and URL form).
    assert re.search(r"\.venv/bin/nbflow ui --home \S+", "\n".join(tail[-4:]))
    assert "http://127.0.0.1:8765/nbflow/?token=" in "\n".join(tail[-4:])
    # Its output goes to a pipe here, not a terminal: no raw escape codes in it.
    assert "\x1b[" not in out + done.stderr
    runs = sorted((tmp_path / "demo-home" / "runs" / "demo-etl").glob("*.ipynb"))
    assert len(runs) == 3

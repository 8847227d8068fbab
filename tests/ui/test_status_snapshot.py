"""The Pipeline page says why each task would rerun now as the planner says it: a kernel's
`pipe.status()` (here: another process, after a code edit) leaves a status snapshot in the
history, and a run's end leaves one too. Real processes, a real history and cache."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbflow as nf
from nbflow.history.recorder import RECORDER, drain, open_store
from nbflow.ui import queries
from tests.conftest import ROOT
from tests.ui.conftest import TWO_TASKS

RUN = TWO_TASKS.replace("{name}", "snap") + "\npipe.run()\n"
STATUS = TWO_TASKS.replace("{name}", "snap") + "\nprint(pipe.explain('load'))\n"
FRESH = "fresh: unchanged since it last ran; its result is cached"
CODE = "stale: code of `load` changed"
DOWN = "stale: upstream `load` is stale: code of `load` changed"


def _python(work: Path, name: str, text: str) -> str:
    (work / name).write_text(text)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, name], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _reasons(src: queries.Sources) -> dict[str, tuple[str, str]]:
    view = queries.pipeline_page(src, "snap")
    return {t["name"]: (t["stale"], t["stale_from"]) for t in view["tasks"]}


def test_a_code_edit_seen_by_status_elsewhere_shows_on_the_pipeline_page(home: Path):
    work = Path.cwd()
    src = queries.Sources(home)
    _python(work, "define.py", RUN.format(value=1))
    # The run's end left a snapshot: both fresh, as of that run.
    after_run = _reasons(src)
    assert {t: r for t, (r, _) in after_run.items()} == {"load": FRESH, "double": FRESH}
    assert "(the end of run " in after_run["load"][1]

    # Another process edits `load` and asks for the status: the page shows the planner's own
    # reason, where it came from, and the downstream task stale because of it.
    said = _python(work, "edit.py", STATUS.format(value=2))
    assert said.strip() == CODE
    found = _reasons(src)
    assert found["load"][0] == CODE
    assert found["double"][0] == DOWN
    origin = found["load"][1]
    assert origin.startswith("as of ") and f"from {socket.gethostname()} pid " in origin
    assert origin.endswith(f"({work / 'edit.py'})")
    snap = open_store(home).snapshot("snap")
    assert snap is not None and snap["origin"] == "status"
    assert (snap["tasks"], snap["edges"]) == (["load", "double"], [["load", "double"]])

    # Run again with the edit: the page says fresh (the run ended after that snapshot).
    _python(work, "edit_run.py", RUN.format(value=2))
    assert {t: r for t, (r, _) in _reasons(src).items()} == {"load": FRESH, "double": FRESH}


def test_without_a_snapshot_that_holds_the_page_says_a_code_edit_is_not_seen(home: Path):
    work = Path.cwd()
    src = queries.Sources(home)
    _python(work, "define.py", RUN.format(value=1) + "\npipe.invalidate('double')\n")
    view = queries.pipeline_page(src, "snap")
    found = {t["name"]: (t["stale"], t["stale_from"]) for t in view["tasks"]}
    assert found == {
        "load": ("fresh in the cache (a code edit is not seen here)", ""),
        "double": ("stale: invalidated", ""),
    }
    assert "a code edit" in view["status_note"] and view["status_from"] == ""


def test_a_failed_run_leaves_the_planners_reason_for_it_and_its_downstream(home: Path):
    pipe = nf.Pipeline("snap")

    @pipe.task
    def load() -> int:
        raise ValueError("no data")

    @pipe.task
    def double(load: int) -> int:
        return load * 2

    pipe.run(raise_on_failure=False)
    found = _reasons(queries.Sources(home))
    planner = pipe.status()
    assert found["load"][0] == f"stale: {planner['load'].reason}"
    assert found["load"][0] == "stale: last attempt failed: ValueError: no data"
    assert found["double"][0] == (
        "stale: upstream `load` is stale: last attempt failed: ValueError: no data"
    )


def test_many_statuses_in_a_second_are_written_as_few_snapshots(home: Path):
    pipe = nf.Pipeline("busy")

    @pipe.task
    def a() -> int:
        return 1

    @pipe.task
    def b(a: int) -> int:
        return a + 1

    start = time.monotonic()
    for i in range(200):  # what a widget refreshing on each re-registered cell does
        pipe.task(lambda a, i=i: a + i, name="b")
        pipe.status()
    elapsed = time.monotonic() - start
    drain()
    store = open_store(home)
    written = store.snapshot_count("busy")
    assert 1 <= written <= 2 + int(elapsed / 1.0)
    # The last one written is the newest status.
    snap = store.snapshot("busy")
    assert snap is not None and snap["verdicts"]["b"][0] == "never-run"
    assert RECORDER._snapshot_due == {}


def test_a_runs_snapshot_does_not_carry_staleness_over_after_or_ignored_edges(home: Path):
    """`after=` orders, an input in `ignore=` is left out of the key: a failed upstream
    along either does not make the task stale, in the run's snapshot as in the planner."""
    pipe = nf.Pipeline("snap")

    @pipe.task
    def load() -> int:
        raise ValueError("no data")

    @pipe.task(after=["load"], trigger_rule="all_done")
    def tidy() -> int:
        return 1

    @pipe.task(inputs={"x": "load"}, ignore=["x"], trigger_rule="all_done")
    def note(x: int | None = None) -> int:
        return 2

    @pipe.task(inputs={"x": "load"}, trigger_rule="all_done")
    def use(x: int | None = None) -> int:
        return 3

    pipe.run(raise_on_failure=False)
    found = _reasons(queries.Sources(home))
    planner = pipe.status()
    for task in ("tidy", "note"):
        assert planner[task].state == "fresh"
        assert found[task][0] == FRESH, task
    assert found["use"][0] == f"stale: {planner['use'].reason}"

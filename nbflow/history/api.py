"""Reading the history from Python: `nf.history()`, `nf.last_run()`, `get_run()`, and the
replay source of cached tasks' output (`computed_output`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbflow.core.capture import Replayed
from nbflow.core.errors import NbflowError
from nbflow.core.home import home_dir
from nbflow.history.recorder import drain, open_store
from nbflow.history.records import RunRecord
from nbflow.history.store import FILENAME

KINDS = ("pipeline", "notebook", "job")
STATES = ("running", "ok", "failed", "interrupted")


def _check(kind: str | None, state: str | None, limit: int | None) -> None:
    if kind is not None and kind not in KINDS:
        raise NbflowError(f"unknown run kind `{kind}`; choose one of {', '.join(KINDS)}")
    if state is not None and state not in STATES:
        raise NbflowError(f"unknown run state `{state}`; choose one of {', '.join(STATES)}")
    if limit is not None and limit < 1:
        raise NbflowError(f"limit must be at least 1, not {limit}")


def history(
    name: str | None = None,
    kind: str | None = None,
    state: str | None = None,
    limit: int | None = 20,
) -> list[RunRecord]:
    """The runs recorded in the active home, newest first, each with its `.tasks`.

    `name`: a pipeline's, notebook's or job's name; `kind`: `pipeline`,
    `notebook` or `job`; `state`: `running`, `ok`, `failed` or `interrupted`;
    `limit`: at most this many (None: all). A run whose process died is
    reported (and written) as `interrupted`.
    """
    _check(kind, state, limit)
    drain()
    store = open_store()
    store.settle_interrupted()
    rows = store.runs(name=name, kind=kind, state=state, limit=limit)
    tasks = store.tasks([r["id"] for r in rows], rows)
    return [RunRecord.from_row(r, tasks[r["id"]]) for r in rows]


def last_run(name: str) -> RunRecord | None:
    """The newest run named `name` (of any kind), or None when it never ran here."""
    found = history(name, limit=1)
    return found[0] if found else None


def get_run(run_id: str) -> RunRecord:
    """The run `run_id` (or a unique prefix of it), with its tasks; `NbflowError` if unknown."""
    drain()
    store = open_store()
    store.settle_interrupted()
    row = store.run(run_id)
    if row is None:
        raise NbflowError(
            f"no run `{run_id}` in the history of this home; `nbflow history` lists the runs"
        )
    return RunRecord.from_row(row, store.tasks([row["id"]], [row])[row["id"]])


def children(run_id: str) -> list[RunRecord]:
    """The runs started by run `run_id` (its notebook run, the pipeline runs inside it)."""
    drain()
    store = open_store()
    rows = store.runs(parent=run_id, limit=None)
    tasks = store.tasks([r["id"] for r in rows], rows)
    return [RunRecord.from_row(r, tasks[r["id"]]) for r in reversed(rows)]


PANEL_RUNS = 5
PANEL_LINES = 12
_PANEL_SCAN = 50
"""Runs of the pipeline looked through for the task (a run may not have included it)."""


def task_panel(
    pipeline: str, task: str, *, runs: int = PANEL_RUNS, lines: int = PANEL_LINES
) -> dict[str, Any]:
    """What the DAG widget's selection panel shows of `task` of `pipeline` from the history:
    its last `runs` runs (newest first: run id, start, state, duration) and the last `lines`
    lines of its newest captured output, with the run that printed them.

    `{"task", "runs": [{"run", "started", "state", "duration"}], "output": {"run", "lines",
    "more"} | None}`; a home that never recorded a run gives no runs and no output (the file
    is not created for a read).
    """
    panel: dict[str, Any] = {"task": task, "runs": [], "output": None}
    if not (home_dir() / FILENAME).exists():
        return panel
    drain()
    store = open_store()
    store.settle_interrupted()
    rows = store.runs(name=pipeline, kind="pipeline", limit=_PANEL_SCAN)
    tasks = store.tasks([r["id"] for r in rows], rows)
    for row in rows:
        found = next((t for t in tasks[row["id"]] if t["task"] == task), None)
        if found is None:
            continue
        panel["runs"].append(
            {
                "run": row["id"],
                "started": row["started"],
                "state": found["state"],
                "duration": found.get("duration"),
            }
        )
        if len(panel["runs"]) >= runs:
            break
    logged = store.last_log(pipeline, task)
    if logged is not None:
        try:
            text = Path(logged["log_path"]).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:  # pruned
            text = ""
        if text:
            all_lines = text.splitlines()
            panel["output"] = {
                "run": logged["run_id"],
                "lines": all_lines[-lines:],
                "more": len(all_lines) > lines or bool(logged.get("log_dropped")),
            }
    return panel


def job_run_links(job: str, run_id: int) -> list[dict[str, Any]]:
    """The history's records of job run `run_id` of `job` (one per attempt, `job-<run>-<n>`),
    each with its inner runs: the notebook run it started and the pipeline runs inside that
    (`{"id", "kind", "name", "state", "inner": [...]}`, oldest first). Empty when the history
    holds none (recording off, pruned, or a home that never recorded)."""
    if not (home_dir() / FILENAME).exists():
        return []  # not created for a read
    drain()
    store = open_store()
    store.settle_interrupted()
    prefix = f"job-{run_id}-"
    attempts = [
        r
        for r in store.runs(name=job, kind="job", limit=None)
        if r["id"].startswith(prefix) and r["id"][len(prefix) :].isdigit()
    ]
    attempts.sort(key=lambda r: int(r["id"][len(prefix) :]))

    def tree(row: dict[str, Any], depth: int) -> dict[str, Any]:
        inner = store.runs(parent=row["id"], limit=None) if depth else []
        return {
            "id": row["id"],
            "kind": row["kind"],
            "name": row["name"],
            "state": row["state"],
            "inner": [tree(r, depth - 1) for r in reversed(inner)],
        }

    # Three levels: job run -> notebook run -> pipeline runs (-> their sub-pipelines).
    return [tree(r, 3) for r in attempts]


def computed_output(pipeline: str, task: str, key: str) -> Replayed | None:
    """What `task` of `pipeline` printed in the newest run that computed the value of cache key
    `key` (the replay source of `nbflow.core.capture`), or None when nothing was captured.

    Registered on import of `nbflow.history`; a history file that is absent is not created
    for this (a home that never recorded a run has nothing to replay).
    """
    drain()  # the computing run may be this process's previous one, still being written
    home = home_dir()
    if not (home / FILENAME).exists():
        return None
    store = open_store(home)
    row = store.computed_by(pipeline, task, key)
    if row is None or not row.get("log_path"):
        return None
    run = store.run(row["run_id"])
    try:
        text = Path(row["log_path"]).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:  # pruned logs: nothing to show
        return None
    return Replayed(
        run_id=row["run_id"],
        started=float((run or {}).get("started") or 0.0),
        text=text,
        dropped=int(row.get("log_dropped") or 0),
    )

"""Reading the history from Python: `nf.history()`, `nf.last_run()`, `get_run()`."""

from __future__ import annotations

from nbflow.core.errors import NbflowError
from nbflow.history.recorder import drain, open_store
from nbflow.history.records import RunRecord

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

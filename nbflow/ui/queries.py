"""What each dashboard page shows, read from the home: plain dicts for the templates.

Sources (`Sources`, one per server, shared by its handlers):

- the job store (`<home>/nbflow.db`, `nbflow.jobs.runstore.RunStore`): jobs and their runs;
- the run history (`<home>/history.sqlite`, `nbflow.history.store.HistoryStore`): every
  run of every kind, its tasks, attempts, reasons and log files, and per pipeline its
  newest status snapshot (the planner's verdict per task, and the graph);
- the cache (`<home>/cache`, `nbflow.core.cache.store.DiskStore`): per pipeline, the index of
  each task's latest record (key, digest, size, when, its inputs) — read without
  loading values, except a DataFrame's preview (`nbflow.ui.cached`).

Cost policy: every query here is answered from an index (the job store's
`runs_by_job_date`, the history's `runs_by_name`, `runs_by_parent` and
`runs_by_kind_name`): the overview costs one query per job and one per pipeline,
whatever the size of the history (`benchmarks/bench_dashboard.py` measures it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from nbflow.core.cache.store import DiskStore, Record
from nbflow.core.errors import JobsError, NbflowError
from nbflow.history.recorder import drain, open_store
from nbflow.history.records import RunRecord as HistoryRun
from nbflow.history.records import TaskRecord
from nbflow.history.store import HistoryStore
from nbflow.jobs.runstore import JobRecord, RunRecord, RunStore, utc_now

GRID_RUNS = 25
"""Cells per job in the overview grid (Airflow's grid shows 25 by default too)."""
PIPELINE_RUNS = 10
"""Last runs per pipeline on the overview."""
CHART_RUNS = 20
"""Runs per task in a pipeline page's duration chart."""

JOB_STATE_CLASS = {
    "success": "ok",
    "failed": "failed",
    "crashed": "failed",
    "timed_out": "failed",
    "running": "running",
    "queued": "queued",
    "missed": "muted",
    "skipped": "muted",
    "cancelled": "muted",
}
HISTORY_STATE_CLASS = {"ok": "ok", "failed": "failed", "running": "running", "interrupted": "warn"}
TASK_STATE_CLASS = {
    "done": "ok",
    "cached": "cached",
    "failed": "failed",
    "upstream_failed": "failed",
    "skipped": "muted",
    "running": "running",
    "interrupted": "warn",
}


@dataclass
class Sources:
    """The stores of one home, opened once per server (each is safe across threads)."""

    home: Path
    _jobs: RunStore | None = None
    _cache: DiskStore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _schedules: dict[tuple[str, str], Any] = field(default_factory=dict)
    _next: dict[tuple[str, str, bool], dt.datetime | None] = field(default_factory=dict)

    def schedule(self, record: JobRecord) -> Any:
        """The job's `Schedule`, parsed once per version of its definition."""
        key = (record.name, f"{record.updated_at.isoformat()}|{record.paused}")
        found = self._schedules.get(key)
        if found is None:
            found = self._schedules[key] = record.schedule
        return found

    def next_run(self, record: JobRecord, now: dt.datetime) -> dt.datetime | None:
        """The job's next tick after `now` (None while paused or when it has ended),
        computed again only once that tick has passed or the job changed: the overview
        is drawn often, and computing cron ticks is half of its cost."""
        if record.paused:
            return None
        key = (record.name, f"{record.updated_at.isoformat()}|{record.active_since}", False)
        cached = self._next.get(key)
        if cached is not None and cached > now:
            return cached
        ticks = self.schedule(record).next_ticks(max(now, record.active_since), 1)
        self._next[key] = ticks[0] if ticks else None
        return self._next[key]

    @property
    def jobs(self) -> RunStore:
        with self._lock:
            if self._jobs is None:
                self._jobs = RunStore(self.home / "nbflow.db")
            return self._jobs

    @property
    def history(self) -> HistoryStore:
        return open_store(self.home)

    @property
    def cache(self) -> DiskStore:
        with self._lock:
            if self._cache is None:
                self._cache = DiskStore(self.home / "cache", home=self.home)
            return self._cache


# --- formatting -------------------------------------------------------------------------


def when(moment: dt.datetime | float | None, tz: str = "UTC") -> str:
    """`2024-01-02 02:00 CET` in `tz` (a float is a UNIX time); "-" for None."""
    if moment is None:
        return "-"
    if isinstance(moment, int | float):
        moment = dt.datetime.fromtimestamp(moment, dt.UTC)
    local = moment.astimezone(ZoneInfo(tz))
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def seconds(value: float | None) -> str:
    """A duration for people: `12 ms`, `3.4 s`, `2 min 5 s`, `1 h 3 min`."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60)} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60)} min"


def size(value: int | None) -> str:
    """Bytes for people: `12 B`, `2.0 KB`, `3.5 MB`, `1.2 GB`."""
    if value is None:
        return "-"
    if value < 1024:
        return f"{value} B"
    scaled = float(value)
    for unit in ("KB", "MB", "GB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"


# --- overview ---------------------------------------------------------------------------


def _job_row(src: Sources, record: JobRecord, now: dt.datetime, limit: int) -> dict[str, Any]:
    job = src.schedule(record)
    nxt = src.next_run(record, now)
    cells = src.jobs.run_cells(record.name, limit)
    return {
        "name": record.name,
        "when": job.describe_when(),
        "tz": job.tz,
        "paused": record.paused,
        "next_run": when(nxt, job.tz),
        "notebook": job.notebook,
        "runs": [_cell(record.name, *cell, job.tz) for cell in reversed(cells)],
    }


def _job_run_cell(run: RunRecord, tz: str) -> dict[str, Any]:
    return _cell(run.job, run.id, run.run_type, run.logical_date, run.state, tz)


def _cell(
    job: str, run_id: int, run_type: str, logical: dt.datetime, state: str, tz: str
) -> dict[str, Any]:
    shown = when(logical, tz)
    return {
        "id": run_id,
        "job": job,
        "state": state,
        "css": JOB_STATE_CLASS.get(state, "muted"),
        "type": run_type,
        "logical": shown,
        "title": f"{shown} · {run_type} · {state}",
    }


def overview(src: Sources, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Every job (schedule in words, zone, next run, paused, last runs as grid cells) and
    every pipeline of the history with its last runs."""
    now = now or utc_now()
    jobs = [_job_row(src, record, now, GRID_RUNS) for record in src.jobs.list_jobs()]
    store = src.history
    pipelines = []
    for name, last in store.names("pipeline"):
        runs = store.runs(name=name, kind="pipeline", limit=PIPELINE_RUNS)
        pipelines.append(
            {
                "name": name,
                "last": when(last),
                "runs": [_history_cell(r) for r in reversed(runs)],
            }
        )
    return {"jobs": jobs, "pipelines": pipelines}


def _history_cell(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "state": row["state"],
        "css": HISTORY_STATE_CLASS.get(row["state"], "muted"),
        "title": f"{when(row['started'])} · {row['state']} · {seconds(row.get('duration'))}",
    }


# --- job --------------------------------------------------------------------------------


def job_page(
    src: Sources,
    name: str,
    *,
    state: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 200,
) -> dict[str, Any]:
    """One job: its definition, next runs, its parameters form and its filtered history."""
    from nbflow.jobs.parameters import NOT_A_LITERAL, notebook_parameters

    record = src.jobs.get_job(name)
    job = record.schedule
    now = utc_now()
    ticks = job.next_ticks(max(now, record.active_since), 3)
    runs = src.jobs.list_runs(name, states=state, since=since, until=until, limit=limit)
    declared: dict[str, Any] = {}
    problem = ""
    try:
        declared = notebook_parameters(job.notebook)
    except Exception as exc:  # a notebook moved or broken: the page still shows the history
        problem = str(exc)
    params = []
    for pname, param in declared.items():
        default = param.default
        if pname in job.parameters:
            text = str(job.parameters[pname])
        elif isinstance(default, str):
            text = default
        elif default is NOT_A_LITERAL:
            text = ""
        else:
            text = param.source
        params.append(
            {
                "name": pname,
                "text": text,
                "type": param.type or "",
                "comment": param.comment,
                "input": _input_kind(param.type, default),
                "computed": default is NOT_A_LITERAL and pname not in job.parameters,
            }
        )
    failed = [r for r in runs if r.state in ("failed", "crashed", "timed_out")]
    return {
        "name": name,
        "when": job.describe_when(),
        "tz": job.tz,
        "paused": record.paused,
        "notebook": job.notebook,
        "retries": job.retries,
        "next_runs": [when(t, job.tz) for t in ticks],
        "params": params,
        "params_problem": problem,
        "runs": [_job_run_row(r, job.tz) for r in runs],
        "failed_count": len(failed),
        "grid": [_job_run_cell(r, job.tz) for r in reversed(runs[:GRID_RUNS])],
    }


def _input_kind(annotation: str | None, default: Any) -> str:
    kind = annotation or type(default).__name__
    if kind == "bool":
        return "bool"
    if kind in ("int", "float"):
        return "number"
    return "text"


def _job_run_row(run: RunRecord, tz: str) -> dict[str, Any]:
    return {
        **_job_run_cell(run, tz),
        "attempts": run.attempts,
        "started": when(run.started_at, tz),
        "duration": seconds(run.duration),
        "error": (run.error or "").strip().splitlines()[-1:] or [""],
        "params": run.parameters,
    }


# --- runs -------------------------------------------------------------------------------


def job_run(src: Sources, name: str, run_id: int) -> dict[str, Any]:
    """One job run: its row, its attempts on a timeline (from the history's `job-<id>-<n>`
    records), and, for the latest attempt, its notebook run and the pipeline runs inside."""
    run = src.jobs.get_run(run_id)
    if run.job != name:
        raise JobsError(f"run {run_id} belongs to job `{run.job}`, not `{name}`")
    found = src.jobs.find_job(name)
    tz = found.schedule.tz if found is not None else "UTC"
    drain()
    store = src.history
    store.settle_interrupted()
    attempts = []
    for n in range(1, run.attempts + 1):
        row = store.run(f"job-{run_id}-{n}")
        if row is not None and row["id"] == f"job-{run_id}-{n}":
            attempts.append(row)
    inner: list[dict[str, Any]] = []
    notebook_run = None
    if attempts:
        for child in store.runs(parent=attempts[-1]["id"], limit=None):
            if child["kind"] == "notebook":
                notebook_run = child
                inner = store.runs(parent=child["id"], limit=None)
                inner.reverse()
    return {
        "job": name,
        "run": run,
        "tz": tz,
        "state": run.state,
        "css": JOB_STATE_CLASS.get(run.state, "muted"),
        "logical": when(run.logical_date, tz),
        "started": when(run.started_at, tz),
        "ended": when(run.ended_at, tz),
        "duration": seconds(run.duration),
        "timeline": timeline(attempts),
        "notebook_run": notebook_run["id"] if notebook_run else None,
        "outputs": (notebook_run or {}).get("outputs") or {},
        "has_notebook": bool(run.output_path and Path(run.output_path).is_file()),
        "pipelines": [pipeline_run_view(src, row) for row in inner],
        "active": run.state in ("queued", "running"),
    }


def timeline(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attempts as bars on one time axis: left and width in percent of the whole span."""
    if not attempts:
        return []
    start = min(a["started"] for a in attempts)
    end = max((a.get("ended") or a.get("heartbeat") or time.time()) for a in attempts)
    span = max(end - start, 1e-6)
    bars = []
    for i, a in enumerate(attempts, 1):
        stop = a.get("ended") or a.get("heartbeat") or time.time()
        bars.append(
            {
                "number": i,
                "id": a["id"],
                "state": a["state"],
                "css": HISTORY_STATE_CLASS.get(a["state"], "muted"),
                "left": round(100 * (a["started"] - start) / span, 2),
                "width": max(round(100 * (stop - a["started"]) / span, 2), 0.5),
                "started": when(a["started"]),
                "duration": seconds(a.get("duration")),
                "error": (a.get("error") or "").strip().splitlines()[-1:] or [""],
            }
        )
    return bars


def pipeline_run_view(src: Sources, row: dict[str, Any]) -> dict[str, Any]:
    """A pipeline run: its tasks (state, duration, reason, attempts, log) and its DAG."""
    tasks = [TaskRecord.from_row(t) for t in src.history.tasks([row["id"]], [row])[row["id"]]]
    states = {t.name: t.state for t in tasks}
    graph = row.get("graph") or {}
    if graph.get("tasks"):  # the run's own graph: its tasks that did not run are drawn too
        states = {name: "never-run" for name in graph["tasks"]} | states
    return {
        "id": row["id"],
        "name": row["name"],
        "state": row["state"],
        "css": HISTORY_STATE_CLASS.get(row["state"], "muted"),
        "started": when(row["started"]),
        "duration": seconds(row.get("duration")),
        "params": row.get("params") or {},
        "error": row.get("error") or "",
        "tasks": [_task_view(t) for t in tasks],
        "dag": dag_svg(src, row["name"], list(states), states, graph.get("edges")),
    }


def _task_view(t: TaskRecord) -> dict[str, Any]:
    return {
        "name": t.name,
        "state": t.state,
        "css": TASK_STATE_CLASS.get(t.state, "muted"),
        "duration": seconds(t.duration),
        "reason": t.reason or ("loaded from the cache" if t.cached else ""),
        "attempts": len(t.attempts),
        "error": t.error,
        "has_log": bool(t.log_path) and t.log_size > 0,
        "log_size": size(t.log_size),
        "metadata": t.metadata or {},
        "size": size(t.size),
    }


def history_run(src: Sources, run_id: str) -> dict[str, Any]:
    """Any run of the history by id (or unique prefix): pipeline, notebook or job attempt."""
    drain()
    store = src.history
    store.settle_interrupted()
    row = store.run(run_id)
    if row is None:
        raise NbflowError(f"no run `{run_id}` in the history of {src.home}")
    children = store.runs(parent=row["id"], limit=None)
    children.reverse()
    view: dict[str, Any] = {
        "id": row["id"],
        "kind": row["kind"],
        "name": row["name"],
        "state": row["state"],
        "css": HISTORY_STATE_CLASS.get(row["state"], "muted"),
        "started": when(row["started"]),
        "ended": when(row.get("ended")),
        "duration": seconds(row.get("duration")),
        "params": row.get("params") or {},
        "partition": row.get("partition"),
        "outputs": row.get("outputs") or {},
        "error": row.get("error") or "",
        "host": row.get("host"),
        "parent": row.get("parent"),
        "children": [_history_cell(c) | {"kind": c["kind"], "name": c["name"]} for c in children],
        "has_notebook": bool(
            row["kind"] == "notebook" and row.get("output") and Path(row["output"]).is_file()
        ),
        "active": row["state"] == "running",
        "pipelines": [],
    }
    if row["kind"] == "pipeline":
        view["pipelines"] = [pipeline_run_view(src, row)]
    else:
        view["pipelines"] = [pipeline_run_view(src, c) for c in children if c["kind"] == "pipeline"]
    return view


def history_live_state(src: Sources, run_id: str) -> dict[str, Any]:
    """The JSON a run page of the history polls: its state and its tasks' states."""
    view = history_run(src, run_id)
    return {
        "state": view["state"],
        "active": view["active"],
        "tasks": {p["id"]: {t["name"]: t["state"] for t in p["tasks"]} for p in view["pipelines"]},
    }


def task_log(src: Sources, run_id: str, task: str) -> str:
    """What `task` printed in run `run_id` (the history's log file)."""
    store = src.history
    row = store.run(run_id)
    if row is None:
        raise KeyError(run_id)
    record = HistoryRun.from_row(row, store.tasks([row["id"]], [row])[row["id"]])
    return record.task(task).log


def live_state(src: Sources, name: str, run_id: int) -> dict[str, Any]:
    """The JSON the live page polls: the run's state and its tasks' states."""
    view = job_run(src, name, run_id)
    return {
        "state": view["state"],
        "css": view["css"],
        "duration": view["duration"],
        "active": view["active"],
        "attempts": len(view["timeline"]),
        "tasks": {
            p["id"]: {t["name"]: [t["state"], t["css"], t["duration"]] for t in p["tasks"]}
            for p in view["pipelines"]
        },
        "pipelines": [p["id"] for p in view["pipelines"]],
    }


# --- pipelines and the cache ------------------------------------------------------------


def edges_from_cache(
    src: Sources, pipeline: str
) -> tuple[dict[str, Record], list[tuple[str, str]]]:
    """The pipeline's latest records and the edges they name: each record keeps its inputs
    as `{param: [upstream task, digest]}` (the history keeps tasks, not the graph)."""
    try:
        index = src.cache.index(pipeline)
    except Exception:  # an unreadable cache: the DAG is drawn without edges
        return {}, []
    edges = []
    for task, record in index.items():
        for upstream, _digest in ((record.get("parts") or {}).get("inputs") or {}).values():
            edges.append((upstream, task))
    return index, sorted(set(edges))


def dag_svg(
    src: Sources,
    pipeline: str,
    nodes: list[str],
    states: dict[str, str],
    edges: list[list[str]] | list[tuple[str, str]] | None = None,
) -> str | None:
    """The DAG as SVG with nodes coloured by state (the widget's renderer), or None when
    Graphviz is missing or there is nothing to draw. The edges are the run's own graph
    when it recorded one, else what the pipeline's cache records name as inputs."""
    from nbflow.viz.render import GraphvizMissing, layout

    if not nodes:
        return None
    if edges is None:
        _index, edges = edges_from_cache(src, pipeline)
    known = set(nodes)
    kept = tuple((u, d) for u, d in edges if u in known and d in known)
    try:
        return layout(tuple(nodes), kept).static_svg(states)
    except GraphvizMissing:
        return None


def pipeline_page(src: Sources, name: str) -> dict[str, Any]:
    """A pipeline: its DAG with the latest states, why each task would rerun now, and per
    task its duration over its last runs, its last outputs and its last log.

    "Why now" is the planner's own verdict when the history holds a status snapshot that
    still holds (`current_snapshot`: taken by a kernel's `pipe.status()`, `pipe.explain()`
    or widget, or at a run's end, and no run ended after it): a code edit shows there. Else
    it is what the cache can tell without the code (`stale_reasons`). The edges are the
    snapshot's graph when there is one, else those the cache records name."""
    drain()  # this process's own runs and statuses, written before they are read
    store = src.history
    runs = store.runs(name=name, kind="pipeline", limit=CHART_RUNS)
    if not runs:
        raise NbflowError(f"no run of pipeline `{name}` in the history of {src.home}")
    index, edges = edges_from_cache(src, name)
    try:
        state = src.cache.pipeline_state(name)
    except Exception:  # an unreadable cache: nothing known against any task
        state = {"invalidated": {}, "failed": {}}
    snapshot = store.snapshot(name)
    if snapshot is not None and snapshot.get("tasks") is not None:
        edges = sorted({(u, d) for u, d in snapshot.get("edges") or ()})
    current = current_snapshot(snapshot, runs, state)
    latest_tasks = store.tasks([runs[0]["id"]], runs[:1])[runs[0]["id"]]
    order = list((snapshot or {}).get("tasks") or ())
    for task in [t["task"] for t in latest_tasks] + list(index):
        if task not in order:
            order.append(task)
    latest_states = {t["task"]: t["state"] for t in latest_tasks}
    stale = stale_reasons(order, edges, index, state)
    planned = snapshot_reasons(current) if current is not None else {}
    origin = snapshot_origin(current) if current is not None else ""
    tasks = []
    for task in order:
        history = [TaskRecord.from_row(r) for r in store.task_runs(name, task, CHART_RUNS)]
        last = history[0] if history else None
        tasks.append(
            {
                "name": task,
                "state": latest_states.get(task, "never-run"),
                "css": TASK_STATE_CLASS.get(latest_states.get(task, ""), "muted"),
                "stale": planned.get(task, stale[task]),
                "stale_from": origin if task in planned else "",
                "chart": duration_chart(list(reversed(history))),
                "last_run": last.run_id if last else None,
                "last_metadata": (last.metadata if last else None) or {},
                "last_reason": last.reason if last else "",
                "has_log": bool(last and last.log_path and last.log_size),
            }
        )
    from nbflow.viz.render import GraphvizMissing, layout

    svg = None
    with contextlib.suppress(GraphvizMissing):
        known = set(order)
        svg = layout(
            tuple(order), tuple((u, d) for u, d in edges if u in known and d in known)
        ).static_svg({t: latest_states.get(t, "never-run") for t in order})
    return {
        "name": name,
        "dag": svg,
        "tasks": tasks,
        "status_from": origin,
        "status_note": ""
        if current is not None
        else (
            "Why each task would rerun now is what the cache can tell: a code edit, a "
            "changed parameter or global is not seen here (no `pipe.status()` of this "
            "pipeline since its last run)."
        ),
        "runs": [_history_cell(r) | {"started": when(r["started"])} for r in runs],
    }


def current_snapshot(
    snapshot: dict[str, Any] | None, runs: list[dict[str, Any]], state: dict[str, Any]
) -> dict[str, Any] | None:
    """`snapshot` if the cache state it describes still holds: no run of the pipeline (among
    `runs`, its latest) ended after it was taken, nor was a task invalidated since."""
    if snapshot is None:
        return None
    taken = snapshot["taken"]
    ended = max((r["ended"] for r in runs if r.get("ended") is not None), default=None)
    if ended is not None and ended > taken:
        return None
    invalidated = (state.get("invalidated") or {}).values()
    if any(when_ > taken for when_ in invalidated):
        return None
    return snapshot


def snapshot_reasons(snapshot: dict[str, Any]) -> dict[str, str]:
    """task -> the line `pipe.explain()` says of it, from a status snapshot (the tasks it
    calls `unknown` are left out)."""
    from nbflow.core.result import TaskStatus

    verdicts = snapshot.get("verdicts") or {}
    out: dict[str, str] = {}
    for task in snapshot.get("tasks") or verdicts:
        verdict = verdicts.get(task, ["fresh", "", ""])
        if verdict[0] == "unknown":
            continue
        out[task] = TaskStatus(task, verdict[0], verdict[1], verdict[2]).explained()
    return out


def snapshot_origin(snapshot: dict[str, Any]) -> str:
    """ "as of TIME, from HOST pid N (FILE)"; a run's snapshot names the run too."""
    text = f"as of {when(snapshot['taken'])}"
    if snapshot.get("origin") == "run" and snapshot.get("run_id"):
        text += f" (the end of run {snapshot['run_id']})"
    text += f", from {snapshot.get('host') or 'an unknown host'} pid {snapshot.get('pid')}"
    if snapshot.get("source"):
        text += f" ({snapshot['source']})"
    return text


def stale_reasons(
    order: list[str],
    edges: list[tuple[str, str]],
    index: dict[str, Record],
    state: dict[str, Any],
) -> dict[str, str]:
    """Why each task would rerun now, from what the cache knows (invalidations, failures,
    missing values), propagated downstream: the Pipeline page's fallback when no status
    snapshot holds. A code edit is not seen here, so a task the cache knows nothing against
    reads "fresh in the cache"."""
    invalidated = state.get("invalidated") or {}
    failed = state.get("failed") or {}
    own: dict[str, str] = {}
    for task in order:
        record = index.get(task)
        if record is None:
            own[task] = "stale: no cached value (never run, or not cached)"
        elif task in failed:
            own[task] = f"stale: last attempt failed: {failed[task].get('error', 'error')}"
        elif invalidated.get(task, 0.0) > record.get("created", 0.0):
            own[task] = "stale: invalidated"
    ups: dict[str, list[str]] = {}
    for up, down in edges:
        ups.setdefault(down, []).append(up)
    out: dict[str, str] = {}
    for task in order:  # the latest run's order is a topological order
        # As the planner does: a stale upstream is the reason before the task's own.
        root = next((u for u in ups.get(task, []) if out.get(u, "").startswith("stale")), None)
        if root:
            out[task] = f"stale: upstream `{root}` is stale"
        elif task in own:
            out[task] = own[task]
        else:
            out[task] = "fresh in the cache (a code edit is not seen here)"
    return out


def duration_chart(history: list[TaskRecord], width: int = 220, height: int = 40) -> str:
    """An inline SVG bar chart of a task's durations over its last runs (oldest left),
    cached runs drawn as short cyan bars. Values are numbers only: nothing to escape."""
    if not history:
        return ""
    peak = max((t.duration or 0.0) for t in history) or 1.0
    step = width / max(len(history), 1)
    bars = []
    for i, t in enumerate(history):
        value = t.duration or 0.0
        h = max(2.0, (height - 4) * value / peak)
        fill = {"failed": "#dc2626", "cached": "#22d3ee"}.get(t.state, "#16a34a")
        bars.append(
            f'<rect x="{i * step + 1:.1f}" y="{height - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{fill}"><title>{seconds(t.duration)} ({t.state})</title></rect>'
        )
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="durations">{"".join(bars)}</svg>'
    )

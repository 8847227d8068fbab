"""A run report: one self-contained HTML file telling what one run did (`nf.report`, `nbflow report`).

Responsibilities:

- **Read the history only.** The report is built from the run's record and the
  records of the runs it started (a job run → its notebook run → the pipeline
  runs inside its kernel → their sub-pipeline runs), their task logs and the
  executed output notebook. Nothing is run and no cache value is loaded, so a
  report can be made long after the pipeline's code changed.
- **One file, nothing fetched.** Styles are inline, the DAG is inline SVG laid
  out by Graphviz (the widget's renderer, coloured by the final task states),
  the notebook is rendered without its CDN scripts (`notebook_html`). A content
  security policy in the page (`CSP`) forbids loading anything from the
  network, so a file mailed around shows the same everywhere and tells no server
  that it was opened.
- **What came from the run is text, except the notebook.** Every value from
  the history (names, parameters, reasons, logs, metadata) goes through
  Jinja2's autoescaping. The executed notebook is HTML and JavaScript of
  unknown origin: it is embedded as the `srcdoc` of an iframe whose `sandbox`
  allows scripts but not `allow-same-origin`, so its scripts run in an opaque
  origin and cannot read the report, its other parts or its file.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbflow.core.errors import NbflowError
from nbflow.history.api import children, get_run
from nbflow.history.records import RunRecord, TaskRecord

MAX_RUNS = 200
"""Runs in one report at most (a job run with a very long tail of sub-pipeline runs is cut,
and the report says so)."""

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    # Inline scripts only, for the notebook's frame (it inherits this policy): the report has
    # none of its own, and a sandboxed frame without same-origin cannot reach the report.
    "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)

# Colours of run states (task states use the DAG's colours, `render.STATES`).
RUN_COLOURS = {
    "ok": "#16a34a",
    "failed": "#dc2626",
    "running": "#3b82f6",
    "interrupted": "#fb923c",
}


@dataclass
class _Section:
    """One run as the report shows it."""

    run: RunRecord
    depth: int
    children: list[RunRecord] = field(default_factory=list)
    dag: str | None = None
    dag_note: str = ""
    notebook: str | None = None
    notebook_path: str | None = None
    notebook_note: str = ""


def report(run_id: str) -> str:
    """The report of run `run_id` (or a unique prefix of its id) as one HTML document.

    Works for every kind of run: a pipeline run shows its DAG, tasks and logs; a notebook
    run adds its rendered output notebook; a job run includes its notebook run and the
    pipeline runs inside it. Raises `NbflowError` for a run id the history does not know.
    """
    run = get_run(run_id)
    parent = _parent_of(run)
    sections, cut = _sections(run, parent)
    return _render(sections, parent=parent, cut=cut)


def home_report_path(home: Path, run_id: str) -> Path:
    """Where the home keeps the report of run `run_id` (the one an alert names):
    `<home>/reports/<run id>.html`, in a folder private to the user (0700, files 0600: a
    report holds what the tasks printed). `nbflow history prune` removes it with its run."""
    from nbflow.core.home import private_subdir

    return private_subdir(home, "reports") / f"{run_id}.html"


def write_report(run_id: str, path: str | Path, *, private: bool = False) -> Path:
    """Write the report of run `run_id` to `path` (the file is replaced whole); returns it.

    The file is readable as any file the user makes (the umask decides), unless `private`:
    then it is 0600, as the home's own reports are."""
    import os
    import tempfile

    target = Path(path)
    if target.is_dir():
        raise NbflowError(f"{target} is a folder; give the report's file name, e.g. report.html")
    if not target.parent.exists():
        raise NbflowError(f"the folder {target.parent} does not exist; create it first")
    text = report(run_id)
    # Written beside and renamed, so a reader (an alert's recipient) never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not private:
        # mkstemp made it 0600; a report given a name is for the people the user sends it to.
        os.chmod(target, 0o644 & ~_umask())
    return target


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- gathering ------------------------------------------------------------------------------


def _sections(run: RunRecord, parent: RunRecord | None) -> tuple[list[_Section], int]:
    """The run and, depth first, the runs it started; and how many were left out."""
    out: list[_Section] = []
    seen: set[str] = set()
    cut = 0

    def visit(record: RunRecord, depth: int, parent: RunRecord | None) -> None:
        nonlocal cut
        if record.id in seen:  # a loop in parent links (a hand-edited file): shown once
            return
        if len(out) >= MAX_RUNS:
            cut += 1
            return
        seen.add(record.id)
        section = _Section(record, depth, children=children(record.id))
        _add_dag(section)
        if record.kind == "job" and any(c.kind == "notebook" for c in section.children):
            pass  # a job run's notebook is shown once, with its notebook run
        else:
            _add_notebook(section, parent)
        out.append(section)
        for child in section.children:
            visit(child, depth + 1, record)

    visit(run, 0, parent)
    return out, cut


def _parent_of(run: RunRecord) -> RunRecord | None:
    if not run.parent:
        return None
    try:
        return get_run(run.parent)
    except NbflowError:  # pruned: the report names its id only
        return None


def _states(run: RunRecord) -> dict[str, str]:
    states = {name: "never-run" for name in run.graph_tasks}
    states.update({t.name: t.state for t in run.tasks})
    return states


def _add_dag(section: _Section) -> None:
    """The run's DAG as SVG coloured by the final task states (pipeline runs)."""
    from nbflow.viz.render import GraphvizMissing, layout

    run = section.run
    if run.kind != "pipeline":
        return
    if not run.graph_tasks:
        # The graph is written with the run's end (off the run's thread: see the recorder).
        section.dag_note = (
            "the run has not ended: its graph is written when it does; the tasks it finished "
            "so far are below"
            if run.state == "running"
            else "the history holds no graph of this run (its process died before writing "
            "it, or an older nbflow recorded it): its tasks are drawn without their "
            "dependencies"
        )
    if not (run.graph_tasks or run.tasks):
        return
    states = _states(run)
    nodes = tuple(states)
    known = set(nodes)
    edges = tuple(sorted({(u, d) for u, d in run.edges if u in known and d in known}))
    try:
        section.dag = layout(nodes, edges).static_svg(states)
    except GraphvizMissing as exc:
        section.dag_note = str(exc)


def _add_notebook(section: _Section, parent: RunRecord | None) -> None:
    """A notebook (or job) run's executed notebook, rendered; a note when it is gone."""
    from nbflow.ui.notebook_html import notebook_html

    run = section.run
    if run.kind not in ("notebook", "job"):
        return
    job: RunRecord | None = None  # the job run whose attempt this is
    if run.kind == "job":
        job = run
    elif parent is not None and parent.kind == "job":
        job = parent
    later = _next_attempt(job) if job is not None else None
    if job is not None and later is not None:
        # Every attempt of a job run publishes its notebook under the same path: this
        # attempt's was replaced by the next one's.
        section.notebook_path = job.output
        section.notebook_note = (
            f"this attempt's output notebook was replaced by the one of the next attempt, "
            f"run {later} (a job keeps its last attempt's notebook)"
        )
        return
    candidates = [run.output]
    # A job's notebook run wrote an attempt's working copy, published afterwards under the
    # job run's output path.
    if job is not None and job is not run:
        candidates.append(job.output)
    paths = [Path(p) for p in candidates if p]
    found = next((p for p in paths if p.is_file()), None)
    if found is None:
        if paths:
            section.notebook_path = str(paths[0])
            section.notebook_note = (
                f"the output notebook {paths[0]} is no longer there (moved, or pruned)"
            )
        elif run.state == "running":
            section.notebook_note = "the run has not finished: no output notebook yet"
        else:
            section.notebook_note = "this run left no output notebook"
        return
    section.notebook_path = str(found)
    try:
        section.notebook = _restrict(notebook_html(found))
    except NbflowError as exc:
        section.notebook_note = str(exc)


def _next_attempt(job: RunRecord) -> str | None:
    """The history id of the attempt after job run `job` (`job-<run>-<attempt>`), if it ran."""
    import re

    match = re.fullmatch(r"job-(\d+)-(\d+)", job.id)
    if match is None:
        return None
    later = f"job-{match[1]}-{int(match[2]) + 1}"
    try:
        found = get_run(later)
    except NbflowError:
        return None
    return later if found.id == later else None


def _restrict(document: str) -> str:
    """The notebook's document with the report's content policy in its own head too (a
    `srcdoc` frame inherits it from the report; this keeps it when the frame's text is
    saved and opened alone)."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    head = document.find("<head>")
    if head < 0:
        return meta + document
    at = head + len("<head>")
    return document[:at] + meta + document[at:]


# --- presenting -------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _value(value: Any) -> str:
    """A parameter or metadata value as text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _why(task: TaskRecord) -> str:
    if task.cached:
        return "loaded from the cache: code and inputs unchanged"
    if task.state == "failed":
        return task.reason + (f" — failed: {task.error}" if task.error else "")
    return task.reason or "-"


def _attempts(task: TaskRecord) -> list[dict[str, str]]:
    return [
        {
            "number": str(a.number),
            "took": _took(a.end - a.start if a.end is not None and a.start is not None else None),
            "error": a.error,
        }
        for a in task.attempts
    ]


def _task_view(task: TaskRecord) -> dict[str, Any]:
    from nbflow.viz.render import STATES, colour

    return {
        "name": task.name,
        "state": task.state,
        "label": STATES.get(task.state, ("", task.state))[1],
        "colour": colour(task.state),
        "duration": _took(task.duration),
        "attempts": _attempts(task),
        "why": _why(task),
        "size": _bytes(task.size),
        "key": (task.key or "")[:16],
        "log": task.log,
        "log_size": _bytes(task.log_size) if task.log_path else "",
        "log_dropped": task.log_dropped,
        "metadata": [(k, _value(v)) for k, v in (task.metadata or {}).items()],
        "checks": [
            {
                "name": name,
                "passed": bool(check.get("passed")),
                "message": check.get("message") or "",
                "blocking": bool(check.get("blocking")),
                "cached": bool(check.get("cached")),
            }
            for name, check in (task.checks or {}).items()
        ],
        "traceback": task.traceback,
        "error": task.error,
    }


def _run_view(section: _Section) -> dict[str, Any]:
    from nbflow.viz.render import STATES

    run = section.run
    states = _states(run) if run.kind == "pipeline" else {}
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return {
        "id": run.id,
        "kind": run.kind,
        "name": run.name,
        "state": run.state,
        "colour": RUN_COLOURS.get(run.state, "#6b7280"),
        "depth": min(section.depth, 4),
        "started": _when(run.started),
        "ended": _when(run.ended),
        "duration": _took(run.duration),
        "host": run.host or "-",
        "pid": run.pid,
        "version": run.version or "-",
        "partition": run.partition,
        "error": run.error,
        "params": [(k, _value(v)) for k, v in (run.params or {}).items()],
        "children": [
            {"id": c.id, "kind": c.kind, "name": c.name, "state": c.state} for c in section.children
        ],
        "parent": run.parent,
        "tasks": [_task_view(t) for t in run.tasks],
        "counts": sorted(counts.items()),
        "legend": [(STATES[s][0], STATES[s][1]) for s in STATES if s in set(states.values())],
        "dag": section.dag,
        "dag_note": section.dag_note,
        "notebook": section.notebook,
        "notebook_path": section.notebook_path,
        "notebook_note": section.notebook_note,
        "output": run.output,
    }


def _render(sections: list[_Section], *, parent: RunRecord | None, cut: int) -> str:
    from markupsafe import Markup

    import nbflow

    views = [_run_view(s) for s in sections]
    for view in views:
        # The SVG is Graphviz's own (task names escaped by it); the notebook is escaped into
        # the `srcdoc` attribute by autoescaping, as text.
        if view["dag"] is not None:
            view["dag"] = Markup(view["dag"])
    main = views[0]
    return _template().render(
        csp=CSP,
        main=main,
        runs=views,
        parent=(
            {"id": parent.id, "kind": parent.kind, "name": parent.name, "state": parent.state}
            if parent is not None
            else (
                {"id": main["parent"], "kind": "", "name": "", "state": "pruned"}
                if main["parent"]
                else None
            )
        ),
        cut=cut,
        made=_when(dt.datetime.now(dt.UTC).timestamp()),
        made_by=nbflow.__version__,
    )


def _template() -> Any:
    global _COMPILED
    if _COMPILED is None:
        from jinja2 import Environment, StrictUndefined

        env = Environment(
            autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
        )
        _COMPILED = env.from_string(_TEMPLATE)
    return _COMPILED


_COMPILED: Any = None

_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="nbflow {{ made_by }}">
<title>nbflow report: {{ main.kind }} {{ main.name }} {{ main.id }} ({{ main.state }})</title>
<style>
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #111827;
       margin: 0; background: #f9fafb; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 8px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #111827; color: #e5e7eb; padding: 10px 12px; border-radius: 6px;
      overflow: auto; max-height: 480px; white-space: pre-wrap; word-break: break-word; margin: 6px 0; }
section.run { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 16px 18px;
              margin: 16px 0; }
section.run.depth-1 { margin-left: 16px; } section.run.depth-2 { margin-left: 32px; }
section.run.depth-3 { margin-left: 48px; } section.run.depth-4 { margin-left: 64px; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-weight: 600;
         font-size: 12px; }
.kind { color: #6b7280; font-weight: normal; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { text-align: left; vertical-align: top; padding: 4px 10px 4px 0; border-bottom: 1px solid #f3f4f6; }
th { color: #6b7280; font-weight: 600; }
table.summary th { width: 120px; }
td.swatch i, .legend i { display: inline-block; width: 11px; height: 11px; border: 1px solid #374151;
                         border-radius: 3px; margin-right: 6px; vertical-align: -1px; }
.legend { color: #4b5563; font-size: 12px; } .legend span { margin-right: 14px; }
.dag { overflow: auto; max-height: 640px; border: 1px solid #f3f4f6; border-radius: 6px; padding: 6px; }
.dag svg { max-width: 100%; height: auto; }
details { margin: 4px 0; } summary { cursor: pointer; }
.note { color: #6b7280; font-style: italic; }
.error { color: #b91c1c; }
.pass { color: #15803d; font-weight: 600; } .fail { color: #b91c1c; font-weight: 600; }
iframe.notebook { width: 100%; height: 80vh; border: 1px solid #e5e7eb; border-radius: 6px;
                  resize: vertical; background: #fff; }
footer { color: #9ca3af; font-size: 12px; margin: 24px 0; }
</style>
</head>
<body>
<main>
<header>
<h1>{{ main.name }} <span class="kind">{{ main.kind }} run</span>
<span class="state" style="background:{{ main.colour }}">{{ main.state }}</span></h1>
<div class="note">run {{ main.id }}, started {{ main.started }}, took {{ main.duration }}</div>
</header>
{% if parent %}
<p>Started by {{ parent.kind }} run <code>{{ parent.id }}</code>{% if parent.name %} `{{ parent.name }}` ({{ parent.state }}){% else %} (no longer in the history){% endif %}.</p>
{% endif %}
{% if cut %}
<p class="note">{{ cut }} more run(s) started by this one are not shown (at most {{ runs|length }} runs in one report).</p>
{% endif %}
{% for run in runs %}
<section class="run depth-{{ run.depth }}" id="run-{{ run.id }}">
{% if loop.first %}
<h2>Summary</h2>
{% else %}
<h2>{{ run.name }} <span class="kind">{{ run.kind }} run <code>{{ run.id }}</code></span>
<span class="state" style="background:{{ run.colour }}">{{ run.state }}</span></h2>
{% endif %}
<table class="summary">
<tr><th>started</th><td>{{ run.started }}</td></tr>
<tr><th>ended</th><td>{{ run.ended }}</td></tr>
<tr><th>duration</th><td>{{ run.duration }}</td></tr>
<tr><th>host</th><td>{{ run.host }}{% if run.pid %} (pid {{ run.pid }}){% endif %}</td></tr>
<tr><th>nbflow</th><td>{{ run.version }}</td></tr>
{% if run.partition %}<tr><th>partition</th><td>{{ run.partition }}</td></tr>{% endif %}
{% if run.parent %}<tr><th>parent run</th><td><a href="#run-{{ run.parent }}"><code>{{ run.parent }}</code></a></td></tr>{% endif %}
{% if run.children %}<tr><th>child runs</th><td>
{% for c in run.children %}<a href="#run-{{ c.id }}"><code>{{ c.id }}</code></a> {{ c.kind }} `{{ c.name }}` {{ c.state }}{% if not loop.last %}<br>{% endif %}{% endfor %}
</td></tr>{% endif %}
{% if run.counts %}<tr><th>tasks</th><td>{% for s, n in run.counts %}{{ n }} {{ s }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endif %}
{% if run.output %}<tr><th>output</th><td><code>{{ run.output }}</code></td></tr>{% endif %}
{% if run.error %}<tr><th>error</th><td class="error">{{ run.error }}</td></tr>{% endif %}
</table>
<h3>Parameters</h3>
{% if run.params %}
<table class="params">
{% for k, v in run.params %}<tr><th><code>{{ k }}</code></th><td><code>{{ v }}</code></td></tr>{% endfor %}
</table>
{% else %}<p class="note">none</p>{% endif %}
{% if run.dag or run.dag_note %}
<h3>DAG</h3>
{% if run.dag %}<div class="dag">{{ run.dag }}</div>
<div class="legend">{% for c, label in run.legend %}<span><i style="background:{{ c }}"></i>{{ label }}</span>{% endfor %}</div>{% endif %}
{% if run.dag_note %}<p class="note">{{ run.dag_note }}</p>{% endif %}
{% endif %}
{% if run.tasks %}
<h3>Tasks</h3>
<table class="tasks">
<thead><tr><th>task</th><th>state</th><th>duration</th><th>attempts</th><th>why it ran (or did not)</th><th>value</th><th>log</th></tr></thead>
<tbody>
{% for t in run.tasks %}
<tr class="task" data-task="{{ t.name }}" data-state="{{ t.state }}">
<td><code>{{ t.name }}</code></td>
<td class="swatch"><i style="background:{{ t.colour }}"></i>{{ t.state }}</td>
<td>{{ t.duration }}</td>
<td>{% if t.attempts %}{{ t.attempts|length }}{% for a in t.attempts %}{% if t.attempts|length > 1 %}<br>#{{ a.number }} {{ a.took }}{% if a.error %} <span class="error">{{ a.error }}</span>{% endif %}{% endif %}{% endfor %}{% else %}-{% endif %}</td>
<td>{{ t.why }}</td>
<td>{{ t.size }}{% if t.key %}<br><code class="note">{{ t.key }}</code>{% endif %}</td>
<td>{% if t.log_size %}<a href="#log-{{ run.id }}-{{ loop.index }}">{{ t.log_size }}</a>{% else %}-{% endif %}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% for t in run.tasks if t.metadata or t.checks %}
{% if loop.first %}<h3>Outputs and checks</h3>{% endif %}
<h4><code>{{ t.name }}</code></h4>
{% if t.metadata %}<table class="metadata">{% for k, v in t.metadata %}<tr><th><code>{{ k }}</code></th><td>{% if "\n" in v or v|length > 80 %}<pre>{{ v }}</pre>{% else %}<code>{{ v }}</code>{% endif %}</td></tr>{% endfor %}</table>{% endif %}
{% if t.checks %}<table class="checks">{% for c in t.checks %}<tr><th><code>{{ c.name }}</code></th><td class="{{ 'pass' if c.passed else 'fail' }}">{{ 'passed' if c.passed else 'failed' }}</td><td>{{ c.message }}{% if c.blocking %} <span class="note">(blocking)</span>{% endif %}{% if c.cached %} <span class="note">(from the cache)</span>{% endif %}</td></tr>{% endfor %}</table>{% endif %}
{% endfor %}
{% for t in run.tasks if t.log or t.traceback %}
{% if loop.first %}<h3>Logs</h3>{% endif %}
<details class="log" id="log-{{ run.id }}-{{ loop.index }}"{% if t.state == "failed" %} open{% endif %}>
<summary><code>{{ t.name }}</code> {{ t.state }}{% if t.log_size %} · {{ t.log_size }}{% endif %}{% if t.log_dropped %} · {{ t.log_dropped }} bytes cut, the tail kept{% endif %}</summary>
{% if t.log %}<pre>{{ t.log }}</pre>{% endif %}
{% if t.traceback %}<pre class="traceback">{{ t.traceback }}</pre>{% endif %}
</details>
{% endfor %}
{% endif %}
{% if run.notebook or run.notebook_note %}
<h3>Output notebook</h3>
{% if run.notebook_path %}<p class="note"><code>{{ run.notebook_path }}</code></p>{% endif %}
{% if run.notebook %}
<iframe class="notebook" sandbox="allow-scripts" referrerpolicy="no-referrer" title="output notebook of run {{ run.id }}" srcdoc="{{ run.notebook }}"></iframe>
{% else %}<p class="note">{{ run.notebook_note }}</p>{% endif %}
{% endif %}
</section>
{% endfor %}
<footer>Made by nbflow {{ made_by }} at {{ made }} from the run history; times in UTC. The notebook is shown in a sandboxed frame: its scripts cannot reach this page.</footer>
</main>
</body>
</html>
"""


__all__ = ["home_report_path", "report", "write_report"]

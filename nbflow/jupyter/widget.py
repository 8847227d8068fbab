"""The live DAG widget: `nf.show()`, `pipe.show()`, `%nbflow dag`.

`DagWidget` is an anywidget (an ipywidgets `DOMWidget`) and a listener of its
pipeline's events (a listener like any other; the runner does not know it
exists). It keeps each task's state, duration, attempts, stale reason and
error, and pushes them to its synced traits, from which the JavaScript
recolours the SVG that Graphviz laid out once per graph shape. Pushes are
throttled (at most one every `interval` seconds, and always at the start and
end of a run), so a run of a thousand tiny tasks is not slowed by its display.
Being a widget, it goes into `ipywidgets.VBox`, `Tab` and dashboards;
`close()` detaches it from the pipeline.

The output's mime bundle also carries the graph as a static SVG (and an HTML
version with a legend), refreshed when a run finishes, so papermill output
notebooks and nbconvert HTML show the final graph. Where the widget appears
when `nf.show()` is called mid-cell is `nbflow.jupyter.display`'s policy.
Without Graphviz's `dot`, the widget shows how to install it and a table of
tasks and states.

Clicking a node selects it; the panel offers run, run with downstream,
invalidate and explain, and shows the task's last runs (state, duration) and
the last lines it printed, read from the run history (`history_panel`) when
the node is selected and again after each run.
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from nbflow.core import events as ev
from nbflow.jupyter import display
from nbflow.viz import render

if TYPE_CHECKING:
    from nbflow.core.pipeline.pipeline import Pipeline

_STATIC = Path(__file__).parent / "static"


_INNER_STATES: dict[type, str] = {
    ev.TaskStarted: "running",
    ev.TaskRetrying: "retrying",
    ev.TaskFinished: "done",
    ev.TaskCached: "cached",
    ev.TaskFailed: "failed",
}
"""A sub-pipeline's inner task events -> the state their node shows."""


class DagWidget(anywidget.AnyWidget):
    """A pipeline's live DAG: an ipywidgets `DOMWidget` that listens to the pipeline's runs.

    It is what `nf.show()` and `pipe.show()` return, so it composes like any
    widget (`ipywidgets.VBox([pipe.show(), ...])`, a `Tab`). The Python side keeps
    each task's state and details as events arrive; `push` copies them to the
    synced traits (`states`, `info`, `progress`) that the browser reads.
    `close()` stops listening to the pipeline and closes the widget.

    `live=False` (a notebook run by nbflow: no browser is attached) makes a
    widget without a front-end model: its output is the static graph only.
    """

    _esm = (_STATIC / "dag.js").read_text()
    _css = (_STATIC / "dag.css").read_text()

    pipeline = traitlets.Unicode("").tag(sync=True)
    svg = traitlets.Unicode("").tag(sync=True)
    node_ids = traitlets.Dict().tag(sync=True)
    states = traitlets.Dict().tag(sync=True)
    info = traitlets.Dict().tag(sync=True)
    progress = traitlets.Dict().tag(sync=True)
    legend: traitlets.List[Any] = traitlets.List().tag(sync=True)
    fallback = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    task_history = traitlets.Dict().tag(sync=True)
    """The selected task's last runs and output lines (`nbflow.history.api.task_panel`)."""

    def __init__(self, pipe: Pipeline, *, interval: float = 0.1, live: bool | None = None) -> None:
        if live is None:
            # In a papermill run started by nbflow no browser is attached: the
            # static graph is what the output notebook (and its HTML) keeps.
            live = os.environ.get("NBFLOW_HEADLESS") != "1"
        self.live = live  # read by `open`, which ipywidgets calls from __init__
        super().__init__(
            pipeline=pipe.name,
            legend=[
                [s, c, label, render.legend_group(s)] for s, (c, label) in render.STATES.items()
            ],
        )
        self.pipe = pipe
        self.interval = interval
        self._states: dict[str, str] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, Any] = {
            "done": 0,
            "cached": 0,
            "total": 0,
            "failed": 0,
            "active": False,
            "started": None,
            "elapsed": 0.0,
        }
        self._last_push = 0.0
        self._shape: Any = None
        self._layout: render.Layout | None = None
        self._run_tasks: set[str] = set()
        self._closed = False
        self._lock = threading.RLock()
        """Held while an event is applied and while the state is copied for the browser."""
        self._dirty = False
        self._timer: threading.Timer | None = None
        self.placement = display.Placement(self, self.mimebundle)
        self.on_msg(self._on_message)
        self.refresh()
        pipe.add_listener(self)

    def open(self) -> None:
        """Open the front-end model (ipywidgets' comm) only when a browser may show it."""
        if getattr(self, "live", True):
            super().open()

    # --- state ---------------------------------------------------------------

    def _relayout(self) -> None:
        shape = render.shape_of(self.pipe)
        if shape == self._shape:
            return
        self._shape = shape
        try:
            self._layout = render.layout(*shape)
        except render.GraphvizMissing:
            self._layout = None
        if self._layout is not None:
            self.node_ids = self._layout.node_ids
            self.svg = self._layout.svg
            self.fallback = ""
        else:
            self.svg = ""
            self.node_ids = {}

    def refresh(self) -> None:
        """Show the pipeline as it stands: each task fresh, stale (and why) or never run."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        self._relayout()
        status = self.pipe.status()
        self._states = {n: s.state for n, s in status.items()}
        self._info = {n: {"reason": s.reason} if s.reason else {} for n, s in status.items()}
        for outer, _, _ in self._shape[2] if self._shape else ():
            inner = self.pipe.tasks[outer].fn.inner  # type: ignore[attr-defined]  # a SubpipelineCall
            for n, s in inner.status().items():
                self._states[f"{outer}/{n}"] = s.state
                self._info[f"{outer}/{n}"] = {"reason": s.reason} if s.reason else {}
        stale = len(status.stale())
        self._progress.update(
            done=0, cached=0, total=len(status), failed=0, active=False, stale=stale
        )
        self.push()

    def __call__(self, event: ev.Event) -> None:
        """Receive one run event; recolour at most every `interval` seconds."""
        with self._lock:
            self._receive(event)

    def _receive(self, event: ev.Event) -> None:
        match event:
            case ev.RunStarted():
                self._relayout()
                self._run_tasks = set(event.tasks)
                for name in event.tasks:
                    if name in event.stale:
                        self._states[name] = "queued"
                        self._info[name] = {"reason": event.stale[name]}
                self.placement.run_started()
                self._progress.update(
                    done=0,
                    cached=0,
                    total=len(event.tasks),
                    failed=0,
                    active=True,
                    started=event.time,
                    elapsed=0.0,
                )
                self.push()
                return
            case ev.TaskStarted():
                self._states[event.task] = "running"
                self._info.setdefault(event.task, {})["attempts"] = event.attempt
            case ev.TaskRetrying():
                self._states[event.task] = "retrying"
                detail = self._info.setdefault(event.task, {})
                detail.update(attempts=event.attempt, error=event.error)
            case ev.TaskFinished():
                self._final(event.task, "done")
                detail = self._info.setdefault(event.task, {})
                detail.update(duration=event.duration, attempts=event.attempts)
                detail.pop("error", None)
                if event.metadata:
                    detail["metadata"] = _jsonable(event.metadata)
                    self._inner_states(event.task, event.metadata)
            case ev.TaskCached():
                self._final(event.task, "cached")
                if event.task in self._run_tasks:
                    self._progress["cached"] += 1
                detail = {"reason": "unchanged: loaded from the cache"}
                if event.metadata:
                    detail["metadata"] = _jsonable(event.metadata)
                self._info[event.task] = detail
                if event.metadata:
                    self._inner_states(event.task, event.metadata)
            case ev.TaskFailed():
                self._final(event.task, "failed")
                self._progress["failed"] += 1
                self._info.setdefault(event.task, {}).update(
                    error=event.error, attempts=event.attempts, duration=event.duration
                )
            case ev.TaskSkipped():
                self._final(event.task, event.state)
                self._info.setdefault(event.task, {})["reason"] = event.reason
            case ev.MapExpanded():
                # A mapped task's instances are grouped under its node.
                cached = set(event.cached)
                self._info.setdefault(event.task, {})["instances"] = {
                    str(label): "cached" if i in cached else "queued"
                    for i, label in enumerate(event.labels or range(event.size))
                }
            case ev.MapInstance():
                instances = self._info.setdefault(event.task, {}).setdefault("instances", {})
                instances[str(event.label)] = event.state
            case ev.SubpipelineEvent():
                self._inner_event(event.task, event.event)
            case ev.RunFinished():
                self._progress.update(active=False, elapsed=event.duration)
                self.push()
                self._update_static()
                return
            case _:
                return
        if event.time - self._last_push >= self.interval:
            self.push()
        else:
            self._push_later()

    def _push_later(self) -> None:
        """An event arrived too soon after the last push: send it `interval` after that push.

        Without this, a task that starts right after another finishes would show
        `queued` for as long as it runs, since its next event is its end. The timer
        thread only copies the state under the lock; the run goes on meanwhile.
        """
        self._dirty = True
        if self._timer is not None:
            return
        delay = max(0.0, self._last_push + self.interval - time.time())
        self._timer = threading.Timer(delay, self._push_pending)
        self._timer.daemon = True
        self._timer.start()

    def _push_pending(self) -> None:
        with self._lock:
            self._timer = None
            if self._dirty and not self._closed:
                self.push()

    def _inner_event(self, task: str, inner: ev.Event) -> None:
        """Recolour an inner task of sub-pipeline task `task` while the sub-pipeline runs."""
        if isinstance(inner, ev.RunStarted):
            changes = dict.fromkeys(inner.stale, "queued")
        elif isinstance(inner, ev.TaskSkipped):
            changes = {inner.task: inner.state}
        elif type(inner) in _INNER_STATES:
            changes = {inner.task: _INNER_STATES[type(inner)]}  # type: ignore[attr-defined]
            if isinstance(inner, ev.TaskFailed):
                self._info.setdefault(f"{task}/{inner.task}", {})["error"] = inner.error
        else:
            return
        for name, state in changes.items():
            node = f"{task}/{name}"
            if node in self._states:
                self._states[node] = state

    def _inner_states(self, task: str, metadata: dict[str, Any]) -> None:
        """A sub-pipeline task reports which of its inner tasks ran and which were cached."""
        for key, state in (("executed", "done"), ("cached", "cached")):
            for inner in metadata.get(key) or ():
                name = f"{task}/{inner}"
                if name in self._states:
                    self._states[name] = state

    def _final(self, name: str, state: str) -> None:
        if name in self._run_tasks:
            self._progress["done"] += 1
        self._states[name] = state

    def push(self) -> None:
        """Send the current states to the browser (one message per changed trait)."""
        with self._lock:
            self._push()

    def _push(self) -> None:
        self._dirty = False
        if self._timer is not None:  # this push sends what the timer was waiting to send
            self._timer.cancel()
            self._timer = None
        self._last_push = time.time()
        progress = self._progress
        if progress.get("active") and progress.get("started"):
            progress["elapsed"] = time.time() - progress["started"]
        progress["text"] = progress_text(progress)
        with self.hold_sync():
            self.states = dict(self._states)
            self.info = {n: dict(d) for n, d in self._info.items()}
            self.progress = dict(progress)
            if self._layout is None:
                self.fallback = render.fallback_html(self.pipe.name, self._states, self._info)

    # --- actions from the browser ------------------------------------------------

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        action, task = str(content.get("action", "")), str(content.get("task", ""))
        if action == "history":  # a node was selected, or a run ended with one selected
            self.history_panel(task)
            return
        self.act(action, task)
        if action in ("run", "run_downstream"):
            self.history_panel(task)

    def history_panel(self, task: str) -> dict[str, Any]:
        """Read `task`'s last runs and output lines from the history into `task_history`
        (what the selection panel shows); a history that cannot be read is said there."""
        from nbflow.history.api import task_panel

        try:
            panel = task_panel(self.pipe.name, task)
        except Exception as exc:  # the panel says so; a display never raises into the comm
            panel = {"task": task, "runs": [], "output": None, "error": f"{exc}"}
        self.task_history = _jsonable(panel)
        return panel

    def act(self, action: str, task: str) -> str:
        """Run, run with downstream, invalidate or explain `task`; returns the message shown."""
        pipe = self.pipe
        try:
            if action == "explain":
                message = f"{task}: {pipe.explain(task)}"
            elif action == "invalidate":
                marked = pipe.invalidate(task)
                self.refresh()
                message = f"invalidated {', '.join(marked)}"
            elif action in ("run", "run_downstream"):
                targets = [task]
                if action == "run_downstream":
                    targets += sorted(pipe.downstream(task))
                result = pipe.run(targets, params=pipe._last_params, raise_on_failure=False)
                self._bind(result)
                message = (
                    f"ran {len(result.executed)} ({', '.join(result.executed) or 'nothing'}), "
                    f"{len(result.cached)} from cache"
                    + ("" if result.ok else " — FAILED; select a red node for its error")
                )
            else:
                message = f"unknown action {action!r}"
        except Exception as exc:  # shown in the widget, never raised into the comm
            message = f"{type(exc).__name__}: {exc}"
        self.message = message
        return message

    def _bind(self, result: Any) -> None:
        """Task cells run from the widget bind their outputs as if their cell had run (the
        magics give that callback with `set_run_binder`)."""
        if _BINDER is not None:
            _BINDER(self.pipe, result)

    # --- display -----------------------------------------------------------------

    def static_svg(self) -> str:
        if self._layout is None:
            return ""
        return self._layout.static_svg(self._states)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for s in self._states.values():
            counts[s] = counts.get(s, 0) + 1
        parts = ", ".join(f"{n} {render.STATES.get(s, ('', s))[1]}" for s, n in counts.items())
        return f"nbflow pipeline `{self.pipe.name}`: {len(self._states)} tasks ({parts})"

    def mimebundle(self) -> dict[str, Any]:
        """What a display of the widget shows: the live view (when it has a front-end model)
        and, for saved notebooks and HTML, the static SVG with a legend (or the table)."""
        data: dict[str, Any] = {"text/plain": self.summary()}
        if self._layout is not None:
            svg = self.static_svg()
            data["image/svg+xml"] = svg
            data["text/html"] = (
                f'<div class="nbflow-static"><div><b>{html.escape(self.summary())}</b></div>'
                f"{svg}{render.legend_html(self._shown_states())}</div>"
            )
        else:
            data["text/html"] = render.fallback_html(self.pipe.name, self._states, self._info)
        if self.comm is not None and not self._closed:
            data[_WIDGET_VIEW] = {"version_major": 2, "version_minor": 0, "model_id": self.model_id}
        return data

    def _shown_states(self) -> list[str]:
        present = set(self._states.values())
        return [s for s in render.STATES if s in present]

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[Any, Any], dict[Any, Any]]:
        return self.mimebundle(), {}

    def _ipython_display_(self) -> None:
        # Shown once per cell, in the place `show()` reserved when it did (display.py).
        self.placement.display()

    def _update_static(self) -> None:
        self.placement.refresh()

    def close(self) -> None:
        """Stop listening to the pipeline and close the front-end model (its views go away)."""
        if getattr(self, "_closed", True):
            return  # closed already, or __init__ did not finish (ipywidgets calls close in __del__)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        pipe = getattr(self, "pipe", None)
        if pipe is not None:
            pipe.remove_listener(self)
        super().close()


_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def progress_text(progress: dict[str, Any]) -> str:
    """The header's count: `4/4 done`, `4/4 done (2 cached)`, `4 cached` when nothing
    ran, with `, 1 failed` when a task failed (the browser adds the time)."""
    done, total = progress.get("done", 0), progress.get("total", 0)
    cached, failed = progress.get("cached", 0), progress.get("failed", 0)
    if total and cached == done == total and not progress.get("active"):
        return f"{cached} cached"
    extras = [f"{cached} cached"] * bool(cached) + [f"{failed} failed"] * bool(failed)
    return f"{done}/{total} done" + (f" ({', '.join(extras)})" if extras else "")


def _jsonable(value: Any) -> Any:
    import json

    if isinstance(value, dict) and isinstance(value.get("display"), dict):
        # A task cell's shown value (cells.with_display): its text, not its whole bundle
        # (HTML, images) in every update sent to the browser.
        text = value["display"].get("data", {}).get("text/plain", "")
        value = {**value, "display": str(text)[:200]}
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return (
            {k: repr(v)[:200] for k, v in value.items()} if isinstance(value, dict) else repr(value)
        )


RunBinder = Callable[["Pipeline", Any], None]
"""Called with the pipeline and the `RunResult` of a run started from a widget."""

_BINDER: RunBinder | None = None


def set_run_binder(binder: RunBinder | None) -> None:
    """Who puts the values of a run started from a widget into the notebook: the `%%task`
    magics, while the extension is loaded (`None` when it is unloaded)."""
    global _BINDER
    _BINDER = binder


def show(pipe: Pipeline, *, interval: float = 0.1, widget: bool | None = None) -> DagWidget:
    """The live DAG widget of `pipe`, shown where this is called in a cell (see display.py
    for when exactly), and returned to compose or close."""
    view = DagWidget(pipe, interval=interval, live=widget)
    view.placement.reserve()
    return view

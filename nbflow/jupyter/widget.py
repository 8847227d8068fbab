"""The live DAG widget: `nf.show()`, `pipe.show()`, `%nbflow dag`.

`DagView` listens to its pipeline's events (it is a listener like any other;
the runner does not know it exists) and keeps each task's state, duration,
attempts, stale reason and error. It pushes them to `DagWidget`, an
anywidget whose JavaScript recolours the SVG that Graphviz laid out once per
graph shape. Pushes are throttled (at most one every `interval` seconds, and
always at the start and end of a run), so a run of a thousand tiny tasks is
not slowed by its display.

The output's mime bundle also carries the graph as a static SVG (and an HTML
version with a legend), refreshed when a run finishes through the display's
id, so papermill output notebooks and nbconvert HTML show the final graph.
Without Graphviz's `dot`, the widget shows how to install it and a table of
tasks and states.

Clicking a node selects it; the panel offers run, run with downstream,
invalidate and explain.
"""

from __future__ import annotations

import html
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from nbflow.core import events as ev
from nbflow.jupyter import render

if TYPE_CHECKING:
    from nbflow.core.pipeline import Pipeline

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
    """The front-end half: SVG, states and per-node details, synced to the browser."""

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


class DagView:
    """A pipeline's live DAG: a listener of its runs that drives a `DagWidget`."""

    def __init__(
        self, pipe: Pipeline, *, interval: float = 0.1, widget: bool | None = None
    ) -> None:
        self.pipe = pipe
        self.interval = interval
        self.states: dict[str, str] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.progress: dict[str, Any] = {
            "done": 0,
            "total": 0,
            "failed": 0,
            "active": False,
            "started": None,
            "elapsed": 0.0,
        }
        self.display_id = f"nbflow-dag-{uuid.uuid4().hex}"
        self._displayed = False
        self._last_push = 0.0
        self._shape: Any = None
        self._layout: render.Layout | None = None
        self._run_tasks: set[str] = set()
        if widget is None:
            # In a papermill run started by nbflow no browser is attached: the
            # static graph is what the output notebook (and its HTML) keeps.
            widget = os.environ.get("NBFLOW_HEADLESS") != "1"
        self.widget = DagWidget(pipeline=pipe.name) if widget else None
        if self.widget is not None:
            self.widget.legend = [[s, c, label] for s, (c, label) in render.STATES.items()]
            self.widget.on_msg(self._on_message)
        self.refresh()
        pipe.add_listener(self)

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
        if self.widget is not None:
            if self._layout is not None:
                self.widget.node_ids = self._layout.node_ids
                self.widget.svg = self._layout.svg
                self.widget.fallback = ""
            else:
                self.widget.svg = ""
                self.widget.node_ids = {}

    def refresh(self) -> None:
        """Show the pipeline as it stands: each task fresh, stale (and why) or never run."""
        self._relayout()
        status = self.pipe.status()
        self.states = {n: s.state for n, s in status.items()}
        self.info = {n: {"reason": s.reason} if s.reason else {} for n, s in status.items()}
        for outer, _, _ in self._shape[2] if self._shape else ():
            inner = self.pipe.tasks[outer].fn.inner  # type: ignore[attr-defined]  # a SubpipelineCall
            for n, s in inner.status().items():
                self.states[f"{outer}/{n}"] = s.state
                self.info[f"{outer}/{n}"] = {"reason": s.reason} if s.reason else {}
        stale = len(status.stale())
        self.progress.update(done=0, total=len(status), failed=0, active=False, stale=stale)
        self.push()

    def __call__(self, event: ev.Event) -> None:
        """Receive one run event; recolour at most every `interval` seconds."""
        match event:
            case ev.RunStarted():
                self._relayout()
                self._run_tasks = set(event.tasks)
                for name in event.tasks:
                    if name in event.stale:
                        self.states[name] = "queued"
                        self.info[name] = {"reason": event.stale[name]}
                self.progress.update(
                    done=0,
                    total=len(event.tasks),
                    failed=0,
                    active=True,
                    started=event.time,
                    elapsed=0.0,
                )
                self.push()
                return
            case ev.TaskStarted():
                self.states[event.task] = "running"
                self.info.setdefault(event.task, {})["attempts"] = event.attempt
            case ev.TaskRetrying():
                self.states[event.task] = "retrying"
                detail = self.info.setdefault(event.task, {})
                detail.update(attempts=event.attempt, error=event.error)
            case ev.TaskFinished():
                self._final(event.task, "done")
                detail = self.info.setdefault(event.task, {})
                detail.update(duration=event.duration, attempts=event.attempts)
                detail.pop("error", None)
                if event.metadata:
                    detail["metadata"] = _jsonable(event.metadata)
                    self._inner_states(event.task, event.metadata)
            case ev.TaskCached():
                self._final(event.task, "cached")
                detail = {"reason": "unchanged: loaded from the cache"}
                if event.metadata:
                    detail["metadata"] = _jsonable(event.metadata)
                self.info[event.task] = detail
                if event.metadata:
                    self._inner_states(event.task, event.metadata)
            case ev.TaskFailed():
                self._final(event.task, "failed")
                self.progress["failed"] += 1
                self.info.setdefault(event.task, {}).update(
                    error=event.error, attempts=event.attempts, duration=event.duration
                )
            case ev.TaskSkipped():
                self._final(event.task, event.state)
                self.info.setdefault(event.task, {})["reason"] = event.reason
            case ev.MapExpanded():
                # A mapped task's instances are grouped under its node.
                cached = set(event.cached)
                self.info.setdefault(event.task, {})["instances"] = {
                    str(label): "cached" if i in cached else "queued"
                    for i, label in enumerate(event.labels or range(event.size))
                }
            case ev.MapInstance():
                instances = self.info.setdefault(event.task, {}).setdefault("instances", {})
                instances[str(event.label)] = event.state
            case ev.SubpipelineEvent():
                self._inner_event(event.task, event.event)
            case ev.RunFinished():
                self.progress.update(active=False, elapsed=event.duration)
                self.push()
                self._update_static()
                return
            case _:
                return
        if event.time - self._last_push >= self.interval:
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
                self.info.setdefault(f"{task}/{inner.task}", {})["error"] = inner.error
        else:
            return
        for name, state in changes.items():
            node = f"{task}/{name}"
            if node in self.states:
                self.states[node] = state

    def _inner_states(self, task: str, metadata: dict[str, Any]) -> None:
        """A sub-pipeline task reports which of its inner tasks ran and which were cached."""
        for key, state in (("executed", "done"), ("cached", "cached")):
            for inner in metadata.get(key) or ():
                name = f"{task}/{inner}"
                if name in self.states:
                    self.states[name] = state

    def _final(self, name: str, state: str) -> None:
        if name in self._run_tasks:
            self.progress["done"] += 1
        self.states[name] = state

    def push(self) -> None:
        """Send the current states to the browser (one message per changed trait)."""
        self._last_push = time.time()
        if self.progress.get("active") and self.progress.get("started"):
            self.progress["elapsed"] = time.time() - self.progress["started"]
        w = self.widget
        if w is None:
            return
        with w.hold_sync():
            w.states = dict(self.states)
            w.info = {n: dict(d) for n, d in self.info.items()}
            w.progress = dict(self.progress)
            if self._layout is None:
                w.fallback = render.fallback_html(self.pipe.name, self.states, self.info)

    # --- actions from the browser ------------------------------------------------

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        self.act(str(content.get("action", "")), str(content.get("task", "")))

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
        if self.widget is not None:
            self.widget.message = message
        return message

    def _bind(self, result: Any) -> None:
        """Task cells run from the widget bind their outputs as if their cell had run."""
        from nbflow.jupyter import extension

        magics = extension._MAGICS
        if magics is not None:
            magics._bind(self.pipe, result, list(result.states))

    # --- display -----------------------------------------------------------------

    def static_svg(self) -> str:
        if self._layout is None:
            return ""
        return self._layout.static_svg(self.states)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for s in self.states.values():
            counts[s] = counts.get(s, 0) + 1
        parts = ", ".join(f"{n} {render.STATES.get(s, ('', s))[1]}" for s, n in counts.items())
        return f"nbflow pipeline `{self.pipe.name}`: {len(self.states)} tasks ({parts})"

    def mimebundle(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text/plain": self.summary()}
        if self._layout is not None:
            svg = self.static_svg()
            data["image/svg+xml"] = svg
            data["text/html"] = (
                f'<div class="nbflow-static"><div><b>{html.escape(self.summary())}</b></div>'
                f"{svg}{render.legend_html(self._shown_states())}</div>"
            )
        else:
            data["text/html"] = render.fallback_html(self.pipe.name, self.states, self.info)
        if self.widget is not None:
            raw: Any = self.widget._repr_mimebundle_()
            bundle: dict[str, Any] = (raw[0] if isinstance(raw, tuple) else raw) or {}
            for key, value in bundle.items():
                if key != "text/plain":
                    data[key] = value
        return data

    def _shown_states(self) -> list[str]:
        present = set(self.states.values())
        return [s for s in render.STATES if s in present]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.mimebundle()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.mimebundle(), raw=True, display_id=self.display_id)
        self._displayed = True

    def _update_static(self) -> None:
        if not self._displayed:
            return
        from IPython.display import update_display

        update_display(self.mimebundle(), raw=True, display_id=self.display_id)

    def close(self) -> None:
        """Stop listening to the pipeline."""
        self.pipe.remove_listener(self)
        if self.widget is not None:
            self.widget.close()


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return (
            {k: repr(v)[:200] for k, v in value.items()} if isinstance(value, dict) else repr(value)
        )


def show(pipe: Pipeline, **kwargs: Any) -> DagView:
    """The live DAG of `pipe`; display it (the last expression of a cell displays it)."""
    return DagView(pipe, **kwargs)

"""Where a widget from `nf.show()` appears in the notebook, and how its outputs are refreshed.

Policy (the rule docs/notebook-workflow.md states):

- `nf.show()` shows the widget wherever it is called in a cell, and returns it.
  It reserves an (empty) output at the call site; the widget fills it
  - when it is displayed in the same cell (it was the cell's last
    expression, or `display(w)` was called): so it appears once, not twice;
  - when a run of its pipeline starts in that cell (so the run is watched live);
  - at the latest when the cell ends.
- A widget that was put into a container (`ipywidgets.VBox([nf.show(), ...])`,
  a `Tab`, an `AppLayout`) before any of these moments is shown by its
  container only; its reserved output stays empty.
- A widget appears at most once per cell; displaying it again in a later cell
  adds a new output, as for any widget.
- Every output showing the widget is refreshed when a run finishes (its static
  SVG, kept by saved notebooks and nbconvert's HTML, has the final states).

Cells are counted through IPython's `pre_run_cell` event, and the cell's end
is its `post_run_cell` event; both are registered on first use.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable
from typing import Any

Bundle = Callable[[], dict[str, Any]]

_cell = 0
"""Counts the cells run since the hooks were registered: which cell we are in."""
_pending: list[Placement] = []
_hooked: weakref.WeakSet[Any] = weakref.WeakSet()


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the jupyter layer depends on IPython
        return None
    return get_ipython()


def _next_cell(*_: Any) -> None:
    global _cell
    _cell += 1


def _cell_ended(*_: Any) -> None:
    waiting, _pending[:] = list(_pending), []
    for placement in waiting:
        placement.settle()


def _hook(shell: Any) -> None:
    if shell in _hooked:
        return
    shell.events.register("pre_run_cell", _next_cell)
    shell.events.register("post_run_cell", _cell_ended)
    _hooked.add(shell)


def _in_container(widget: Any) -> bool:
    """Is `widget` a child of an ipywidgets container (or is an Output widget capturing, so
    that a display now belongs there)? Containers keep no back-reference to their
    children, so the live widgets are scanned (ipywidgets' own registry)."""
    try:
        import ipywidgets
        from ipywidgets.widgets.widget import _instances
    except ImportError:  # pragma: no cover
        return False
    for other in list(_instances.values()):
        if isinstance(other, ipywidgets.Box) and widget in other.children:
            return True
    return False


def _output_capturing() -> bool:
    """An `ipywidgets.Output` context is open: a display now goes into it, not elsewhere."""
    try:
        import ipywidgets
        from ipywidgets.widgets.widget import _instances
    except ImportError:  # pragma: no cover
        return False
    return any(isinstance(w, ipywidgets.Output) and w.msg_id for w in list(_instances.values()))


class Placement:
    """One widget's outputs in the notebook: the one `nf.show()` reserved, and those filled."""

    def __init__(self, widget: Any, bundle: Bundle) -> None:
        self._widget = weakref.ref(widget)
        self._bundle = bundle
        self._reserved: str | None = None
        self._reserved_in = -1
        self._shown_in = -1
        self.filled: list[str] = []
        """Display ids of the outputs that show the widget."""

    def reserve(self) -> None:
        """Hold the widget's place at the call site (what `nf.show()` does)."""
        shell = _shell()
        if shell is None:
            return  # a plain script: nothing is displayed
        from IPython.display import display

        _hook(shell)
        self._reserved = f"nbflow-dag-{uuid.uuid4().hex}"
        self._reserved_in = _cell
        display({"text/plain": ""}, raw=True, display_id=self._reserved)
        _pending.append(self)

    def _fill(self) -> None:
        from IPython.display import update_display

        assert self._reserved is not None
        update_display(self._bundle(), raw=True, display_id=self._reserved)
        self.filled.append(self._reserved)
        self._reserved = None
        self._shown_in = _cell

    def display(self) -> None:
        """The widget is being displayed (last expression of a cell, or `display(w)`)."""
        if self._shown_in == _cell and _shell() is not None:
            return  # already shown in this cell
        if self._reserved is not None and self._reserved_in == _cell:
            if not _output_capturing():
                self._fill()
                return
            self._reserved = None  # it goes into the Output widget, not at the call site
        from IPython.display import display

        display_id = f"nbflow-dag-{uuid.uuid4().hex}"
        display(self._bundle(), raw=True, display_id=display_id)
        self.filled.append(display_id)
        self._shown_in = _cell

    def run_started(self) -> None:
        """A run of the widget's pipeline starts: show the widget now if it is only reserved."""
        if self._reserved is not None and self._reserved_in == _cell:
            self.settle()

    def settle(self) -> None:
        """Fill the reserved output, unless a container shows the widget instead."""
        if self._reserved is None:
            return
        widget = self._widget()
        if widget is None or _in_container(widget):
            self._reserved = None  # the container shows it; the reserved output stays empty
            return
        self._fill()

    def refresh(self) -> None:
        """Give every output that shows the widget its current bundle."""
        if not self.filled:
            return
        from IPython.display import update_display

        bundle = self._bundle()
        for display_id in self.filled:
            update_display(bundle, raw=True, display_id=display_id)

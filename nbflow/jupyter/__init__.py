"""The IPython extension: %%task and %nbflow magics, cell analysis, the live DAG widget.

Importing this package attaches `Pipeline.show` (the engine shows nothing itself); IPython and
ipywidgets are imported only when a widget is shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbflow.core.pipeline.pipeline import attach_view

if TYPE_CHECKING:
    from nbflow.core.pipeline.pipeline import Pipeline


def _show(pipe: Pipeline, *, interval: float = 0.1, widget: bool | None = None) -> Any:
    from nbflow.jupyter.widget import show

    return show(pipe, interval=interval, widget=widget)


attach_view("show", _show)

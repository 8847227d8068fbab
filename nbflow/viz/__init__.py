"""Drawing a pipeline with Graphviz and recolouring it; no IPython, used by the widget, the CLI
and the dashboard.

Importing this package attaches `Pipeline.to_dot` (the engine draws nothing itself); Graphviz
is imported only when a graph is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nbflow.core.pipeline.pipeline import attach_view

if TYPE_CHECKING:
    from nbflow.core.pipeline.pipeline import Pipeline


def _to_dot(pipe: Pipeline, states: Mapping[str, str] | None = None) -> Any:
    from nbflow.viz.render import pipeline_to_dot

    return pipeline_to_dot(pipe, states)


attach_view("to_dot", _to_dot)

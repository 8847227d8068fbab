"""Where `nf.show()` shows its widget, through a real IPython shell whose display publisher
records every output (as a front end keeps them: by display id, updated in place)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class OutputArea(DisplayPublisher):
    """The outputs of the cells, in order; an update replaces the outputs with its display id."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[list[Any]] = []

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
        display_id = (transient or {}).get("display_id")
        if update:
            for output in self.outputs:
                if output[0] == display_id:
                    output[1] = data
        else:
            self.outputs.append([display_id, data])

    def showing(self, widget: Any) -> list[int]:
        """Indexes of the outputs that show `widget`'s live view."""
        return [
            i
            for i, (_, data) in enumerate(self.outputs)
            if data.get(WIDGET_VIEW, {}).get("model_id") == widget.model_id
        ]


@pytest.fixture
def shell(home: Path) -> Iterator[tuple[InteractiveShell, OutputArea]]:
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    area = OutputArea()
    saved, sh.display_pub = sh.display_pub, area
    cell(
        sh,
        "import nbflow as nf\n@nf.task\ndef a():\n    return 1\n@nf.task\ndef b(a):\n    return a + 1",
    )
    area.outputs.clear()
    yield sh, area
    sh.display_pub = saved


def cell(sh: InteractiveShell, source: str) -> Any:
    result = sh.run_cell(source)
    result.raise_error()
    return result.result


def test_show_in_the_middle_of_a_cell_displays_the_widget_where_it_was_called(shell):
    sh, area = shell
    cell(sh, "w = nf.show()\ndisplay('shown after the widget')\nx = 1")
    w = sh.user_ns["w"]
    assert area.showing(w) == [0], "one output, at the place of the call"
    assert area.outputs[1][1]["text/plain"] == "'shown after the widget'"


def test_show_as_the_last_expression_is_displayed_once_and_returned(shell):
    sh, area = shell
    w = cell(sh, "nf.show()")
    assert area.showing(w) == [0] and len(area.outputs) == 1
    assert sh.user_ns["_"] is w, "the cell's value is the widget itself"
    # Displaying it again in a later cell adds an output, as for any widget.
    cell(sh, "_")
    assert area.showing(w) == [0, 1]


def test_a_run_in_the_same_cell_is_watched_live(shell):
    sh, area = shell
    seen: list[list[int]] = []
    sh.user_ns["seen"] = seen
    sh.user_ns["area"] = area
    cell(
        sh,
        "w = nf.show()\n"
        "nf.default_pipeline().add_listener(lambda e: seen.append(area.showing(w)))\n"
        "r = nf.run()",
    )
    assert seen[0] == [0], "the widget was on screen when the run started"
    assert sh.user_ns["w"].states == {"a": "done", "b": "done"}


def test_a_widget_put_into_a_container_is_shown_by_the_container_only(shell):
    sh, area = shell
    box = cell(sh, "import ipywidgets\nbox = ipywidgets.VBox([nf.show()])\nnf.run()\nbox")
    (w,) = box.children
    assert area.showing(w) == [], "no second, standalone copy of the widget"
    assert w.states == {"a": "done", "b": "done"}, "inside the box it is live"


def test_dag_line_magic_in_the_middle_of_a_cell_displays_it_once(shell):
    sh, area = shell
    cell(sh, "%load_ext nbflow")
    w = cell(sh, "w = %nbflow dag\nw")
    assert area.showing(w) == [0]
    cell(sh, "%unload_ext nbflow")

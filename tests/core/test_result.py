"""`StatusReport`'s displays: the text table and the HTML table a notebook shows."""

from __future__ import annotations

from html.parser import HTMLParser

from nbflow import Pipeline


class _Cells(HTMLParser):
    """Every table cell's tag and style, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("td", "th"):
            self.cells.append((tag, dict(attrs).get("style") or ""))


def test_status_html_left_aligns_every_column_including_why(pipe: Pipeline):
    """Jupyter right-aligns table cells by default, which makes the `why` sentences hard to
    read: each cell of the status table asks for left alignment itself."""
    pipe.task(lambda: 1, name="raw")
    pipe.task(lambda raw: raw + 1, name="clean")
    pipe.run()
    pipe.invalidate("clean")
    html = pipe.status()._repr_html_()
    parser = _Cells()
    parser.feed(html)
    assert len(parser.cells) == 3 + 2 * 3
    assert all("text-align:left" in style for _, style in parser.cells), parser.cells
    assert ">why</th>" in html and "invalidated" in html


LOG: list[str] = []


def test_status_html_shows_the_note_on_state_a_task_updates(pipe: Pipeline):
    """The text report and the HTML table say the same: a global the task updates is named
    once as its state, not as a reason to rerun."""

    def collect() -> int:
        LOG.append("x")
        return len(LOG)

    pipe.task(collect)
    pipe.run()
    report = pipe.status()
    assert "global `LOG` is updated by this task" in str(report)
    assert "global `LOG` is updated by this task" in report._repr_html_()

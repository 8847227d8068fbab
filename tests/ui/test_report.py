"""`nf.report` and `nbflow report`: one self-contained HTML file of a run, built from real runs.

The runs are real: a pipeline run through `nf.run` with a failing task, a notebook run by
papermill in a real kernel, a job run triggered from the CLI. The report is parsed (not
grepped) to check that it references nothing outside itself, and that the notebook's HTML
is present only as the escaped `srcdoc` of a sandboxed frame.
"""

from __future__ import annotations

import html
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

import nbflow as nf
from nbflow.cli import cli
from nbflow.history.api import children
from tests.jobs.notebooks import write_notebook

ATTACK = "<script>alert(1)</script>"

# A notebook whose outputs are hostile: a script that pops an alert, and one that tries to
# read the page around it and writes what happened into its own DOM (the browser test reads it).
HOSTILE = f"""
from IPython.display import HTML, display
display(HTML({ATTACK!r}))
display(HTML('''<div id="probe">probe did not run</div><script>
var out = document.getElementById("probe");
try {{ out.textContent = "LEAKED " + window.parent.document.title; }}
catch (e) {{ out.textContent = "blocked: " + e.name; }}
</script>'''))
"""

IN_KERNEL = """
import nbflow as nf
p = nf.Pipeline("in_kernel")

@p.task
def load(date: str) -> list[int]:
    print("loading", date)
    return [1, 2, 3]

@p.task
def total(load: list[int]) -> int:
    return sum(load)

p.run(params={"date": date})
"""

# Attributes through which a document loads something (or sends the reader somewhere).
URL_ATTRIBUTES = {
    "src",
    "href",
    "xlink:href",
    "action",
    "formaction",
    "poster",
    "data",
    "srcset",
    "background",
    "manifest",
    "ping",
}
LOCAL = re.compile(r"^(#|data:|about:srcdoc$)", re.IGNORECASE)
CSS_URL = re.compile(r"url\(\s*['\"]?(?!data:|#)([^'\")]+)", re.IGNORECASE)


class _Document(HTMLParser):
    """Every URL a document (and, recursively, each `srcdoc` frame in it) would load or link to,
    with the frames found."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []
        self.frames: list[dict[str, str | None]] = []
        self.scripts: list[str] = []
        self.csp: list[str] = []
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                self.urls.append((tag, name, value))
            if name == "style" and value:
                self.urls += [(tag, "style", u) for u in CSS_URL.findall(value)]
        if tag == "meta" and (found.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp.append(found.get("content") or "")
        if tag == "link":
            self.urls.append((tag, "link", found.get("href") or ""))
        if tag == "iframe":
            self.frames.append(found)
            inner = _Document()
            inner.feed(found.get("srcdoc") or "")
            self.urls += inner.urls
            self.scripts += inner.scripts
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if not self._in:
            return
        if self._in[-1] == "style":
            self.urls += [("style", "url()", u) for u in CSS_URL.findall(data)]
            if "@import" in data:
                self.urls.append(("style", "@import", data))
        elif self._in[-1] == "script":
            self.scripts.append(data)


def parse(text: str) -> _Document:
    doc = _Document()
    doc.feed(text)
    return doc


def assert_self_contained(text: str) -> _Document:
    doc = parse(text)
    remote = [u for u in doc.urls if not LOCAL.match(u[2].strip())]
    assert remote == [], f"the report references outside itself: {remote[:5]}"
    for script in doc.scripts:  # no module loaded from a CDN by an inline script either
        assert not re.search(r"""import\(\s*['"]https?:""", script), script[:200]
    # And the browser is told to load nothing from the network, whatever a notebook holds.
    assert doc.csp and doc.csp[0].startswith("default-src 'none';"), doc.csp
    return doc


def _failing_pipeline() -> nf.RunResult:
    @nf.task
    def extract(day: str) -> list[int]:
        print("extracting", day)
        logging.getLogger("etl").warning("source <slow> today")
        return [1, 2, 3]

    @nf.task
    def clean(extract: list[int]) -> list[int]:
        return nf.Output(extract, metadata={"rows": len(extract)})  # type: ignore[return-value]

    @nf.check(clean)
    def not_empty(value: list[int]) -> bool:
        return len(value) > 0

    attempts = Path("attempts.txt")  # the test's cwd is its own folder

    @nf.task(retries=1)
    def flaky(clean: list[int]) -> int:
        with attempts.open("a") as fh:
            fh.write("x")
        if len(attempts.read_text()) == 1:
            raise ConnectionError("the API timed out")
        return len(clean)

    @nf.task
    def publish(clean: list[int]) -> None:
        print("publishing", len(clean), "rows")
        raise RuntimeError("the warehouse refused the load")

    @nf.task
    def notify(publish: None) -> str:
        return "sent"

    return nf.run(params={"day": "2024-05-01"}, raise_on_failure=False)


def test_a_pipeline_report_shows_tasks_states_reasons_logs_and_the_dag() -> None:
    r = _failing_pipeline()
    assert not r.ok and r.run_id
    text = nf.report(r.run_id)
    doc = assert_self_contained(text)
    assert doc.frames == []  # a pipeline run has no notebook
    rows = dict(re.findall(r'<tr class="task" data-task="(\w+)" data-state="(\w+)"', text))
    assert rows == {
        "extract": "done",
        "clean": "done",
        "flaky": "done",
        "publish": "failed",
        "notify": "upstream_failed",
    }
    # The reason each ran, the failure, the skip, and what the tasks printed and logged.
    assert "never run" in text
    assert "the warehouse refused the load" in text
    assert "upstream `publish` failed" in text
    assert "extracting 2024-05-01" in text
    assert "publishing 3 rows" in text
    assert "WARNING etl: source &lt;slow&gt; today" in text  # escaped, as text
    assert "<slow>" not in text
    assert "<details" in text and "open>" in text  # the failed task's log is unfolded
    # Two attempts of `flaky`, the first one's error named.
    flaky_row = text[text.index('data-task="flaky"') :]
    flaky_row = flaky_row[: flaky_row.index("</tr>")]
    assert "<td>2<br>#1" in flaky_row and "ConnectionError: the API timed out" in flaky_row
    # Output metadata and the check result.
    assert "<code>rows</code>" in text and "not_empty" in text and "passed" in text
    # The DAG: inline SVG, its nodes and the edges the run was planned with.
    svg = text[text.index("<svg") : text.index("</svg>")]
    for name in rows:
        assert f"<title>{name}</title>" in svg
    assert svg.count('class="edge"') == 4
    assert "#dc2626" in svg  # `publish` filled with the failed colour
    # The summary: parameters, host, nbflow version.
    assert "2024-05-01" in text and nf.__version__ in text


def test_a_rerun_report_says_the_tasks_came_from_the_cache() -> None:
    @nf.task
    def one() -> int:
        return 1

    @nf.task
    def two(one: int) -> int:
        return one + 1

    nf.run()
    again = nf.run()
    text = nf.report(again.run_id)
    assert text.count('data-state="cached"') == 2
    assert "loaded from the cache" in text


def test_a_notebook_report_embeds_the_notebook_only_as_an_escaped_sandboxed_srcdoc(
    tmp_path: Path,
) -> None:
    nb = write_notebook(tmp_path / "hostile.ipynb", 'date = "2024-01-01"', [IN_KERNEL, HOSTILE])
    nr = nf.run_notebook(nb, parameters={"date": "2024-02-03"})
    assert nr.ok and nr.run_id
    text = nf.report(nr.run_id)
    doc = assert_self_contained(text)
    [frame] = doc.frames
    assert frame["sandbox"] == "allow-scripts"  # scripts run, in an opaque origin
    assert "allow-same-origin" not in (frame["sandbox"] or "")
    assert ATTACK in (frame["srcdoc"] or "")
    # In the file, the notebook's markup is only ever the escaped attribute value.
    assert ATTACK not in text
    assert html.escape(ATTACK) in text
    attr = text[text.index('srcdoc="') : text.index('"></iframe>')]
    assert text.count(html.escape(ATTACK)) == attr.count(html.escape(ATTACK))
    # The pipeline run inside the kernel is in the report, with its DAG and its log.
    [inner] = children(nr.run_id)
    assert f'id="run-{inner.id}"' in text
    assert "loading 2024-02-03" in text
    assert 'data-task="total" data-state="done"' in text


def test_a_job_report_includes_its_notebook_run_and_the_pipeline_runs_inside(
    tmp_path: Path,
) -> None:
    nb = write_notebook(tmp_path / "job.ipynb", 'date = "2024-01-01"', [IN_KERNEL])
    runner = CliRunner()
    added = runner.invoke(
        cli,
        ["schedule", "add", "nightly", str(nb), "--cron", "0 2 * * *", "-p", "date", "{{ ds }}"],
    )
    assert added.exit_code == 0, added.output
    triggered = runner.invoke(cli, ["trigger", "nightly"])
    assert triggered.exit_code == 0, triggered.output
    [job] = nf.history("nightly", kind="job")
    [notebook] = children(job.id)
    [pipeline] = children(notebook.id)
    text = nf.report(job.id)
    doc = assert_self_contained(text)
    for depth, run in enumerate((job, notebook, pipeline)):
        assert f'<section class="run depth-{depth}" id="run-{run.id}">' in text
    assert len(doc.frames) == 1  # the notebook once, with its notebook run
    assert "loading" in text and 'data-task="load" data-state="done"' in text


def test_the_cli_writes_the_report_and_refuses_an_unknown_run(tmp_path: Path) -> None:
    r = _failing_pipeline()
    out = tmp_path / "report.html"
    runner = CliRunner()
    result = runner.invoke(cli, ["report", r.run_id[:8], "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and 'data-task="publish"' in text
    assert_self_contained(text)

    bad = runner.invoke(cli, ["report", "nosuchrun", "-o", str(tmp_path / "x.html")])
    assert bad.exit_code == 2
    assert "no run `nosuchrun`" in bad.output and "nbflow history" in bad.output
    assert not (tmp_path / "x.html").exists()

    folder = runner.invoke(cli, ["report", r.run_id, "-o", str(tmp_path / "missing" / "r.html")])
    assert folder.exit_code == 2 and "does not exist" in folder.output


def test_nf_report_names_an_unknown_run() -> None:
    with pytest.raises(nf.NbflowError, match=r"no run `abc123`.*nbflow history"):
        nf.report("abc123")


def test_an_alert_names_the_report_it_wrote_when_the_home_asks_for_it(
    tmp_path: Path, home: Path
) -> None:
    nb = write_notebook(tmp_path / "fails.ipynb", 'date = "2024-01-01"', [IN_KERNEL, "1 / 0"])
    told = tmp_path / "told.txt"
    runner = CliRunner()
    for args in (
        ["settings", "set", "alerts.report", "true"],
        [
            "schedule",
            "add",
            "fragile",
            str(nb),
            "--cron",
            "0 2 * * *",
            "--on-failure",
            f'printf %s "$NBFLOW_REPORT" > {told}',
        ],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    triggered = runner.invoke(cli, ["trigger", "fragile"])
    assert triggered.exit_code == 1, triggered.output
    [job] = nf.history("fragile", kind="job")
    named = Path(told.read_text())
    assert named == home / "reports" / f"{job.id}.html"
    assert (named.stat().st_mode & 0o777, named.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    text = named.read_text(encoding="utf-8")
    assert f'id="run-{job.id}"' in text and "ZeroDivisionError" in text
    assert_self_contained(text)
    # Pruning the run removes the report the alert wrote of it.
    pruned = runner.invoke(cli, ["history", "prune", "--keep", "0"])
    assert pruned.exit_code == 0, pruned.output
    assert not named.exists()


def test_without_the_setting_an_alert_writes_no_report(tmp_path: Path, home: Path) -> None:
    nb = write_notebook(tmp_path / "fails.ipynb", None, ["1 / 0"])
    told = tmp_path / "told.txt"
    runner = CliRunner()
    added = runner.invoke(
        cli,
        [
            "schedule",
            "add",
            "fragile",
            str(nb),
            "--cron",
            "0 2 * * *",
            "--on-failure",
            f'printf "[%s]" "$NBFLOW_REPORT" > {told}',
        ],
    )
    assert added.exit_code == 0, added.output
    assert runner.invoke(cli, ["trigger", "fragile"]).exit_code == 1
    assert told.read_text() == "[]"
    assert not (home / "reports").exists()


def test_a_sub_pipeline_run_is_in_its_outer_runs_report() -> None:
    inner = nf.Pipeline("inner_flow")
    inner.task(lambda: [3, 1, 2], name="numbers")
    outer = nf.Pipeline("outer_flow")
    outer.subpipeline(inner, name="nested")
    outer.task(lambda nested: sorted(nested["numbers"]), name="ordered")
    r = outer.run()
    [sub] = children(r.run_id)
    assert sub.name == "inner_flow"
    text = nf.report(r.run_id)
    assert f'<section class="run depth-1" id="run-{sub.id}">' in text
    assert 'data-task="numbers" data-state="done"' in text
    assert text.count("<svg") == 2  # each run its own DAG


def test_names_from_the_run_cannot_inject_markup() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    pipe = nf.Pipeline(f"etl {hostile}")
    pipe.task(lambda day: day, name=hostile)
    pipe.task(lambda x: x, name="after", inputs={"x": hostile})
    r = pipe.run(params={"day": hostile})
    text = nf.report(r.run_id)
    assert "<img" not in text  # in the task table, the summary, the parameters and the SVG
    assert text.count("&lt;img src=x onerror=") >= 4
    assert_self_contained(text)


def test_a_retried_job_attempt_does_not_show_the_next_attempts_notebook(tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    first_fails = (
        "from pathlib import Path\n"
        f"marker = Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.write_text('once')\n"
        "    raise RuntimeError('first attempt fails')\n"
        "print('second attempt works')"
    )
    nb = write_notebook(tmp_path / "flaky.ipynb", None, [first_fails])
    runner = CliRunner()
    added = runner.invoke(
        cli,
        [
            "schedule",
            "add",
            "flaky",
            str(nb),
            "--cron",
            "0 2 * * *",
            "--retries",
            "1",
            "--retry-delay",
            "0",
        ],
    )
    assert added.exit_code == 0, added.output
    triggered = runner.invoke(cli, ["trigger", "flaky"])
    assert triggered.exit_code == 0, triggered.output
    second, first = nf.history("flaky", kind="job")
    assert (first.state, second.state) == ("failed", "ok")
    text = nf.report(first.id)
    assert parse(text).frames == []
    assert f"replaced by the one of the next attempt, run {second.id}" in text
    [frame] = parse(nf.report(second.id)).frames
    assert "second attempt works" in (frame["srcdoc"] or "")


def test_a_running_run_has_a_report_too() -> None:
    from nbflow.core.events import current_run

    seen: dict[str, str] = {}

    @nf.task
    def first() -> int:
        print("first is done")
        return 1

    @nf.task
    def snapshot(first: int) -> int:
        # The report of the run this task is part of, made while it runs.
        seen["text"] = nf.report(current_run.get() or "")
        return first

    nf.run()
    text = seen["text"]
    assert '<span class="state" style="background:#3b82f6">running</span>' in text
    assert "the run has not ended: its graph is written when it does" in text
    assert_self_contained(text)

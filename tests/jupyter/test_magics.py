"""`%%task` and `%nbflow` through a real IPython `InteractiveShell` (`run_cell` with the magic text)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

import nbflow as nf
import nbflow.jupyter.extension as extension
from nbflow import default_pipeline


@pytest.fixture
def shell(home: Path, tmp_path: Path) -> Iterator[InteractiveShell]:
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    extension._MAGICS = None
    result = sh.run_cell("%load_ext nbflow")
    result.raise_error()
    sh.user_ns["LOG"] = str(tmp_path / "executions.txt")
    Path(sh.user_ns["LOG"]).write_text("")
    yield sh
    sh.run_cell("%unload_ext nbflow")
    extension._MAGICS = None


def run(sh: InteractiveShell, source: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run one cell; fail the test with the cell's error; return what it printed."""
    capsys.readouterr()
    result = sh.run_cell(source)
    out = capsys.readouterr().out
    if result.error_in_exec is not None or result.error_before_exec is not None:
        raise AssertionError(f"cell failed: {result.error_in_exec!r}\n{out}")
    return out


def fails(sh: InteractiveShell, source: str) -> BaseException:
    result = sh.run_cell(source)
    error = result.error_in_exec or result.error_before_exec
    assert error is not None, "the cell should have failed"
    return error


def executions(sh: InteractiveShell) -> list[str]:
    return Path(sh.user_ns["LOG"]).read_text().split()


EXTRACT = """%%task
open(LOG, "a").write("extract\\n")
rows = [{"id": i, "amount": i * 10} for i in range(5)]
"""

CLEAN = """%%task
open(LOG, "a").write("clean\\n")
cleaned = [r for r in rows if r["amount"] >= threshold]
count = len(cleaned)
"""


def test_task_cell_runs_binds_outputs_and_caches(shell, capsys):
    out = run(shell, EXTRACT, capsys)
    assert "[nbflow] rows: ran in" in out
    assert shell.user_ns["rows"][2] == {"id": 2, "amount": 20}
    out = run(shell, EXTRACT, capsys)
    assert "[nbflow] rows: loaded from cache in" in out
    assert executions(shell) == ["extract"], "an unchanged cell must not execute its body"


def test_comment_and_formatting_edits_do_not_rerun(shell, capsys):
    run(shell, EXTRACT, capsys)
    edited = EXTRACT.replace("rows = [", "# the raw rows\nrows  =  [")
    out = run(shell, edited, capsys)
    assert "loaded from cache" in out
    assert executions(shell) == ["extract"]


def test_downstream_cell_depends_on_upstream_outputs_and_notebook_globals(shell, capsys):
    run(shell, "threshold = 20", capsys)
    run(shell, EXTRACT, capsys)
    out = run(shell, CLEAN, capsys)
    assert "[nbflow] cleaned: ran in" in out
    assert shell.user_ns["count"] == 3
    # Editing a plain-cell global the task cell reads invalidates it, not its upstream.
    run(shell, "threshold = 30", capsys)
    out = run(shell, CLEAN, capsys)
    assert "stale because" in out and "threshold" in out
    assert shell.user_ns["count"] == 2
    assert executions(shell) == ["extract", "clean", "clean"]


def test_editing_upstream_cell_reruns_it_before_the_downstream(shell, capsys):
    run(shell, "threshold = 0", capsys)
    run(shell, EXTRACT, capsys)
    run(shell, CLEAN, capsys)
    # Edit the upstream cell's code but do not execute it: executing the
    # downstream cell notices nothing (the registered upstream is unchanged).
    run(shell, EXTRACT.replace("range(5)", "range(7)"), capsys)
    assert shell.user_ns["rows"][-1]["id"] == 6
    out = run(shell, CLEAN, capsys)
    assert "upstream" in out and "rows" in out
    assert shell.user_ns["count"] == 7
    assert executions(shell) == ["extract", "clean", "extract", "clean"]


def test_stale_upstream_runs_when_downstream_cell_executes(shell, capsys):
    run(shell, "threshold = 0", capsys)
    run(shell, EXTRACT, capsys)
    run(shell, CLEAN, capsys)
    run(shell, "%nbflow invalidate rows", capsys)
    out = run(shell, CLEAN, capsys)
    assert "upstream ran first: rows" in out
    # invalidate marks the downstream stale too, so both ran again.
    assert executions(shell) == ["extract", "clean", "extract", "clean"]


def test_mutating_an_upstream_output_never_changes_the_cached_value(shell, capsys):
    run(shell, EXTRACT, capsys)
    run(shell, "%%task mutate\nrows.append({'id': 99, 'amount': 0})\nn_after = len(rows)\n", capsys)
    assert shell.user_ns["n_after"] == 6
    run(shell, "%nbflow run rows --force", capsys)
    assert len(shell.user_ns["rows"]) == 5
    # The cached upstream value, loaded by another run, is untouched too.
    from nbflow import default_pipeline

    assert len(default_pipeline().run(["rows"])["rows"]["rows"]) == 5


def test_a_name_defined_by_two_task_cells_is_an_error_naming_both(shell, capsys):
    run(shell, EXTRACT, capsys)
    error = fails(shell, "%%task other\nrows = []\n")
    assert isinstance(error, nf.DuplicateOutputError)
    assert (error.name, error.cells) == ("rows", ["rows", "other"])
    assert "`rows` is defined by two task cells, `rows` and `other`" in str(error)
    assert "other" not in default_pipeline().tasks, "the refused cell registers nothing"


def test_an_unnamed_cell_keeps_its_task_name_when_its_first_output_is_renamed(shell, capsys):
    # Jupyter sends each cell's id; an edited cell is the same task, not a second one.
    shell.run_cell("%%task\nrows = [1, 2]\n", cell_id="cell-a").raise_error()
    shell.run_cell("%%task\nrecords = [1, 2, 3]\n", cell_id="cell-a").raise_error()
    assert list(default_pipeline().tasks) == ["rows"]
    assert shell.user_ns["records"] == [1, 2, 3]
    # A new cell defining `rows` is no longer a second definer.
    shell.run_cell("%%task\nrows = [9]\n", cell_id="cell-b").raise_error()


def test_a_cached_cell_already_bound_is_not_loaded_again(shell, capsys):
    run(shell, EXTRACT, capsys)
    first = shell.user_ns["rows"]
    run(shell, "%nbflow run", capsys)
    assert shell.user_ns["rows"] is first, "the bound object is kept, not unpickled again"
    shell.user_ns["rows"] = "overwritten in a plain cell"
    out = run(shell, EXTRACT, capsys)
    assert "loaded from cache" in out
    assert shell.user_ns["rows"] == first and shell.user_ns["rows"] is not first


def test_updating_another_cells_output_in_place_is_refused(shell, capsys):
    run(shell, EXTRACT, capsys)
    error = fails(shell, "%%task grow\nrows = rows + [1]\n")
    assert "defined by task cell `rows`" in str(error)


def test_run_parameters_and_imports(shell, capsys):
    out = run(shell, "%nbflow run -p n=3", capsys)  # an empty pipeline runs nothing
    assert "ran 0" in out
    cell = "%%task series\nimport math\nvalues = [math.sqrt(i) for i in range(n)]\n"
    out = run(shell, cell, capsys)
    assert "ran in" in out and "(first run)" in out
    assert shell.user_ns["values"] == [0.0, 1.0, 2**0.5]
    assert shell.user_ns["math"].__name__ == "math"
    out = run(shell, "%nbflow run series -p n=2", capsys)
    assert "ran 1 (series)" in out
    assert shell.user_ns["values"] == [0.0, 1.0]
    out = run(shell, "%nbflow run series -p n=3", capsys)
    assert "ran 0" in out and "1 from cache" in out
    assert shell.user_ns["values"] == [0.0, 1.0, 2**0.5]


def test_a_name_nothing_defines_says_what_to_do_in_notebook_terms(shell, capsys):
    error = fails(shell, "%%task total\ns = amount * 2\n")
    assert str(error).startswith(
        "task cell `total` reads `amount`, which no task cell defines and no plain cell assigns."
    )
    assert "%nbflow run -p amount=VALUE" in str(error)
    run(shell, "%nbflow run -p amount=21", capsys)
    assert shell.user_ns["s"] == 42


def test_cell_options_retries_and_no_cache(shell, capsys):
    cell = (
        "%%task flaky --retries 2\n"
        "open(LOG, 'a').write('try\\n')\n"
        "if len(open(LOG).read().split()) < 2:\n"
        "    raise RuntimeError('first attempt fails')\n"
        "ok = True\n"
    )
    out = run(shell, cell, capsys)
    assert "ran in" in out and shell.user_ns["ok"] is True
    assert executions(shell) == ["try", "try"]
    nocache = "%%task stamp --no-cache\nopen(LOG, 'a').write('stamp\\n')\nstamped = 1\n"
    run(shell, nocache, capsys)
    run(shell, nocache, capsys)
    assert executions(shell).count("stamp") == 2


def test_failing_cell_raises_with_the_cells_own_error(shell, capsys):
    error = fails(shell, "%%task broken\nx = 1 / 0\n")
    assert "ZeroDivisionError" in str(error)
    assert "x" not in shell.user_ns


def test_status_explain_invalidate_clear(shell, capsys):
    run(shell, "threshold = 0", capsys)
    run(shell, EXTRACT, capsys)
    run(shell, CLEAN, capsys)
    out = run(shell, "%nbflow explain cleaned", capsys)
    assert "cleaned: fresh" in out
    out = run(shell, "%nbflow invalidate rows", capsys)
    assert "invalidated rows, cleaned" in out
    out = run(shell, "%nbflow explain cleaned", capsys)
    assert "stale" in out and "rows" in out
    status = shell.run_cell("%nbflow status").result
    assert {n: s.state for n, s in status.items()} == {"rows": "stale", "cleaned": "stale"}
    out = run(shell, "%nbflow clear", capsys)
    assert "removed" in out
    error = fails(shell, "%nbflow frobnicate")
    assert "unknown command `frobnicate`" in str(error)


def test_named_pipeline_option(shell, capsys):
    run(shell, "import nbflow as nf\netl = nf.Pipeline('etl')", capsys)
    run(shell, "%%task --pipeline etl\nanswer = 42\n", capsys)
    assert list(shell.user_ns["etl"].tasks) == ["answer"]
    from nbflow import default_pipeline

    assert "answer" not in default_pipeline().tasks


def test_decorator_api_works_without_the_extension(home, capsys):
    sh = InteractiveShell.instance()
    sh.reset(new_session=True)
    result = sh.run_cell(
        "import nbflow as nf\n"
        "@nf.task\n"
        "def base():\n    return 20\n"
        "@nf.task\n"
        "def double(base):\n    return base * 2\n"
        "r = nf.run()\n"
    )
    result.raise_error()
    assert sh.user_ns["r"]["double"] == 40
    assert sh.user_ns["r"].executed == ["base", "double"]


# --- a trailing expression is shown as in a plain cell (issue 17, item 9) ---------------------


def shown(sh: InteractiveShell, source: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, Any]:
    """Run one cell; return what it printed and the value IPython's displayhook showed."""
    capsys.readouterr()
    result = sh.run_cell(source, store_history=True)
    out = capsys.readouterr().out
    result.raise_error()
    return out, result.result


SUMMARY = """%%task summary
open(LOG, "a").write("summary\\n")
totals = {"rows": 3, "amount": 60}
f"{totals['rows']} rows, {totals['amount']} in total"
"""


def test_a_trailing_expression_is_displayed_after_the_status_line(shell, capsys):
    out, value = shown(shell, SUMMARY, capsys)
    assert value == "3 rows, 60 in total", "the cell's value is the expression's own value"
    assert shell.user_ns["_"] == value, "and IPython keeps it as `_`, as for a plain cell"
    status = out.index("[nbflow] summary: ran in")
    assert out.index("'3 rows, 60 in total'") > status, "shown after the status line"
    assert "totals" in shell.user_ns and "__nbflow_shown__" not in shell.user_ns


def test_a_cache_hit_shows_the_stored_display_of_the_trailing_expression(shell, capsys):
    shown(shell, SUMMARY, capsys)
    # Another kernel (or a restart) has no object: the display comes from the cache record.
    from nbflow.jupyter import cells

    cells._shown.clear()
    out, value = shown(shell, SUMMARY, capsys)
    assert "loaded from cache" in out and executions(shell) == ["summary"]
    assert repr(value) == "'3 rows, 60 in total'"
    assert out.index("'3 rows, 60 in total'") > out.index("loaded from cache")


def test_the_shown_value_is_not_an_output_and_does_not_change_the_cache_key(shell, capsys):
    shown(shell, SUMMARY, capsys)
    # The same outputs with another trailing expression: downstream cells stay cached.
    run(shell, "%%task report\nline = totals['rows']\n", capsys)
    out, value = shown(shell, SUMMARY.replace("in total", "altogether"), capsys)
    assert value == "3 rows, 60 altogether" and "ran in" in out
    out = run(shell, "%%task report\nline = totals['rows']\n", capsys)
    assert "loaded from cache" in out, "the cell's outputs did not change"


def test_a_trailing_semicolon_or_a_none_value_shows_nothing(shell, capsys):
    _, value = shown(shell, SUMMARY.rstrip() + ";\n", capsys)
    assert value is None
    _, value = shown(shell, "%%task printer\nmsg = 'hi'\nprint(msg)\n", capsys)
    assert value is None
    _, value = shown(
        shell, "%%task multi\nx = [\n    1,\n    2,\n]; y = 2\nlen(\n    x\n)\n", capsys
    )
    assert value == 2


def test_the_widget_shows_a_cells_value_as_text_in_its_tooltip(shell, capsys):
    from nbflow.jupyter.widget import DagWidget

    w = DagWidget(default_pipeline(), interval=0)
    shown(shell, SUMMARY, capsys)
    assert w.info["summary"]["metadata"]["display"] == "'3 rows, 60 in total'"


LOUD = """%%task
print("extracting 5 rows")
loud_rows = list(range(5))
"""


def test_a_cached_cell_replays_its_output_in_grey_unless_no_replay(shell, capsys):
    out = run(shell, LOUD, capsys)
    assert "extracting 5 rows" in out and "ran in" in out
    out = run(shell, LOUD, capsys)
    assert "loaded from cache" in out
    runs = nf.history(default_pipeline().name)
    first = [r for r in runs if r.task("loud_rows").state == "done"]
    marker = f"\x1b[90m[nbflow] cached `loud_rows`: output of run {first[0].id} ("
    assert marker in out, out
    assert "\x1b[90mextracting 5 rows\x1b[0m\n" in out
    assert out.index(marker) < out.index("loaded from cache")

    out = run(shell, LOUD.replace("%%task", "%%task --no-replay"), capsys)
    assert "loaded from cache" in out and "extracting" not in out and "[nbflow] cached" not in out


def test_a_cell_replays_only_its_own_output_not_its_upstreams(shell, capsys):
    run(shell, LOUD, capsys)
    down = "%%task\nprint('summing')\nloud_total = sum(loud_rows) + bump\n"
    shell.user_ns["bump"] = 0
    run(shell, down, capsys)
    shell.user_ns["bump"] = 1  # the downstream cell reruns; its upstream is loaded
    out = run(shell, down, capsys)
    assert "summing" in out and "extracting" not in out and "[nbflow] cached" not in out


def test_ignore_option_leaves_a_run_parameter_and_an_upstream_cell_out_of_the_key(shell, capsys):
    settings = "%%task\nopen(LOG, 'a').write('settings\\n')\nsettings = {'verbose': verbose}\n"
    report = (
        "%%task report --ignore log_level,settings\n"
        "open(LOG, 'a').write('report\\n')\n"
        "line = f'{day}: {len(settings)} ({log_level})'\n"
    )
    run(shell, "%nbflow run -p verbose=False -p day=d1 -p log_level=info", capsys)
    run(shell, settings, capsys)
    run(shell, report, capsys)
    assert executions(shell) == ["settings", "report"]

    # A new log level and new settings: the report is still loaded from the cache.
    out = run(shell, "%nbflow run -p verbose=True -p log_level=debug", capsys)
    assert "ran 1 (settings)" in out
    out = run(shell, report, capsys)
    assert "loaded from cache" in out
    assert executions(shell) == ["settings", "report", "settings"]
    out = run(shell, "%nbflow explain report", capsys)
    assert "not in its key: upstream `settings`, `log_level` (ignore=)" in out

    # `day` is not ignored: changing it reruns the cell.
    out = run(shell, "%nbflow run report -p day=d2", capsys)
    assert "ran 1 (report)" in out and shell.user_ns["line"] == "d2: 1 (debug)"


def test_ignore_option_refuses_what_the_cell_cannot_leave_out(shell, capsys):
    run(shell, "%%task pairs\npair_a = 1\npair_b = 2\n", capsys)
    run(shell, "level = 'info'", capsys)

    error = fails(shell, "%%task use --ignore log_levl\nout = pair_a + log_level\n")
    assert str(error).startswith(
        "task cell `use` ignores `log_levl`, which it does not read (did you mean `log_level`?)"
    )
    error = fails(shell, "%%task use --ignore pair_a\nout = pair_a + pair_b\n")
    assert "comes from task cell `pairs` with `pair_b`" in str(error)
    assert "--ignore pairs" in str(error)
    error = fails(shell, "%%task use --ignore level\nout = pair_a + len(level)\n")
    assert "`level`, a notebook variable" in str(error)
    error = fails(shell, "%%task use --ignore\nout = 1\n")
    assert type(error).__name__ == "UsageError" and "--ignore needs a value" in str(error)
    error = fails(shell, "%%task use --ignore 'a b'\nout = 1\n")
    assert type(error).__name__ == "UsageError" and "names separated by commas" in str(error)
    # Nothing half-registered stays behind: the next cell runs.
    run(shell, "%%task use --ignore pair_a,pair_b\nout = pair_a + pair_b\n", capsys)
    assert shell.user_ns["out"] == 3


def test_task_help_is_generated_from_its_options() -> None:
    """`%%task?` shows IPython's generated help: every option with what it does."""
    from nbflow.jupyter.magics import NbflowMagics

    doc = NbflowMagics.task.__doc__ or ""
    assert doc.lstrip(": \n").startswith("%%task [--retries N]")
    for option in ("--retry-delay S", "--timeout S", "--no-cache", "--no-replay", "--pipeline P"):
        assert option in doc
    assert "left out of the" in doc and "cache key" in doc  # --ignore's help


def test_bad_task_arguments_are_one_line_naming_the_option(shell: Any, capsys) -> None:
    for line, message in [
        ("--retries x", "%%task: --retries takes a number, not 'x'"),
        ("--timeout", "%%task: --timeout needs a value"),
        ("9lives", "%%task: the task name '9lives' must be a Python identifier"),
        ("a b", "%%task: unrecognized arguments: b; see %%task? for the options"),
    ]:
        error = fails(shell, f"%%task {line}\nout = 1\n")
        assert type(error).__name__ == "UsageError" and str(error) == message

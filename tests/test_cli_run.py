"""`nbflow run`: literal parameters, exit codes, progress on stderr and a one-line summary."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from click.testing import CliRunner

from nbflow.cli import cli
from tests.conftest import FIXTURES

NOTEBOOKS = FIXTURES / "notebooks"


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)


def injected_source(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))


def test_run_parses_literals_and_reports_progress_and_output(tmp_path: Path) -> None:
    out = tmp_path / "typed.ipynb"
    result = invoke(
        str(NOTEBOOKS / "typed_parameters.ipynb"),
        *("-p", "rows", "3", "-p", "tags", "[1, 'x']", "-p", "limits", "{'a': (1, 2)}"),
        *("-p", "title", "42", "-p", "day", "2024-05-01", "-p", "region", "north"),
        *("-o", str(out)),
    )
    assert result.exit_code == 0, result.output
    summary = re.escape(f"ok: {NOTEBOOKS / 'typed_parameters.ipynb'}") + r" ran in [\d.]+ s; "
    first, *recorded = result.stdout.splitlines()
    assert re.fullmatch(summary + re.escape(f"output: {out}"), first)
    # Then each value the notebook recorded with nf.record, one per line.
    assert "  computed: 3" in recorded and "  folder: PosixPath('data')" in recorded
    # cells named by their number in the notebook, as errors name them
    assert result.stderr.splitlines()[:2] == [
        "1/3 code cells: cell 1 `import datetime`",
        "2/3 code cells: injected parameters",
    ]
    assert result.stderr.splitlines()[2].startswith("3/3 code cells: cell 2 `")
    source = injected_source(out)
    assert "rows = 3\n" in source
    assert "tags = [1, 'x']\n" in source
    assert "limits = {'a': (1, 2)}\n" in source
    assert "title = '42'\n" in source  # declared as a string: the text, not the number
    assert "day = _nbflow_datetime.date(2024, 5, 1)\n" in source
    assert "region = 'north'\n" in source  # not a literal: a string


def test_a_failed_run_exits_non_zero_naming_the_cell_and_the_output(tmp_path: Path) -> None:
    out = tmp_path / "broken.ipynb"
    result = invoke(str(NOTEBOOKS / "broken_cell.ipynb"), "-o", str(out))
    assert result.exit_code == 1
    assert result.stdout.startswith("failed: ")
    assert (
        "exception in cell 2 `import nbflow as nf`: ZeroDivisionError: division by zero"
        in result.stdout
    )
    assert result.stdout.rstrip().endswith(f"output: {out}")
    assert "----> 3 result = 1 / divisor" in result.stderr
    assert out.exists()


def test_a_clean_sys_exit_succeeds_and_says_where_it_stopped(tmp_path: Path) -> None:
    notebook = NOTEBOOKS / "exits_early.ipynb"
    result = invoke(str(notebook), "-p", "exit_args", "[0]", "-o", str(tmp_path / "e.ipynb"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {notebook} ran in ")
    assert ", stopped by sys.exit() in cell 3 `sys.exit(*exit_args)`; output: " in result.stdout
    failed = invoke(str(notebook), "-p", "exit_args", "[2]", "-o", str(tmp_path / "f.ipynb"))
    assert failed.exit_code == 1
    assert "exception in cell 3 `sys.exit(*exit_args)`: SystemExit: 2" in failed.stdout


def test_the_whole_run_timeout_is_an_option(tmp_path: Path) -> None:
    result = invoke(
        str(NOTEBOOKS / "sleeps_forever.ipynb"), "--timeout", "2", "-o", str(tmp_path / "s.ipynb")
    )
    assert result.exit_code == 1
    assert "timeout in cell 2" in result.stdout


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    nb = str(NOTEBOOKS / "typed_parameters.ipynb")
    result = invoke(nb, "-p", "rowz", "1")
    assert result.exit_code == 2
    assert "no parameter `rowz` (did you mean `rows`?)" in result.stderr
    result = invoke(nb, "-p", "rows", "many")
    assert result.exit_code == 2
    assert "declared as int but was given a str ('many')" in result.stderr
    result = invoke(nb, "--kernel", "nope", "-o", str(tmp_path / "o.ipynb"))
    assert result.exit_code == 2 and "installed kernels: " in result.stderr
    result = invoke(str(NOTEBOOKS / "malformed.ipynb"))
    assert result.exit_code == 2 and "malformed.ipynb" in result.stderr


def test_a_repeated_parameter_is_refused(tmp_path: Path) -> None:
    nb = str(NOTEBOOKS / "typed_parameters.ipynb")
    result = invoke(nb, "-p", "title", "A", "-p", "title", "B", "-o", str(tmp_path / "o.ipynb"))
    assert result.exit_code == 2
    assert "parameter `title` is given twice ('A' and 'B'); give it once" in result.stderr
    assert not (tmp_path / "o.ipynb").exists()


def test_a_timeout_that_is_not_a_finite_number_is_refused(tmp_path: Path) -> None:
    for value in ("nan", "inf", "-1"):
        result = invoke(str(NOTEBOOKS / "typed_parameters.ipynb"), "--timeout", value)
        assert result.exit_code == 2
        assert f"--timeout {float(value)!r} is not a usable number of seconds" in result.stderr

"""What the CLI prints fits where it goes: on a real terminal (a pseudo-terminal of a set width)
the runs table fits without cutting dates or paths and progress is one line redrawn in place;
to a pipe or file there are no escape codes and no carriage returns."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from nbflow.cli import cli
from nbflow.jobs.runstore import RunStore

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COMMAND = [sys.executable, "-m", "nbflow.cli"]


def in_terminal(args: list[str], cols: int = 100) -> tuple[int, str]:
    """Run the command with stdin, stdout and stderr on a pseudo-terminal `cols` wide."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR"):
        env.pop(name, None)
    proc = subprocess.Popen(COMMAND + args, stdin=child, stdout=child, stderr=child, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=120), b"".join(chunks).decode()


def piped(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    return subprocess.run(COMMAND + args, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def history(home: Path) -> Path:
    """A job with a success (an output notebook in the home) and a long failure."""
    nb = Path.cwd() / "report.ipynb"
    nb.write_bytes((FIXTURES / "typed_parameters.ipynb").read_bytes())
    added = CliRunner().invoke(
        cli, ["schedule", "add", "daily-etl", "report.ipynb", "--cron", "0 2 * * *"]
    )
    assert added.exit_code == 0, added.output
    store = RunStore()
    t0 = datetime(2024, 1, 1, 2, tzinfo=UTC)
    ok, _ = store.create_run("daily-etl", "scheduled", t0)
    store.claim_run(ok.id, 100, now=t0)
    output = home / "runs" / "daily-etl" / "daily-etl-20240101T020000Z-1.ipynb"
    store.finish_run(ok.id, "success", output_path=str(output), now=t0 + timedelta(seconds=3))
    bad, _ = store.create_run("daily-etl", "scheduled", t0 + timedelta(days=1))
    store.claim_run(bad.id, 101, now=t0 + timedelta(days=1))
    store.finish_run(bad.id, "failed", error="KeyError: 'region' " + "while reading x " * 6)
    return output


def _cell_text(table: str, header: str) -> str:
    """The text of one column, its wrapped pieces joined (the column starts under `header`)."""
    lines = table.splitlines()
    head = next(i for i, line in enumerate(lines) if header in line)
    start = lines[head].index(header)
    return "".join(line[start:].split(" ")[0] for line in lines[head + 2 :] if len(line) > start)


def test_runs_at_100_columns_keeps_dates_whole_and_wraps_the_output_path(history: Path):
    code, out = in_terminal(["runs", "daily-etl"], cols=100)
    assert code == 0, out
    text = ANSI.sub("", out)
    assert all(len(line) <= 100 for line in text.splitlines()), text
    assert "2024-01-01 02:00" in text and "2024-01-02 02:00" in text, text
    # The path is all there, wrapped inside its column rather than cut with an ellipsis.
    assert "runs/daily-etl/daily-etl-20240101T020000Z-1.ipynb" in _cell_text(text, "output"), text
    assert "…" not in text.split("error")[0]


def test_runs_drops_the_columns_no_run_fills(home: Path, history: Path):
    store = RunStore()
    store.record_missed("daily-etl", datetime(2024, 1, 5, 2, tzinfo=UTC), "scheduler was down")
    only_missed = CliRunner().invoke(cli, ["runs", "daily-etl", "--status", "missed"]).output
    header = only_missed.splitlines()[1]
    assert "logical date" in header and "state" in header
    for empty in ("started", "duration", "output"):
        assert empty not in header, only_missed


def test_runs_wide_is_one_line_per_run_on_any_terminal(history: Path):
    code, out = in_terminal(["runs", "daily-etl", "--wide"], cols=60)
    assert code == 0, out
    rows = [line for line in ANSI.sub("", out).splitlines() if "2024-01-0" in line]
    assert len(rows) == 2, out
    assert "runs/daily-etl/daily-etl-20240101T020000Z-1.ipynb" in rows[1]


def test_piped_runs_has_no_escape_codes_and_is_not_squeezed(history: Path):
    done = piped(["runs", "daily-etl"])
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert "runs/daily-etl/daily-etl-20240101T020000Z-1.ipynb" in done.stdout


def test_run_progress_is_one_updating_line_on_a_terminal_and_plain_lines_in_a_pipe(home: Path):
    nb = home / "three_cells.ipynb"
    home.mkdir(parents=True, exist_ok=True)
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(f"x{i} = {i}") for i in range(3)]
        ),
        str(nb),
    )
    code, out = in_terminal(["run", str(nb), "-o", str(home / "t1.ipynb")])
    assert code == 0, out
    progress = [line for line in out.split("\n") if "code cells: " in line]
    assert len(progress) == 1, out  # every update redraws the same line ...
    assert progress[0].count("\r") >= 2  # ... by a carriage return

    done = piped(["run", str(nb), "-o", str(home / "t2.ipynb")])
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 3, done.stderr
    assert all(re.fullmatch(r"\d+/3 code cells: cell \d `x\d = \d`", line) for line in lines), (
        done.stderr
    )

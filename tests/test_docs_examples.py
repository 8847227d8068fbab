"""Every code example in the README and docs/ runs as written.

Each page's ```python blocks run in order in one fresh IPython shell (so `%%task`
cells and `%load_ext nbflow` work, and a block may use what an earlier block on
the same page defined), in a subprocess of its own with a fresh nbflow home and
an empty working directory. Shell blocks whose every command is `nbflow ...` run
after the page's Python blocks, in the same working directory and home.

What a block must do:

- A block followed directly by a bare ``` block whose first line reads
  `SomeError: message` (the docs' way of showing an error) must raise that
  class, with that message's first line. An error of one task counts when it
  reaches the caller inside `RunFailed` (as task errors do). A block whose
  error is shown further down is marked `<!-- raises: SomeError -->`.
- Any other block must run without raising.
- A block that truly cannot run here (it needs an S3 server, a mail server…) is
  marked in the markdown by `<!-- not-run: reason -->` on the line before its
  fence; it is skipped, and counted in the report of
  `test_blocks_not_run_say_why`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(.*?)\s*-->\s*$")
RAISES = re.compile(r"^<!--\s*raises:\s*(\w+)\s*-->\s*$")
# `KeyError: 'x'`, `nf.RunFailed: ...`, `nbflow.jobs.notebook.NotebookFailed: ...`
SHOWN_ERROR = re.compile(
    r"^(?:[\w.]+\.)?([A-Z]\w*(?:Error|Failed|Timeout|Died|Locked|Found|Missing|Exception|Task|Result)): (.*)$"
)
SHELL_LANGS = {"bash", "sh", "shell", "console"}


@dataclass
class Block:
    """One fenced code block of a page, with what the page says about it."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason given by a `<!-- not-run: ... -->` marker
    raises: str | None  # the exception class the next block shows, if any
    message: str | None  # the first line of that exception's message


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of one markdown page, in order."""
    lines = page.read_text().splitlines()
    raw: list[tuple[int, str, str, str | None, str | None]] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        marker = raises = None
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0 and (nm := NOT_RUN.match(lines[k].strip())):
            marker = nm.group(1)
        if k >= 0 and (rm := RAISES.match(lines[k].strip())):
            raises = rm.group(1)
        raw.append((start + 1, lang, "\n".join(lines[start + 1 : j]), marker, raises))
        raw.append(
            (-(j + 1), "", "", None, None)
        )  # the closing fence, to see what follows directly
        i = j + 1
    blocks: list[Block] = []
    rel = str(page.relative_to(ROOT))
    for n, (line, lang, code, marker, raises) in enumerate(raw):
        if line < 0:
            continue
        message = None
        closing = -raw[n + 1][0] if n + 1 < len(raw) else None
        following = raw[n + 2] if n + 2 < len(raw) else None
        # The shown error is the bare block right after this one (no text in between).
        if following and closing is not None and following[0] == closing + 1 and not following[1]:
            first = following[2].splitlines()[0] if following[2] else ""
            if em := SHOWN_ERROR.match(first):
                raises, message = em.group(1), em.group(2)
        blocks.append(Block(rel, line, lang, code, marker, raises, message))
    return blocks


def session_code(code: str) -> str:
    """The code of a block: a `>>>` session transcript keeps its `>>>`/`...` lines only
    (the rest is the output it shows); any other block is code as it stands."""
    lines = code.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if not first.startswith(">>>"):
        return code
    kept = [line[4:] if len(line) > 3 else "" for line in lines if line.startswith((">>>", "..."))]
    return "\n".join(kept)


def runnable(page: Path) -> list[Block]:
    """The blocks of a page that this test runs (Python, and nbflow-only shell blocks)."""
    out = []
    for b in read_blocks(page):
        if b.not_run is not None:
            continue
        if b.lang == "python" or (b.lang in SHELL_LANGS and shell_commands(b.code)):
            out.append(b)
    return out


def shell_commands(code: str) -> list[list[str]] | None:
    """The `nbflow` commands of a shell block, or None when it has anything else in it."""
    commands = []
    for line in code.splitlines():
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        text = text.removeprefix("$ ")
        if not text.startswith("nbflow "):
            return None
        commands.append(shlex.split(text))
    return commands or None


def test_every_page_has_been_read():
    """The pages exist and the parser finds the README's example (guards against a silent 0)."""
    readme = read_blocks(ROOT / "README.md")
    assert any(b.lang == "python" for b in readme)
    assert sum(len(runnable(p)) for p in PAGES) > 50


RUN_PAGES = [p for p in PAGES if runnable(p)]


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUN_PAGES])
def test_page_examples_run_as_written(page: Path, tmp_path: Path):
    blocks = runnable(page)
    home, work = tmp_path / "page-home", tmp_path / "page-work"
    work.mkdir()
    env = {**os.environ, "NBFLOW_HOME": str(home), "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    env.pop("MPLBACKEND", None)
    # A copy of the repository's notebooks, for the docs that run them (`nbflow run notebooks/...`).
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    done = subprocess.run(
        [sys.executable, __file__, json.dumps([asdict(b) for b in blocks])],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = done.stdout.rsplit("@@REPORT@@", 1)
    assert len(report) == 2, done.stdout[-4000:] + done.stderr[-4000:]
    failures = json.loads(report[1])
    assert not failures, "\n\n".join(failures)


def test_blocks_not_run_say_why(capsys: pytest.CaptureFixture[str]):
    """Each `<!-- not-run: -->` marker gives a reason, and the count is reported."""
    skipped = [b for p in PAGES for b in read_blocks(p) if b.not_run is not None]
    for b in skipped:
        assert b.not_run, f"{b.page}:{b.line}: a not-run marker needs a reason"
    with capsys.disabled():
        print(f"\n{len(skipped)} documentation code blocks are marked not-run:")
        for b in skipped:
            print(f"  {b.page}:{b.line}: {b.not_run}")


# ---- the subprocess: runs one page's blocks and prints a JSON list of failures ----


def _run_page(blocks: list[Block]) -> list[str]:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(history_manager=None)
    shell.history_manager.enabled = False
    failures: list[str] = []
    for b in blocks:
        where = f"{b.page}:{b.line}"
        if b.lang == "python":
            result = shell.run_cell(session_code(b.code), store_history=False)
            error = result.error_before_exec or result.error_in_exec
            failures += _check(where, b, error)
        else:
            for argv in shell_commands(b.code) or []:
                done = subprocess.run(
                    [str(Path(sys.executable).with_name("nbflow")), *argv[1:]],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                if done.returncode != 0:
                    failures.append(
                        f"{where}: `{shlex.join(argv)}` exited {done.returncode}:\n"
                        f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
                    )
    return failures


def _check(where: str, b: Block, error: BaseException | None) -> list[str]:
    if b.raises is None:
        if error is None:
            return []
        return [f"{where}: raised {type(error).__name__}: {error}\n--- block ---\n{b.code}"]
    if error is None:
        return [f"{where}: the page shows {b.raises}, but the block raised nothing"]
    inner = getattr(error, "error", None)
    if type(error).__name__ == "RunFailed" and b.raises != "RunFailed" and inner is not None:
        error = inner  # a task's error, as the caller meets it: inside RunFailed
    if type(error).__name__ != b.raises:
        return [
            f"{where}: the page shows {b.raises}, the block raised {type(error).__name__}: {error}"
        ]
    got = str(error).splitlines()[0] if str(error) else ""
    if b.message is not None and got != b.message:
        return [f"{where}: {b.raises}'s message differs\n  page: {b.message}\n  real: {got}"]
    return []


if __name__ == "__main__":
    page_blocks = [Block(**d) for d in json.loads(sys.argv[1])]
    found = _run_page(page_blocks)
    print("@@REPORT@@" + json.dumps(found))

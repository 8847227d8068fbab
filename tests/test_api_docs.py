"""docs/api.md stays true to the code: every export documented, every signature exact.

The page's format, which these tests parse:

- An *entry* is a level-3 or level-4 heading whose whole text is one code span:
  "### `nf.NAME`" or "### `nf.NAME(PARAMS)`" for a name `nbflow` exports, and
  "#### `Class.member(PARAMS)`" for a member of an exported class
  (`Pipeline.run(...)`). Headings of the Jupyter magics ("`%%task ...`",
  "`%nbflow ...`") are the only other code-span headings allowed.
- PARAMS is written as a Python parameter list without annotations, so it is
  parsed with `ast` and compared with `inspect.signature`: names, kinds
  (positional-only, keyword-only, *args, **kwargs) and defaults, the defaults
  as source text normalized by `ast` (so 'UTC' and "UTC" are equal).
- The task options are the table rows "| `option` | `default` | ... |" under the
  heading "Task options"; the magics' options and commands are the table rows
  under the `%%task` and `%nbflow` headings.

Nothing here runs a pipeline or a notebook.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbflow
from nbflow.core.dag.task import TaskOptions

DOCS = Path(__file__).resolve().parent.parent / "docs"
API = DOCS / "api.md"

ENTRY_HEADING = re.compile(r"^#{3,4} `([^`]+)`\s*$")
ENTRY = re.compile(r"^(?P<owner>nf|[A-Z]\w*)\.(?P<name>\w+)(?:\((?P<params>.*)\))?$")
HEADING = re.compile(r"^(#{1,6}) (.*?)\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")

# Task options set by `sensor()` and `subpipeline()`, not by the user: documented there.
INTERNAL_TASK_OPTIONS = {"sensor", "always_run"}


@dataclass(frozen=True)
class Entry:
    line: int
    owner: str  # "nf" for a name nbflow exports, else the exported class it belongs to
    name: str
    params: str | None  # None: documented without a signature

    @property
    def label(self) -> str:
        return f"docs/api.md:{self.line}: `{self.owner}.{self.name}`"


def outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines that are not inside a fenced code block."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def entries(text: str) -> list[Entry]:
    found = []
    for number, line in outside_fences(text):
        heading = ENTRY_HEADING.match(line)
        if heading is None:
            continue
        code = heading.group(1)
        if code.startswith("%"):
            continue  # a magic: checked by test_magics_are_documented
        match = ENTRY.match(code)
        assert match is not None, (
            f"docs/api.md:{number}: entry heading `{code}` is not `nf.NAME(...)` or "
            "`Class.member(...)`"
        )
        found.append(Entry(number, match["owner"], match["name"], match["params"]))
    return found


def section(text: str, starts: str) -> list[str]:
    """The lines under the first heading whose text starts with `starts`, up to the next heading."""
    lines, inside = [], False
    for _, line in outside_fences(text):
        heading = HEADING.match(line)
        if heading:
            if inside:
                break
            inside = heading.group(2).startswith(starts)
        elif inside:
            lines.append(line)
    assert inside or lines, f"docs/api.md has no heading starting with {starts!r}"
    return lines


def page() -> str:
    return API.read_text(encoding="utf-8")


def exported() -> set[str]:
    return set(nbflow.__all__)


def obj_of(entry: Entry) -> Any:
    if entry.owner == "nf":
        return getattr(nbflow, entry.name)
    return getattr(getattr(nbflow, entry.owner), entry.name)


def resolvable(entry: Entry) -> bool:
    """Entries naming something nbflow lacks are test_every_entry_is_exported's to report."""
    if entry.owner == "nf":
        return entry.name in exported()
    return entry.owner in exported() and hasattr(getattr(nbflow, entry.owner), entry.name)


# --- signatures ---------------------------------------------------------------------------


def normalized_default(source: str) -> str:
    try:
        return ast.unparse(ast.parse(source, mode="eval").body)
    except SyntaxError:
        return source  # e.g. <factory>: never equal to something the page can write


def documented_parameters(params: str) -> list[tuple[str, str, str | None]]:
    """(kind, name, default source) of a parameter list written on the page."""
    tree = ast.parse(f"def _({params}): pass")
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    a = fn.args
    out: list[tuple[str, str, str | None]] = []
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(
        a.defaults
    )
    for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append((kind, arg.arg, None if default is None else ast.unparse(default)))
    if a.vararg is not None:
        out.append(("VAR_POSITIONAL", a.vararg.arg, None))
    for arg, kw_default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        out.append(
            ("KEYWORD_ONLY", arg.arg, None if kw_default is None else ast.unparse(kw_default))
        )
    if a.kwarg is not None:
        out.append(("VAR_KEYWORD", a.kwarg.arg, None))
    return out


def real_parameters(obj: Any, member: bool) -> list[tuple[str, str, str | None]]:
    parameters = list(inspect.signature(obj).parameters.values())
    if member and parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    return [
        (
            p.kind.name,
            p.name,
            None if p.default is inspect.Parameter.empty else normalized_default(repr(p.default)),
        )
        for p in parameters
    ]


def render(parameters: list[tuple[str, str, str | None]]) -> str:
    """A parameter list as the page would write it, for failure messages."""
    out: list[str] = []
    kinds = [kind for kind, _, _ in parameters]
    for i, (kind, name, default) in enumerate(parameters):
        if kind == "KEYWORD_ONLY" and "VAR_POSITIONAL" not in kinds and "*" not in out:
            out.append("*")
        prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(kind, "")
        out.append(f"{prefix}{name}" + ("" if default is None else f"={default}"))
        if kind == "POSITIONAL_ONLY" and (
            i + 1 == len(parameters) or parameters[i + 1][0] != "POSITIONAL_ONLY"
        ):
            out.append("/")
    return ", ".join(out)


# --- tests --------------------------------------------------------------------------------


def test_every_export_is_documented() -> None:
    documented = {e.name for e in entries(page()) if e.owner == "nf"}
    missing = sorted(exported() - documented)
    assert not missing, (
        f"nbflow exports names docs/api.md has no entry for: {missing}; add a heading "
        '"### `nf.NAME(...)`" for each'
    )


def test_every_entry_is_exported() -> None:
    gone = []
    for entry in entries(page()):
        if entry.owner == "nf":
            if entry.name not in exported():
                gone.append(f"{entry.label}: not in nbflow.__all__")
        elif entry.owner not in exported():
            gone.append(f"{entry.label}: class `{entry.owner}` is not in nbflow.__all__")
        elif not hasattr(getattr(nbflow, entry.owner), entry.name):
            gone.append(f"{entry.label}: `{entry.owner}` has no member `{entry.name}`")
    assert not gone, "docs/api.md documents names nbflow does not have:\n" + "\n".join(gone)


def test_each_name_has_one_entry() -> None:
    seen: dict[tuple[str, str], int] = {}
    twice = []
    for entry in entries(page()):
        key = (entry.owner, entry.name)
        if key in seen:
            twice.append(f"{entry.label} (also line {seen[key]})")
        seen[key] = entry.line
    assert not twice, "docs/api.md documents a name twice:\n" + "\n".join(twice)


def test_documented_signatures_match_the_code() -> None:
    wrong = []
    for entry in entries(page()):
        if entry.params is None or not resolvable(entry):
            continue
        try:
            documented = documented_parameters(entry.params)
        except SyntaxError as exc:
            wrong.append(f"{entry.label}: parameters do not parse as Python ({exc.msg})")
            continue
        real = real_parameters(obj_of(entry), member=entry.owner != "nf")
        if documented != real:
            wrong.append(
                f"{entry.label}\n    page: ({render(documented)})\n    code: ({render(real)})"
            )
    assert not wrong, "signatures in docs/api.md differ from the code:\n" + "\n".join(wrong)


def test_every_exported_function_has_a_signature() -> None:
    bare = [
        e.label
        for e in entries(page())
        if e.owner == "nf" and e.params is None and resolvable(e) and inspect.isfunction(obj_of(e))
    ]
    assert not bare, "give these functions their signature in docs/api.md:\n" + "\n".join(bare)


def test_references_in_the_page_exist() -> None:
    """`nf.x` anywhere on the page (examples too) is exported; `pipe.x` is a Pipeline attribute;
    a code span `nbflow.module.Name` can be imported."""
    text = page()
    pipe = nbflow.Pipeline("api-docs")
    wrong = [
        f"nf.{name}"
        for name in sorted(set(re.findall(r"(?<![\w.])nf\.([A-Za-z_]\w*)", text)))
        if name not in exported()
    ]
    wrong += [
        f"pipe.{name}"
        for name in sorted(set(re.findall(r"(?<![\w.])pipe\.([A-Za-z_]\w*)", text)))
        if not hasattr(pipe, name)
    ]
    for _, line in outside_fences(text):
        for path in re.findall(r"`(nbflow(?:\.[A-Za-z_]\w*)+)`", line):
            if not _resolves(path):
                wrong.append(path)
    assert not wrong, f"docs/api.md refers to names that do not exist: {wrong}"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_task_options_table_matches_task_options() -> None:
    rows = {}
    for line in section(page(), "Task options"):
        row = re.match(r"^\| `(\w+)` \| `([^`]*)` \|", line)
        if row:
            rows[row[1]] = normalized_default(row[2])
    real = {
        f.name: normalized_default(repr(f.default))
        for f in dataclasses.fields(TaskOptions)
        if f.name not in INTERNAL_TASK_OPTIONS
    }
    assert sorted(rows) == sorted(real), (
        f"task options on the page {sorted(rows)} differ from TaskOptions {sorted(real)}"
    )
    wrong = {name: (rows[name], real[name]) for name in real if rows[name] != real[name]}
    assert not wrong, f"task option defaults differ (page, code): {wrong}"


def test_magics_are_documented() -> None:
    from nbflow.jupyter.magics import _COMMANDS, NbflowMagics

    text = page()
    documented_options = {
        m[1] for line in section(text, "`%%task") if (m := re.match(r"^\| `(--[\w-]+)", line))
    }
    real_options = set(re.findall(r'"(--[a-z][\w-]*)"', inspect.getsource(NbflowMagics.task)))
    assert documented_options == real_options, (
        f"%%task options: page {sorted(documented_options)}, code {sorted(real_options)}"
    )
    documented_commands = {
        m[1] for line in section(text, "`%nbflow") if (m := re.match(r"^\| `%nbflow (\w+)", line))
    }
    assert documented_commands == set(_COMMANDS), (
        f"%nbflow commands: page {sorted(documented_commands)}, code {sorted(_COMMANDS)}"
    )


# --- links ----------------------------------------------------------------------------------


def slugs(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a page."""
    out: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in outside_fences(markdown):
        heading = HEADING.match(line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(2).strip().lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_links_resolve() -> None:
    text = page()
    broken = []
    for number, line in outside_fences(text):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, mailto:
            path, _, anchor = target.partition("#")
            file = (API.parent / path).resolve() if path else API
            if not file.exists():
                broken.append(f"docs/api.md:{number}: {target} (no such file)")
            elif (
                anchor
                and file.suffix == ".md"
                and anchor not in slugs(file.read_text(encoding="utf-8"))
            ):
                broken.append(f"docs/api.md:{number}: {target} (no such heading)")
    assert not broken, "broken links in docs/api.md:\n" + "\n".join(broken)


def test_index_links_the_reference() -> None:
    assert "(api.md)" in (DOCS / "index.md").read_text(encoding="utf-8")

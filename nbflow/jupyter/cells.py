"""Turn the body of a `%%task` cell into a task function.

A task cell is ordinary notebook code. What it *defines* at top level
(assignments, augmented assignments, `for`/`with` targets, imports, `def` and
`class`, also inside top-level `if`/`try`/`for`/`while`/`with` blocks) are its
outputs; the names it reads fall into three groups, decided when the cell is
linked into its pipeline:

- outputs of another task cell → inputs (a dependency on that cell's task);
- ordinary notebook globals (`threshold = 0.5` in a plain cell) → read from
  the notebook namespace and fingerprinted by value, so editing them
  invalidates the cell;
- anything else (not a builtin) → a run parameter.

The cell becomes a generated function whose source is registered with
`linecache`, so the fingerprinter reads it like any notebook function: the
cell's normalized syntax tree counts, comments and formatting do not.
The function copies its inputs before the body runs (a cell that mutates an
upstream output in place never changes the upstream value) and returns a
dict of its outputs; imported modules travel as a reference, not a pickle.
Names starting with `_` are private to the cell and never outputs.

A cell that ends with an expression (`df.describe()`, not followed by `;`)
shows its value as a plain cell would. The value is not an output: it goes
into the task's `nf.Output` metadata as its display (the mime bundle IPython's
formatters make of it), so a cache hit shows it again without unpickling
anything and it never counts in the cell's output digest. The object itself
is kept in this kernel (`shown_value`) when the body ran here, so `_` and
`Out` hold it as they would.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import linecache
import textwrap
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbflow.core.cache.fingerprint import global_names
from nbflow.core.errors import NbflowError

_BUILTINS = frozenset(dir(builtins))
_counter = itertools.count()
MODULE_MARK = "__nbflow_module__"


class CellError(NbflowError):
    """A `%%task` cell that cannot become a task (syntax, names defined twice, ...)."""


@dataclass(frozen=True, slots=True)
class CellAnalysis:
    """What a cell defines and reads at top level, in order of first appearance."""

    outputs: tuple[str, ...]
    reads: tuple[str, ...]
    """Free names: read somewhere in the cell and not defined by it, builtins excluded."""
    rebinds: tuple[str, ...]
    """Names the cell both reads before defining and defines (e.g. `df = df.dropna()`)."""


def analyze(source: str) -> CellAnalysis:
    """Parse a cell body and name its outputs and free reads (raises CellError on bad syntax)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise CellError(f"the cell does not parse: {exc.msg} (line {exc.lineno})") from exc
    outputs: dict[str, None] = {}
    for stmt in tree.body:
        _defined_by(stmt, outputs)
    early = _read_before_defined(tree)
    return CellAnalysis(
        outputs=tuple(n for n in outputs if not n.startswith("_")),
        reads=tuple(n for n in _free_reads(source, tree) if n not in outputs or n in early),
        rebinds=tuple(n for n in early if n in outputs),
    )


def _targets(node: ast.AST, out: dict[str, None]) -> None:
    if isinstance(node, ast.Name):
        out[node.id] = None
    elif isinstance(node, ast.Tuple | ast.List):
        for elt in node.elts:
            _targets(elt, out)
    elif isinstance(node, ast.Starred):
        _targets(node.value, out)


def _defined_by(stmt: ast.stmt, out: dict[str, None]) -> None:
    """The names `stmt` binds at the cell's top level, in source order, into `out`: its own
    bindings, then those of the blocks it contains (a loop's body, an `if`'s branches)."""
    if isinstance(stmt, ast.Try):
        _defined_by_try(stmt, out)
    else:
        _bound_by(stmt, out)
        for s in _blocks(stmt):
            _defined_by(s, out)
    # Walrus targets in conditions and assignments also bind at top level.
    if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Expr):
        for node in ast.iter_child_nodes(stmt):
            if isinstance(node, ast.expr):
                _walrus(node, out)


def _bound_by(stmt: ast.stmt, out: dict[str, None]) -> None:
    """What the statement itself binds (not the blocks inside it); refuses what hides it."""
    match stmt:
        case ast.Assign(targets=targets):
            for t in targets:
                _targets(t, out)
        case ast.AnnAssign(target=target, value=value) if value is not None:
            _targets(target, out)
        case ast.AugAssign(target=target) | ast.For(target=target) | ast.AsyncFor(target=target):
            _targets(target, out)
        case ast.Import(names=names) | ast.ImportFrom(names=names):
            for alias in names:
                if alias.name == "*":
                    raise CellError(
                        "`from ... import *` hides what a task cell defines; import names"
                    )
                out[(alias.asname or alias.name).partition(".")[0]] = None
        case ast.FunctionDef(name=name) | ast.AsyncFunctionDef(name=name) | ast.ClassDef(name=name):
            out[name] = None
        case ast.Global() | ast.Nonlocal():
            raise CellError("`global` statements are not allowed in a task cell: define the name")
        case ast.With(items=items) | ast.AsyncWith(items=items):
            for item in items:
                if item.optional_vars is not None:
                    _targets(item.optional_vars, out)
        case ast.Expr(value=value):
            _walrus(value, out)


def _blocks(stmt: ast.stmt) -> list[ast.stmt]:
    """The statements of the blocks a compound statement runs at the same level."""
    match stmt:
        case ast.For() | ast.AsyncFor() | ast.If() | ast.While():
            return [*stmt.body, *stmt.orelse]
        case ast.With() | ast.AsyncWith():
            return list(stmt.body)
    return []


def _defined_by_try(stmt: ast.Try, out: dict[str, None]) -> None:
    """A `try`: its body, each handler's name then body, its `else` and `finally`."""
    for s in stmt.body:
        _defined_by(s, out)
    for handler in stmt.handlers:
        if handler.name:
            out[handler.name] = None
        for s in handler.body:
            _defined_by(s, out)
    for s in [*stmt.orelse, *stmt.finalbody]:
        _defined_by(s, out)


def _walrus(expr: ast.expr, out: dict[str, None]) -> None:
    for node in ast.walk(expr):
        if isinstance(node, ast.NamedExpr):
            _targets(node.target, out)


def _free_reads(source: str, tree: ast.Module) -> list[str]:
    """Names the cell reads as globals once its top-level names are locals of a function.

    Compiling the body as a function lets Python's own scoping rules decide
    (comprehensions, nested functions, class bodies), not a hand-written guess.
    """
    body = textwrap.indent(source, "    ") if source.strip() else "    pass"
    code = compile(f"def __cell__():\n{body}\n    pass\n", "<cell>", "exec")
    fn_code = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    # Keep source order (where each name first appears); a builtin the cell
    # assigns somewhere is the cell's own name, not the builtin.
    order: dict[str, tuple[int, int]] = {}
    assigned: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            pos = (n.lineno, n.col_offset)
            if pos < order.get(n.id, (1 << 30, 0)):
                order[n.id] = pos
            if isinstance(n.ctx, ast.Store):
                assigned.add(n.id)
    found = [n for n in global_names(fn_code) if n not in _BUILTINS or n in assigned]
    return sorted(found, key=lambda n: order.get(n, (1 << 30, 0)))


def _read_before_defined(tree: ast.Module) -> dict[str, None]:
    """Top-level names loaded by a statement before any earlier statement defined them
    (in source order)."""
    defined: dict[str, None] = {}
    early: dict[str, None] = {}
    for stmt in tree.body:
        if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            loads = [
                n.id
                for n in ast.walk(stmt)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            ]
            if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                loads.append(stmt.target.id)  # `x += 1` reads x
            early.update((n, None) for n in loads if n not in defined)
        _defined_by(stmt, defined)
    return early


# --- the generated task function ---------------------------------------------


def make_cell_function(
    task_name: str,
    source: str,
    outputs: tuple[str, ...],
    inputs: Mapping[str, str],
    params: tuple[str, ...],
    namespace: dict[str, Any],
) -> types.FunctionType:
    """Build `def cell(<upstream tasks>, <run parameters>)` returning `{output: value}`.

    `inputs` maps each name the cell reads to the task cell that defines it.
    The upstream task values (dicts of outputs) arrive as parameters named
    `__in_<task>`; the prologue unpacks and copies the names the cell reads.
    """
    upstream = sorted(set(inputs.values()))
    arg_for = {t: f"__in_{i}" for i, t in enumerate(upstream)}
    args = [arg_for[t] for t in upstream] + list(params)
    lines = [f"def __nbflow_cell__({', '.join(args)}):"]
    lines.append("    def __take(__value):")
    lines.append(
        f"        if type(__value) is tuple and len(__value) == 2 and __value[0] == {MODULE_MARK!r}:"
    )
    lines.append("            import importlib")
    lines.append("            return importlib.import_module(__value[1])")
    lines.append("        import copy")
    lines.append("        try:")
    lines.append("            return copy.deepcopy(__value)")
    lines.append("        except Exception:")
    lines.append("            return __value")
    for name in sorted(inputs):
        lines.append(f"    {name} = __take({arg_for[inputs[name]]}[{name!r}])")
    source, shows = _capture_trailing_expression(source)
    body = textwrap.indent(source.rstrip() or "pass", "    ")
    lines.append(body)
    lines.append("    __scope = locals()")
    lines.append("    import types as __types")
    lines.append("    __outputs = {")
    lines.append("        __k: (")
    lines.append(f"            ({MODULE_MARK!r}, __scope[__k].__name__)")
    lines.append("            if isinstance(__scope[__k], __types.ModuleType)")
    lines.append("            else __scope[__k]")
    lines.append("        )")
    lines.append(f"        for __k in {tuple(outputs)!r}")
    lines.append("        if __k in __scope")
    lines.append("    }")
    if shows:
        lines.append("    from nbflow.jupyter.cells import with_display as __with_display")
        lines.append(f"    return __with_display(__outputs, {_SHOWN_NAME}, {task_name!r})")
    else:
        lines.append("    return __outputs")
    text = "\n".join(lines) + "\n"
    filename = f"<nbflow-cell {task_name} #{next(_counter)}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    local: dict[str, Any] = {}
    exec(compile(text, filename, "exec"), namespace, local)
    fn = local["__nbflow_cell__"]
    fn.__name__ = fn.__qualname__ = task_name if task_name.isidentifier() else "cell"
    # Defined with `namespace` as its globals: notebook globals it reads are
    # fingerprinted by value, and it pickles by value (it lives in __main__).
    return fn


_SHOWN_NAME = "__nbflow_shown__"
_shown: dict[str, tuple[str, Any]] = {}
"""task -> (display token, the value its last run in this kernel showed)."""


def _capture_trailing_expression(source: str) -> tuple[str, bool]:
    """The cell body with its trailing expression assigned to `__nbflow_shown__`, and whether
    it has one. As in IPython, a trailing `;` means "show nothing"."""
    from IPython.core.displayhook import DisplayHook

    tree = ast.parse(source)
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return source, False
    if DisplayHook.semicolon_at_end_of_expression(source):
        return source, False
    last = tree.body[-1]
    lines = source.splitlines(keepends=True)
    start = sum(len(line) for line in lines[: last.lineno - 1]) + _char_offset(
        lines[last.lineno - 1], last.col_offset
    )
    assert last.end_lineno is not None and last.end_col_offset is not None
    end = sum(len(line) for line in lines[: last.end_lineno - 1]) + _char_offset(
        lines[last.end_lineno - 1], last.end_col_offset
    )
    # Parentheses let the expression keep its own line breaks.
    return f"{source[:start]}{_SHOWN_NAME} = (\n{source[start:end]}\n){source[end:]}", True


def _char_offset(line: str, utf8_offset: int) -> int:
    """ast's column offsets count UTF-8 bytes; string slicing counts characters."""
    return len(line.encode()[:utf8_offset].decode(errors="ignore"))


def display_bundle(value: Any) -> dict[str, Any]:
    """The mime bundle IPython shows for `value` (text/plain at least), JSON-able."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        data, metadata = shell.display_formatter.format(value)
    else:  # run in a worker process: the formatters without a shell
        from IPython.core.formatters import DisplayFormatter

        data, metadata = DisplayFormatter().format(value)
    # A widget's live view needs its model, which a replay from the cache does not have.
    data = {k: v for k, v in data.items() if k != "application/vnd.jupyter.widget-view+json"}
    return {"data": data or {"text/plain": repr(value)}, "metadata": metadata or {}}


def with_display(outputs: dict[str, Any], value: Any, task: str) -> Any:
    """What a cell with a trailing expression returns: its outputs, with the value's display
    as metadata (nothing when the value is None, as in IPython)."""
    import uuid

    from nbflow.core.patterns.output import Output

    if value is None:
        return outputs
    token = uuid.uuid4().hex
    _shown[task] = (token, value)
    return Output(outputs, metadata={"display": {**display_bundle(value), "token": token}})


class ShownValue:
    """A trailing expression's value as it was shown, replayed from the cache."""

    def __init__(self, bundle: Mapping[str, Any]) -> None:
        self.bundle = bundle

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(self.bundle["data"]), dict(self.bundle.get("metadata") or {})

    def __repr__(self) -> str:
        return str(self.bundle["data"].get("text/plain", "<shown value>"))


def shown_value(task: str, metadata: Mapping[str, Any] | None) -> Any:
    """The value a cell's trailing expression showed, for IPython to display again: the object
    when its run happened in this kernel, else its stored display; None when there is none."""
    display = (metadata or {}).get("display")
    if not display:
        return None
    token, value = _shown.get(task, ("", None))
    if token == display.get("token"):
        return value
    return ShownValue(display)


def unpack_outputs(value: Mapping[str, Any]) -> dict[str, Any]:
    """The outputs to bind into the notebook namespace (module references re-imported)."""
    import importlib

    out: dict[str, Any] = {}
    for name, v in value.items():
        if type(v) is tuple and len(v) == 2 and v[0] == MODULE_MARK:
            v = importlib.import_module(v[1])
        out[name] = v
    return out

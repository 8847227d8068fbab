"""Notebook parameters: what a notebook declares, what a run may pass, and how values get in.

Policy:
- **Declared parameters** are read from the code of the first cell tagged
  `parameters` (papermill's convention) by parsing it, never by regular
  expression: every top-level `name = value` (or `name: type = value`) is a
  parameter. Its default is the real value (`ast.literal_eval`, plus a few safe
  constructors: `date(...)`, `datetime(...)`, `timedelta(...)`, `Decimal("...")`,
  `Path("...")`, `set()`), its type is the annotation (a quoted one,
  `x: "int"`, read as unquoted) or the default's type, and its comment is
  the inline comment on its line (read with `tokenize`).
  A default that is not a literal (`date.today()`) is `NOT_A_LITERAL`, and
  accepts any value.
- **Checking**: an unknown name is an error listing the declared ones (with a
  near miss); a value whose type does not fit the declared default's type is an
  error. An int fits a float; a `None` default accepts anything; a bool never
  fits an int or float (a flag passed as a number is a mistake).
- **Rendering** writes each value as Python source that evaluates back to an
  equal value of the same type: str, int, float (nan/inf too), bool, None,
  list, tuple, set, frozenset, dict, date, datetime (with UTC, fixed-offset or
  zoneinfo zones), time, timedelta, Decimal and Path. Strings go through `repr`,
  so quotes, newlines or code in them stay data. Anything else raises
  `ParameterError` naming the parameter and the type — never a silent `str()`
  (papermill's default translator does that). Modules the values need are
  imported under private names and deleted at the end of the cell, so the
  injected cell never shadows the notebook's own `datetime` or `Path`.
- **Command-line values** are Python literals when they parse as one, else
  strings; a parameter declared as a string always receives the raw text, and
  one declared as a date or datetime receives the ISO text parsed.
- **Secrets**: `secret:NAME` (on the command line, or what a template's
  `{{ secret('NAME') }}` renders to) is a `SecretRef`, never text. It fits a
  parameter declared as a string (or untyped) and is rendered as the call
  `_nbflow_secrets.secret('NAME')`, so the value is fetched by the kernel when
  the cell runs and the cell itself holds only the reference.
"""

from __future__ import annotations

import ast
import datetime as dt
import decimal
import io
import keyword
import math
import pathlib
import tokenize
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbflow.core.errors import JobsError, ParameterError, did_you_mean, format_value_short
from nbflow.core.secrets import Secret, SecretRef, parse_reference
from nbflow.jobs.notebook_file import read_notebook

__all__ = [
    "NOT_A_LITERAL",
    "NotebookParameter",
    "ParameterTypeError",
    "UnknownParameterError",
    "check_parameters",
    "notebook_parameters",
    "parameters_from_notebook",
    "parse_cli_value",
    "render_parameters",
    "render_value",
]


class _NotALiteral:
    """The default of a parameter whose value is computed (e.g. `date.today()`)."""

    def __repr__(self) -> str:
        return "NOT_A_LITERAL"


NOT_A_LITERAL: Any = _NotALiteral()


@dataclass(frozen=True)
class NotebookParameter:
    """One parameter declared in a notebook's `parameters` cell."""

    name: str
    default: Any
    """The value (not its source text); `NOT_A_LITERAL` when it is computed."""
    type: str | None
    """The annotation if there is one, else the default's type name (None for a None default)."""
    comment: str
    """The inline comment on its line, without the `#`."""
    source: str
    """The right-hand side as written."""


class UnknownParameterError(ParameterError):
    """A value was given for a parameter the notebook does not declare."""

    def __init__(
        self, param: str, declared: Mapping[str, NotebookParameter], notebook: str
    ) -> None:
        self.param = param
        self.declared = list(declared)
        self.notebook = notebook
        if declared:
            listing = ", ".join(f"`{n}`" for n in declared)
            hint = f"{did_you_mean(param, declared)}; it declares {listing}"
        else:
            hint = "; it has no cell tagged `parameters`: tag the cell that assigns the defaults"
        super().__init__(f"notebook `{notebook}` has no parameter `{param}`{hint}")


class ParameterTypeError(ParameterError):
    """A value does not have the type of the parameter's declared default."""

    def __init__(self, param: str, expected: str, value: Any, notebook: str) -> None:
        self.param = param
        self.expected = expected
        self.got = type(value).__name__
        super().__init__(
            f"parameter `{param}` of notebook `{notebook}` is declared as {expected} "
            f"but was given a {self.got} ({format_value_short(value)}); pass a value of type {expected}"
        )


# --- reading the declared parameters -------------------------------------------------


def notebook_parameters(path: str | Path) -> dict[str, NotebookParameter]:
    """The parameters `path` declares, in order: name -> `NotebookParameter`."""
    return parameters_from_notebook(read_notebook(Path(path)), str(path))


def parameters_from_notebook(nb: Any, label: str) -> dict[str, NotebookParameter]:
    """Like `notebook_parameters`, for a notebook already read (`label` names it in errors)."""
    cell = next(
        (
            c
            for c in nb.cells
            if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])
        ),
        None,
    )
    if cell is None:
        return {}
    return _parse_parameters_cell(cell.source, label)


def _parse_parameters_cell(source: str, label: str) -> dict[str, NotebookParameter]:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise JobsError(
            f"the `parameters` cell of notebook `{label}` is not valid Python "
            f"(line {exc.lineno}: {exc.msg}); fix it so its defaults can be read"
        ) from exc
    comments = _inline_comments(source)
    found: dict[str, NotebookParameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value, annotation = node.targets, node.value, None
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value, annotation = [node.target], node.value, node.annotation
        else:
            continue
        default = _literal_value(value)
        if annotation is not None:
            type_name: str | None = _annotation_text(annotation)
        elif default is NOT_A_LITERAL or default is None:
            type_name = None
        else:
            type_name = type(default).__name__
        text = ast.get_source_segment(source, value) or ast.unparse(value)
        comment = comments.get(node.end_lineno or node.lineno, "")
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = NotebookParameter(target.id, default, type_name, comment, text)
    return found


def _annotation_text(annotation: ast.expr) -> str:
    """An annotation as source, a quoted one unquoted: `x: "int"` means `x: int` (PEP 563)."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            return ast.unparse(ast.parse(annotation.value.strip(), mode="eval").body)
        except SyntaxError:
            return annotation.value.strip()  # not an expression: the text is all there is
    return ast.unparse(annotation)


def _inline_comments(source: str) -> dict[int, str]:
    """Line number -> the comment text that ends that line (after code)."""
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                if tok.start[0] in code_lines:
                    comments[tok.start[0]] = tok.string.lstrip("#").strip()
            elif tok.type not in skip:
                code_lines.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass  # already parsed by ast; a tokenizer quirk only costs the comments
    return comments


_SAFE_CALLS: dict[str, Any] = {
    "date": dt.date,
    "datetime": dt.datetime,
    "time": dt.time,
    "timedelta": dt.timedelta,
    "Decimal": decimal.Decimal,
    "Path": pathlib.Path,
    "PurePosixPath": pathlib.PurePosixPath,
    "set": set,
    "frozenset": frozenset,
    "tuple": tuple,
}


def _literal_value(node: ast.expr) -> Any:
    """The value of a literal expression, or `NOT_A_LITERAL` (nothing is ever executed)."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if isinstance(node, ast.Call) and not any(k.arg is None for k in node.keywords):
        func = node.func
        # `date(...)` or `datetime.date(...)`, `decimal.Decimal(...)`, `pathlib.Path(...)`
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        constructor = _SAFE_CALLS.get(name or "")
        if constructor is not None:
            args = [_literal_value(a) for a in node.args]
            kwargs = {str(k.arg): _literal_value(k.value) for k in node.keywords}
            if NOT_A_LITERAL not in args and NOT_A_LITERAL not in kwargs.values():
                try:
                    return constructor(*args, **kwargs)
                except (TypeError, ValueError, decimal.InvalidOperation):
                    return NOT_A_LITERAL
    return NOT_A_LITERAL


# --- checking given values -------------------------------------------------------------


def check_parameters(
    given: Mapping[str, Any], declared: Mapping[str, NotebookParameter], notebook: str
) -> None:
    """Raise when a name is not declared or a value does not fit its declared type."""
    for name, value in given.items():
        param = declared.get(name)
        if param is None:
            raise UnknownParameterError(name, declared, notebook)
        expected = _expected_type(param)
        if isinstance(value, SecretRef):
            if expected not in (None, str):
                raise ParameterError(
                    f"parameter `{name}` of notebook `{notebook}` is declared as "
                    f"{expected.__name__}, but was given secret `{value.name}`; a secret is "
                    'text: declare the parameter as a string (e.g. `password = ""`)'
                )
            continue
        if expected is not None and not _fits(value, expected):
            raise ParameterTypeError(name, expected.__name__, value, notebook)


_ANNOTATIONS: dict[str, type] = {
    t.__name__: t
    for t in (str, int, float, bool, list, dict, tuple, set, frozenset, bytes, dt.date, dt.datetime)
}
_ANNOTATIONS.update(
    {"datetime.date": dt.date, "datetime.datetime": dt.datetime, "Decimal": decimal.Decimal}
)


def _expected_type(param: NotebookParameter) -> type | None:
    if param.default is not NOT_A_LITERAL and param.default is not None:
        return type(param.default)
    # No usable default: an annotation naming a plain type still says what fits.
    return _ANNOTATIONS.get(param.type or "")


def _fits(value: Any, expected: type) -> bool:
    if value is None and expected is not type(None):
        # A typed default rejects None: a notebook makes a parameter optional with `x = None`.
        return False
    if isinstance(value, bool) and expected is not bool:
        return False
    if expected is float and isinstance(value, int):
        return True
    if issubclass(expected, pathlib.PurePath):
        return isinstance(value, pathlib.PurePath)
    if expected is dt.date:
        # A datetime is a date in Python's type tree but means something else here.
        return type(value) is dt.date
    return isinstance(value, expected)


# --- rendering values as source ------------------------------------------------------


_MODULE_ALIASES = {
    "datetime": "_nbflow_datetime",
    "decimal": "_nbflow_decimal",
    "pathlib": "_nbflow_pathlib",
    "nbflow.core.secrets": "_nbflow_secrets",
    "zoneinfo": "_nbflow_zoneinfo",
}


def render_parameters(parameters: Mapping[str, Any], comment: str = "Parameters") -> str:
    """The source of an injected-parameters cell assigning `parameters` (see module docstring)."""
    modules: set[str] = set()
    assignments = []
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ParameterError(
                f"parameter name {name!r} is not a Python identifier; "
                "notebook parameters are variables, so use a valid variable name"
            )
        assignments.append(f"{name} = {render_value(value, name, modules)}")
    imports = [f"import {m} as {_MODULE_ALIASES[m]}" for m in sorted(modules)]
    cleanup = [f"del {', '.join(_MODULE_ALIASES[m] for m in sorted(modules))}"] if modules else []
    return "\n".join([f"# {comment}", *imports, *assignments, *cleanup]) + "\n"


def render_value(value: Any, where: str, modules: set[str] | None = None) -> str:
    """Python source for `value`; `where` names it in errors; `modules` collects the imports needed."""
    return _Renderer(where, modules if modules is not None else set()).render(value, where)


class _Renderer:
    def __init__(self, param: str, modules: set[str]) -> None:
        self.param = param
        self.modules = modules
        self.active: set[int] = set()

    def use(self, module: str) -> str:
        self.modules.add(module)
        return _MODULE_ALIASES[module]

    def render(self, value: Any, where: str) -> str:
        t = type(value)
        if t is SecretRef or t is Secret:
            # The reference, resolved by the kernel when the cell runs: never the value.
            return f"{self.use('nbflow.core.secrets')}.secret({value.__nbflow_secret__!r})"
        if value is None or t is bool or t is int or t is str:
            return repr(value)
        if t is float:
            if math.isnan(value):
                return 'float("nan")'
            if math.isinf(value):
                return 'float("inf")' if value > 0 else '-float("inf")'
            return repr(value)
        if t in (list, tuple, set, frozenset, dict):
            if id(value) in self.active:
                raise ParameterError(
                    f"parameter `{self.param}` contains itself (at {where}); pass data without cycles"
                )
            self.active.add(id(value))
            try:
                return self.container(value, where)
            finally:
                self.active.discard(id(value))
        if t is decimal.Decimal:
            return f"{self.use('decimal')}.Decimal({str(value)!r})"
        if isinstance(value, pathlib.PurePath) and t.__module__ == "pathlib":
            return f"{self.use('pathlib')}.{t.__name__}({str(value)!r})"
        if t is dt.date:
            d = self.use("datetime")
            return f"{d}.date({value.year}, {value.month}, {value.day})"
        if t is dt.datetime:
            d = self.use("datetime")
            parts = [value.year, value.month, value.day, value.hour, value.minute, value.second]
            args = ", ".join(str(p) for p in parts) + f", {value.microsecond}"
            return f"{d}.datetime({args}{self.tz_and_fold(value, where)})"
        if t is dt.time:
            d = self.use("datetime")
            args = f"{value.hour}, {value.minute}, {value.second}, {value.microsecond}"
            return f"{d}.time({args}{self.tz_and_fold(value, where)})"
        if t is dt.timedelta:
            d = self.use("datetime")
            return (
                f"{d}.timedelta(days={value.days}, seconds={value.seconds}, "
                f"microseconds={value.microseconds})"
            )
        raise ParameterError(
            f"parameter `{self.param}`{'' if where == self.param else f' (at {where})'} is a "
            f"`{t.__module__}.{t.__qualname__}`, which cannot be written into a notebook "
            "faithfully; pass str, int, float, bool, None, list, tuple, set, dict, date, "
            "datetime, Decimal or Path (e.g. convert with int(), float(), str() or .tolist())"
        )

    def container(self, value: Any, where: str) -> str:
        t = type(value)
        if t is dict:
            items = ", ".join(
                f"{self.render(k, f'{where} key {format_value_short(k, 20)}')}: "
                f"{self.render(v, f'{where}[{format_value_short(k, 20)}]')}"
                for k, v in value.items()
            )
            return "{" + items + "}"
        # Sets are written sorted by their items' source, so the cell reads the same every run.
        parts = [self.render(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if t in (set, frozenset):
            parts.sort()
        body = ", ".join(parts)
        if t is list:
            return f"[{body}]"
        if t is tuple:
            return f"({body},)" if len(parts) == 1 else f"({body})"
        if t is set:
            return f"{{{body}}}" if parts else "set()"
        return f"frozenset({{{body}}})" if parts else "frozenset()"

    def tz_and_fold(self, value: dt.datetime | dt.time, where: str) -> str:
        out = ""
        tz = value.tzinfo
        if tz is not None:
            out += f", tzinfo={self.timezone(tz, where)}"
        if value.fold:
            out += ", fold=1"
        return out

    def timezone(self, tz: dt.tzinfo, where: str) -> str:
        if type(tz) is zoneinfo.ZoneInfo and tz.key:
            return f"{self.use('zoneinfo')}.ZoneInfo({tz.key!r})"
        if type(tz) is dt.timezone:
            d = self.use("datetime")
            if tz is dt.UTC:
                return f"{d}.timezone.utc"
            offset = tz.utcoffset(None)
            name = tz.tzname(None)
            delta = self.render(offset, where)
            # A timezone keeps its name only when one was given; tzname() invents one otherwise.
            default_name = dt.timezone(offset).tzname(None)
            return (
                f"{d}.timezone({delta})"
                if name == default_name
                else f"{d}.timezone({delta}, {name!r})"
            )
        raise ParameterError(
            f"parameter `{self.param}` (at {where}) has a time zone of type "
            f"`{type(tz).__module__}.{type(tz).__qualname__}`, which cannot be written faithfully; "
            "use zoneinfo.ZoneInfo or datetime.timezone"
        )


# --- command-line values -----------------------------------------------------------


def parse_cli_value(text: str, declared: NotebookParameter | None = None) -> Any:
    """A `-p NAME VALUE` value: `secret:NAME` is a `SecretRef`; else a Python literal if it
    parses as one, else the text itself."""
    ref = parse_reference(text)
    if ref is not None:
        return ref
    expected = _expected_type(declared) if declared is not None else None
    if expected is str:
        return text
    if expected in (dt.date, dt.datetime):
        try:
            return expected.fromisoformat(text)
        except ValueError:
            pass  # not ISO: fall through, and the type check names the problem
    if expected is not None and issubclass(expected, pathlib.PurePath):
        return Path(text)
    if expected is decimal.Decimal:
        try:
            return decimal.Decimal(text)
        except decimal.InvalidOperation:
            pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text

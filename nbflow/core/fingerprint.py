"""Code fingerprints: what a task function really runs, as named digests.

How a fingerprint is built:

1. The function's own code: its source is parsed and its syntax tree walked
   by our own walker (node types, field names, constants), skipping
   docstrings, expression contexts and empty fields, so comments, docstrings
   and formatting never count and the digest is the same on Python 3.11–3.13.
   nbflow's own decorators (`@nf.task(...)`) are left out: changing
   `retries=` does not invalidate a result. When no source exists (``exec``
   of a string) the bytecode, constants and names are used instead.
2. Everything it references, recursively: user-defined helper functions and
   classes by their own fingerprints, global constants by value (with their
   types), closure cells, defaults. Library code counts by its package's
   version; user modules by their normalized source.
3. A referenced global that cannot be fingerprinted is reported in
   `FunctionPrint.volatile`, and the planner makes the task always rerun,
   saying why.

The result keeps one digest per part ("function `clean`", "helper
`normalize`", "global `THRESHOLD`"), so the planner can name what changed.
Parsing is memoized per code object; global values are digested afresh on
every plan because they may have changed.
"""

from __future__ import annotations

import ast
import dis
import functools
import importlib.metadata
import inspect
import os
import sys
import sysconfig
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any

from nbflow.core.errors import format_value_short
from nbflow.core.hashing import Unfingerprintable, digest_value, hash_bytes
from nbflow.core.types import Digest


@dataclass(slots=True)
class FunctionPrint:
    """The fingerprint of a callable: a combined digest and its named parts."""

    digest: Digest
    parts: dict[str, Digest] = field(default_factory=dict)
    """Label ("function `f`", "helper `g`", "global `X`", ...) -> digest."""
    shorts: dict[str, str] = field(default_factory=dict)
    """Label -> short repr of a global constant, for "0.5 → 0.7" explanations."""
    volatile: list[str] = field(default_factory=list)
    """Reasons this code can never be trusted to be unchanged (unfingerprintable globals)."""


@dataclass(frozen=True, slots=True)
class _CodeInfo:
    digest: Digest
    globals_read: tuple[str, ...]


_CODE_MEMO: dict[types.CodeType, _CodeInfo] = {}
_SKIP_FIELDS = frozenset({"ctx", "type_comment", "kind"})


# --- the function's own code ------------------------------------------------


def _normalized(node: Any, out: list[str]) -> None:
    if isinstance(node, ast.AST):
        out.append(type(node).__name__)
        out.append("(")
        for name in node._fields:
            if name in _SKIP_FIELDS:
                continue
            value = getattr(node, name, None)
            if value is None or (isinstance(value, list) and not value):
                continue
            if name == "body" and isinstance(value, list):
                value = _strip_docstring(node, value)
            out.append(name)
            out.append("=")
            _normalized(value, out)
        out.append(")")
    elif isinstance(node, list):
        out.append("[")
        for item in node:
            _normalized(item, out)
            out.append(",")
        out.append("]")
    else:
        out.append(f"{type(node).__name__}:{node!r}")


def _strip_docstring(node: ast.AST, body: list[ast.stmt]) -> list[ast.stmt]:
    if (
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
        and body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[1:]
    return body


def _is_nbflow_decorator(expr: ast.expr, fn_globals: dict[str, Any]) -> bool:
    """True for `@nf.task(...)`, `@pipe.task`, `@task`: nbflow's own registration decorators."""
    while isinstance(expr, ast.Call):
        expr = expr.func
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return False
    obj = fn_globals.get(expr.id)
    if obj is None:
        return False
    module = obj.__name__ if isinstance(obj, types.ModuleType) else type(obj).__module__
    if module in ("builtins", "function"):
        module = getattr(obj, "__module__", "") or ""
    return module == "nbflow" or module.startswith("nbflow.")


def _find_def(tree: ast.Module, fn: types.FunctionType) -> ast.AST | None:
    name = fn.__name__
    candidates: list[ast.AST] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name) or (
            isinstance(node, ast.Lambda) and name == "<lambda>"
        ):
            candidates.append(node)
    return candidates[0] if len(candidates) == 1 else None


_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})


def global_names(code: types.CodeType) -> set[str]:
    """Names the code (and code nested in it) loads as globals — attribute names excluded."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in _GLOBAL_LOADS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= global_names(const)
    return names


def _bytecode_digest(code: types.CodeType) -> list[str]:
    """Fallback when no source exists: bytecode, names and constants (docstring excluded)."""
    out = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames), repr(code.co_freevars)]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out.extend(_bytecode_digest(const))
        else:
            out.append(f"{type(const).__name__}:{const!r}")
    return out


def _code_info(fn: types.FunctionType) -> _CodeInfo:
    code = fn.__code__
    info = _CODE_MEMO.get(code)
    if info is not None:
        return info
    referenced = global_names(code)
    node = None
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        node = _find_def(ast.parse(source), fn)
    except (OSError, TypeError, SyntaxError, IndentationError):
        node = None
    if node is not None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.decorator_list = [
                d for d in node.decorator_list if not _is_nbflow_decorator(d, fn.__globals__)
            ]
            node.name = "_"  # the function's name is the task's business, not its code's
        out: list[str] = []
        _normalized(node, out)
        names = tuple(sorted(referenced))
    else:
        doc = fn.__doc__
        consts = list(code.co_consts)
        if doc is not None and consts and consts[0] == doc:
            code = code.replace(co_consts=(None, *consts[1:]))
        out = _bytecode_digest(code)
        names = tuple(sorted(referenced))
    info = _CodeInfo(hash_bytes(*out), names)
    _CODE_MEMO[fn.__code__] = info
    return info


# --- what it references ------------------------------------------------------


@functools.cache
def _library_roots() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(os.path.realpath(p) + os.sep for p in paths)


@functools.cache
def _is_library_module(module_name: str) -> bool:
    top = module_name.partition(".")[0]
    if top in ("__main__", ""):
        return False
    if top in sys.stdlib_module_names or top == "builtins":
        return True
    module = sys.modules.get(module_name) or sys.modules.get(top)
    path = getattr(module, "__file__", None)
    if not path:
        return top != "__main__"
    real = os.path.realpath(path)
    return real.startswith(_library_roots()) or "site-packages" in real


@functools.cache
def _package_version(module_name: str) -> str:
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return f"python {sys.version_info.major}.{sys.version_info.minor}"
    try:
        return f"{top} {importlib.metadata.version(top)}"
    except importlib.metadata.PackageNotFoundError:
        pass
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    module = sys.modules.get(top)
    return f"{top} {getattr(module, '__version__', 'unknown')}"


_MODULE_MEMO: dict[tuple[str, int, int], Digest] = {}


def _user_module_digest(module: types.ModuleType) -> Digest:
    path = getattr(module, "__file__", None)
    if not path:
        return hash_bytes("module", module.__name__)
    st = os.stat(path)
    memo_key = (path, st.st_mtime_ns, st.st_size)
    digest = _MODULE_MEMO.get(memo_key)
    if digest is None:
        with open(path, "rb") as fh:
            source = fh.read()
        try:
            out: list[str] = []
            _normalized(ast.parse(source), out)
            digest = hash_bytes(*out)
        except SyntaxError:
            digest = hash_bytes(source)
        _MODULE_MEMO[memo_key] = digest
    return digest


class _Walker:
    """Collects the parts of one fingerprint, visiting each referenced object once."""

    def __init__(self) -> None:
        self.parts: dict[str, Digest] = {}
        self.shorts: dict[str, str] = {}
        self.volatile: list[str] = []
        self._seen: set[int] = set()

    def function(self, fn: types.FunctionType, label: str) -> None:
        if id(fn) in self._seen:
            return
        self._seen.add(id(fn))
        info = _code_info(fn)
        self.parts[label] = info.digest
        if fn.__defaults__ or fn.__kwdefaults__:
            self.value(f"defaults of {label}", (fn.__defaults__, fn.__kwdefaults__), short=False)
        if fn.__closure__:
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=False):
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell: the variable is not bound yet
                    continue
                self.reference(var, contents, closure=True)
        g = fn.__globals__
        builtins = g.get("__builtins__")
        for name in info.globals_read:
            if name in g:
                self.reference(name, g[name])
            elif builtins is not None and not (
                name in builtins if isinstance(builtins, dict) else hasattr(builtins, name)
            ):
                # Not defined yet: calling the task would raise NameError; the
                # planner cannot know its value, so say so rather than guess.
                self.volatile.append(f"global `{name}` is not defined")

    def reference(self, name: str, obj: Any, closure: bool = False) -> None:
        kind = "closure variable" if closure else "global"
        target = getattr(obj, "fn", None) if type(obj).__module__ == "nbflow.core.task" else None
        if target is not None:
            obj = target
        if isinstance(obj, types.ModuleType):
            if _is_library_module(obj.__name__):
                self.parts[f"library `{obj.__name__}`"] = hash_bytes(_package_version(obj.__name__))
            else:
                self.parts[f"module `{obj.__name__}`"] = _user_module_digest(obj)
            return
        if isinstance(obj, types.FunctionType):
            if _is_library_module(obj.__module__ or ""):
                self.parts[f"library `{obj.__module__}.{obj.__qualname__}`"] = hash_bytes(
                    _package_version(obj.__module__ or "")
                )
            else:
                self.function(obj, f"helper `{name}`")
            return
        if isinstance(obj, types.BuiltinFunctionType | types.MethodType) or (
            callable(obj) and isinstance(obj, type) and _is_library_module(obj.__module__)
        ):
            module = getattr(obj, "__module__", None) or "builtins"
            if isinstance(obj, types.MethodType) and not _is_library_module(
                getattr(obj.__func__, "__module__", "") or ""
            ):
                self.function(obj.__func__, f"helper `{name}`")  # type: ignore[arg-type]
                return
            self.parts[f"library `{module}.{getattr(obj, '__qualname__', name)}`"] = hash_bytes(
                _package_version(module)
            )
            return
        if isinstance(obj, type):
            self.klass(obj, name)
            return
        label = f"{kind} `{name}`"
        self.value(label, obj)

    def klass(self, cls: type, name: str) -> None:
        if id(cls) in self._seen:
            return
        self._seen.add(id(cls))
        label = f"class `{name}`"
        out = [cls.__qualname__, *(b.__qualname__ for b in cls.__bases__)]
        for attr, member in sorted(vars(cls).items()):
            if attr in (
                "__module__",
                "__dict__",
                "__weakref__",
                "__doc__",
                "__qualname__",
                "__firstlineno__",
                "__static_attributes__",
            ):
                continue
            func = member
            if isinstance(member, staticmethod | classmethod):
                func = member.__func__
            elif isinstance(member, property):
                func = member.fget
            if isinstance(func, types.FunctionType):
                sub = _Walker()
                sub._seen = self._seen
                sub.function(func, f"method `{name}.{attr}`")
                self.parts.update(sub.parts)
                self.shorts.update(sub.shorts)
                self.volatile.extend(sub.volatile)
                out.append(f"{attr}:{sub.parts.get(f'method `{name}.{attr}`', '')}")
            else:
                try:
                    out.append(f"{attr}={digest_value(member)}")
                except Unfingerprintable as exc:
                    self.volatile.append(
                        f"attribute `{name}.{attr}` cannot be fingerprinted ({exc})"
                    )
        for base in cls.__bases__:
            if base is not object and not _is_library_module(base.__module__):
                self.klass(base, base.__name__)
        self.parts[label] = hash_bytes(*out)

    def value(self, label: str, obj: Any, short: bool = True) -> None:
        try:
            self.parts[label] = digest_value(obj)
        except Unfingerprintable as exc:
            self.volatile.append(f"{label} cannot be fingerprinted ({exc.type_name})")
            return
        if short:
            self.shorts[label] = format_value_short(obj, 30)


def fingerprint_function(fn: Any, label: str | None = None) -> FunctionPrint:
    """Fingerprint a callable and everything user-defined it references (see module docstring)."""
    walker = _Walker()
    fn = inspect.unwrap(fn)
    label = label or f"function `{getattr(fn, '__name__', 'task')}`"
    if isinstance(fn, types.FunctionType):
        walker.function(fn, label)
    elif isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
        walker.function(fn.__func__, label)
        walker.value(f"bound object of {label}", fn.__self__)
    elif isinstance(fn, functools.partial):
        walker.reference("partial function", fn.func)
        walker.value(f"partial arguments of {label}", (fn.args, fn.keywords))
    elif callable(fn) and isinstance(vars(type(fn)).get("__call__"), types.FunctionType):
        walker.klass(type(fn), type(fn).__name__)
        walker.value(f"callable object {label}", fn)
    else:
        walker.reference(label, fn)
    combined = hash_bytes(*(f"{k}={v}" for k, v in sorted(walker.parts.items())))
    return FunctionPrint(combined, walker.parts, walker.shorts, walker.volatile)


def fingerprint_callable(fn: Any) -> Digest:
    """Just the combined digest (used when a function is a parameter value)."""
    return fingerprint_function(fn).digest

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
4. A global the code *updates* (`log.append(x)`, `memo[k] = v`,
   `global n; n += 1`; see `updated_globals`) is its state, not its input:
   it is listed in `FunctionPrint.state` and left out of the digest, so a
   task's own runs never make it stale.

The result keeps one digest per part ("function `clean`", "helper
`normalize`", "global `THRESHOLD`"), so the planner can name what changed.

What is memoized, and why it cannot go stale: a parse (`CodeInfo`) is kept
per code object in the process and, through `CodeMemo` (the store's, see
codememo.py), across processes under the code's `code_identity`; it is
shared only when the source it came from compiles to that very code.
Defaults, closure cells, globals and helpers are looked at on every run:
each global value is digested once per run (the planner's `values` table), as
it was when the run began. A whole `FunctionPrint` is reused from an earlier
run in this process (`PrintMemo`) only after its witness holds: every
function it visited still has the same code, defaults and closure cells, and
every name it resolved still resolves to the same function, module or class,
or to a value with the same digest.
"""

from __future__ import annotations
import __future__

import ast
import copy
import dis
import functools
import importlib.metadata
import inspect
import linecache
import marshal
import os
import sys
import sysconfig
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from blake3 import blake3

from nbflow.core.cache.hashing import (
    Unfingerprintable,
    digest_value,
    hash_bytes,
    register_callable_hasher,
)
from nbflow.core.errors import format_value_short
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
    state: list[str] = field(default_factory=list)
    """Globals this code updates (`log.append(...)`, `memo[k] = v`, `global n; n += 1`):
    the code's own state, left out of the fingerprint (see `updated_globals`)."""


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """What one function's own code contributes: its digest and the globals it reads and updates."""

    digest: Digest
    globals_read: tuple[str, ...]
    updates: tuple[str, ...] = ()


_CODE_MEMO: dict[types.CodeType, CodeInfo] = {}
"""Parses shared by equal code objects (code objects compare by what they run)."""
_PARSED_FOR: dict[int, tuple[types.CodeType, CodeInfo]] = {}
"""Parses that hold for one code object only (unverified source, a decorated function)."""
_SKIP_FIELDS = frozenset({"ctx", "type_comment", "kind"})


class CodeMemo(Protocol):
    """A memo of `CodeInfo` by code identity (see `code_identity`), e.g. a persistent one."""

    def get(self, identity: str) -> CodeInfo | None: ...
    def put(self, identity: str, info: CodeInfo) -> None: ...


# --- the function's own code ------------------------------------------------


def _normalized(node: Any, out: list[str]) -> None:
    # Tokens go to one list, hashed once at the end (one incremental hash per
    # fingerprint, not one length-prefixed chunk per token).
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
        out.append(f"{type(node).__name__}:{_repr(node)}")


def _repr(value: Any) -> str:
    # A literal int past Python's 4,300-digit str limit (a long hex literal) has no repr().
    if type(value) is int and value.bit_length() > 10_000:
        return hex(value)
    return repr(value)


def _digest_tokens(out: list[str]) -> Digest:
    # Tokens never contain NUL (type names, field names, reprs escape it), so
    # joining on it keeps every boundary.
    return Digest(blake3("\x00".join(out).encode("utf-8", "surrogatepass")).hexdigest(length=20))


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
_GLOBAL_STORES = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})
_METHOD_LOADS = frozenset({"LOAD_METHOD", "LOAD_ATTR"})

MUTATING_METHODS = frozenset(
    {
        "append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse",
        "add", "discard", "update", "difference_update", "intersection_update",
        "symmetric_difference_update", "setdefault", "popitem",
        "appendleft", "extendleft", "popleft", "rotate",
        "put", "put_nowait", "__setitem__", "__delitem__", "__iadd__",
    }
)  # fmt: skip
"""Methods that change the object they are called on (list, set, dict, deque, queue)."""


def global_names(code: types.CodeType) -> set[str]:
    """Names the code (and code nested in it) loads as globals — attribute names excluded."""
    return set(_scan(code).loads)


@dataclass(frozen=True, slots=True)
class _Scan:
    loads: frozenset[str]
    """Names loaded as globals (LOAD_GLOBAL, LOAD_NAME), nested code included."""
    stores: frozenset[str]
    """Names rebound or deleted as globals (STORE_GLOBAL, DELETE_GLOBAL)."""
    may_update: bool
    """Whether anything could update a global in place: a subscript or attribute
    store, or a name in `MUTATING_METHODS` (else the syntax tree need not be searched)."""


_OP = dis.opmap
_EXTENDED_ARG = dis.EXTENDED_ARG
_LOAD_GLOBAL, _LOAD_NAME = _OP["LOAD_GLOBAL"], _OP["LOAD_NAME"]
_STORES = {_OP["STORE_GLOBAL"], _OP["DELETE_GLOBAL"]}
_IN_PLACE_STORES = {
    _OP[name] for name in ("STORE_SUBSCR", "DELETE_SUBSCR", "STORE_ATTR", "DELETE_ATTR")
}


def _scan(code: types.CodeType) -> _Scan:
    """One pass over the raw bytecode (`dis` builds an object per instruction: 20x slower)."""
    loads: set[str] = set()
    stores: set[str] = set()
    may_update = not MUTATING_METHODS.isdisjoint(code.co_names)
    names = code.co_names
    raw = code.co_code
    ext = 0
    for i in range(0, len(raw), 2):
        op = raw[i]
        arg = raw[i + 1] | ext
        if op == _EXTENDED_ARG:
            ext = arg << 8
            continue
        ext = 0
        if op == _LOAD_GLOBAL:
            loads.add(names[arg >> 1])  # 3.11+: the low bit says "push NULL too"
        elif op == _LOAD_NAME:
            loads.add(names[arg])
        elif op in _STORES:
            stores.add(names[arg])
        elif op in _IN_PLACE_STORES:
            may_update = True
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner = _scan(const)
            loads |= inner.loads
            stores |= inner.stores
            may_update = may_update or inner.may_update
    return _Scan(frozenset(loads), frozenset(stores), may_update or bool(stores))


def updated_globals(code: types.CodeType, tree: ast.AST | None = None) -> set[str]:
    """Globals the code updates in place or rebinds: its own state, not its input.

    Found in the syntax tree when there is one: `X.append(...)` (any method in
    `MUTATING_METHODS`), `X[k] = v`, `del X[k]`, `X[k] += 1`, `X.attr = v`, and
    names declared `global` (counters). Without source, from the bytecode:
    rebinding (`STORE_GLOBAL`) and a mutating method loaded right after the global.
    Only names the code loads or stores as globals count (a local `log` is not state).
    """
    found: set[str] = set()
    scan = _scan(code)
    if not scan.may_update:
        return found
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found.update(node.names)
            elif isinstance(node, ast.Call):
                func = node.func
                if (
                    isinstance(func, ast.Attribute)
                    and isinstance(func.value, ast.Name)
                    and func.attr in MUTATING_METHODS
                ):
                    found.add(func.value.id)
            elif (
                isinstance(node, ast.Subscript | ast.Attribute)
                and isinstance(node.ctx, ast.Store | ast.Del)
                and isinstance(node.value, ast.Name)
            ):
                found.add(node.value.id)
        return found & (scan.loads | scan.stores)
    instructions = list(dis.get_instructions(code))
    for i, ins in enumerate(instructions):
        if ins.opname in _GLOBAL_STORES or (
            ins.opname in _GLOBAL_LOADS
            and i + 1 < len(instructions)
            and instructions[i + 1].opname in _METHOD_LOADS
            and instructions[i + 1].argval in MUTATING_METHODS
        ):
            found.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= updated_globals(const)
    return found


def _bytecode_digest(code: types.CodeType) -> list[str]:
    """Fallback when no source exists: bytecode, names and constants (docstring excluded)."""
    out = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames), repr(code.co_freevars)]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out.extend(_bytecode_digest(const))
        else:
            out.append(f"{type(const).__name__}:{_repr(const)}")
    return out


_IDENTITY_VERSION = b"nbflow-code-identity-2"


def code_identity(fn: types.FunctionType) -> str:
    """A cheap identity of what `fn`'s own code runs, hashed in one pass.

    Bytecode, constants (the docstring left out), names, variables, flags,
    the exception table and nested code objects (with their names), plus the
    annotations — but not line numbers, the file, the function's own name, or
    anything a comment or reformatting changes. Two functions with the same
    identity run the same operations on the same names, so they may share one
    parsed fingerprint (`CodeInfo`); an edit that changes what runs changes the
    identity. Defaults, closure cells and globals are digested by value on every
    plan, apart from this.

    How: the code object with its positions stripped is serialized by `marshal`
    (C speed, one buffer) and hashed once. `marshal` format 2 writes no
    back-references, so equal code gives equal bytes whatever else holds its
    objects, and since Python 3.11 it writes a set constant (`x in {"a", "b"}`)
    in sorted order, not in the process's hash order. A constant marshal cannot
    write is hashed part by part instead (`_feed_code`).
    """
    return _identity(fn.__code__, fn.__doc__, getattr(fn, "__annotations__", None))


def _identity(code: types.CodeType, doc: str | None, annotations: dict[str, Any] | None) -> str:
    h = blake3(_IDENTITY_VERSION)
    try:
        h.update(marshal.dumps(_stripped(code, doc, top=True), 2))
    except ValueError:  # a constant marshal cannot write: hash it part by part
        h = blake3(_IDENTITY_VERSION + b"-parts")
        _feed_code(code, h, doc, top=True)
    if annotations:
        h.update(repr([(k, repr(v)) for k, v in annotations.items()]).encode())
    return h.hexdigest(length=20)


def _stripped(code: types.CodeType, doc: str | None, top: bool) -> types.CodeType:
    """`code` without what a comment or reformatting changes: positions, file, names."""
    consts = code.co_consts
    new: list[Any] | None = None
    for i, const in enumerate(consts):
        if isinstance(const, types.CodeType):
            const = _stripped(const, None, top=False)
        elif i == 0 and top and doc is not None and const == doc:
            const = None  # the docstring does not count
        else:
            continue
        if new is None:
            new = list(consts)
        new[i] = const
    return code.replace(
        co_filename="",
        co_name="" if top else code.co_name,
        co_qualname="",
        co_firstlineno=1,
        co_linetable=b"",
        co_consts=tuple(new) if new is not None else consts,
    )


def _feed_code(code: types.CodeType, h: Any, doc: str | None, top: bool) -> None:
    h.update(b"\x01code")
    if not top:
        h.update(code.co_name.encode())
    h.update(len(code.co_code).to_bytes(4, "little"))
    h.update(code.co_code)
    h.update(code.co_exceptiontable)
    h.update(
        repr(
            (
                code.co_names,
                code.co_varnames,
                code.co_freevars,
                code.co_cellvars,
                code.co_argcount,
                code.co_posonlyargcount,
                code.co_kwonlyargcount,
                code.co_flags,
            )
        ).encode()
    )
    consts = code.co_consts
    for i, const in enumerate(consts):
        if isinstance(const, types.CodeType):
            _feed_code(const, h, None, top=False)
            continue
        if i == 0 and top and doc is not None and const == doc:
            const = None  # the docstring does not count
        if isinstance(const, frozenset):  # `x in {"a", "b"}`: set order varies per process
            text = "frozenset:" + repr(sorted(map(repr, const)))
        else:
            text = f"{type(const).__name__}:{_repr(const)}"
        h.update(b"\x02")
        h.update(text.encode("utf-8", "surrogatepass"))


def _code_info(
    fn: types.FunctionType, memo: CodeMemo | None = None, wrapped: bool = False
) -> CodeInfo:
    code = fn.__code__
    own = _PARSED_FOR.get(id(code))
    if own is not None and own[0] is code:
        return own[1]
    # A function reached through `__wrapped__` has a decorator whose expression only
    # the source shows: it is parsed, never taken from a memo shared by equal code.
    info = None if wrapped else _CODE_MEMO.get(code)
    if info is not None:
        return info
    identity = None if wrapped or memo is None else code_identity(fn)
    if identity is not None and memo is not None:
        info = memo.get(identity)
        if info is not None:
            _CODE_MEMO[code] = info
            return info
    info, verified = _parse_code(fn)
    if verified and not wrapped:
        # Only a parse of the very source this code was compiled from may be shared
        # by equal code: a module edited on disk but not reloaded is parsed, not shared.
        _CODE_MEMO[code] = info
        if identity is not None and memo is not None:
            memo.put(identity, info)
    else:
        _PARSED_FOR[id(code)] = (code, info)
    return info


@dataclass(slots=True)
class _SourceIndex:
    """One source file (or notebook cell) parsed once: its function definitions by line."""

    lines: list[str]
    tree: ast.Module
    defs: dict[tuple[int, str], ast.AST | None]
    """(first line, name) -> the def node; None when two share the line."""
    compiled: dict[int, dict[tuple[int, str], types.CodeType | None]] = field(default_factory=dict)
    """Future flags -> the file compiled with them, as (first line, name) -> code."""

    def code_at(self, key: tuple[int, str], flags: int) -> types.CodeType | None:
        """The code compiled from this source for the def at `key` (one compile per file)."""
        table = self.compiled.get(flags)
        if table is None:
            table = self.compiled[flags] = {}
            try:
                module = compile(self.tree, "<index>", "exec", flags=flags, dont_inherit=True)
            except (SyntaxError, ValueError, RecursionError):
                return None
            _index_code(module, table)
        return table.get(key)


def _index_code(code: types.CodeType, out: dict[tuple[int, str], types.CodeType | None]) -> None:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            key = (const.co_firstlineno, const.co_name)
            out[key] = None if key in out else const
            _index_code(const, out)


_SOURCES: dict[str, _SourceIndex] = {}
_FUTURE_FLAGS = functools.reduce(
    lambda acc, name: acc | getattr(__future__, name).compiler_flag, __future__.all_feature_names, 0
)


_MISSES: dict[str, int] = {}
_INDEX_AFTER = 8
"""Parse a whole file once it had this many functions to parse; fewer go one by one
(an edit to one function of a 1,000-function module must not parse all of them)."""
_SMALL_FILE = 300
"""Lines up to which a file (a notebook cell) is parsed whole at once."""


def _source_index(fn: types.FunctionType) -> _SourceIndex | None:
    filename = fn.__code__.co_filename
    if filename.startswith("<") and filename not in linecache.cache:
        return None  # exec of a string that was never registered: no source
    linecache.checkcache(filename)
    lines = linecache.getlines(filename, fn.__globals__)
    if not lines:
        return None
    if filename not in _SOURCES and len(lines) > _SMALL_FILE:
        _MISSES[filename] = misses = _MISSES.get(filename, 0) + 1
        if misses <= _INDEX_AFTER:
            return None
    index = _SOURCES.get(filename)
    if index is not None and index.lines is lines:
        return index
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return None
    defs: dict[tuple[int, str], ast.AST | None] = {}
    _index_defs(tree.body, defs)
    index = _SOURCES[filename] = _SourceIndex(lines, tree, defs)
    return index


def _index_defs(body: list[ast.stmt], defs: dict[tuple[int, str], ast.AST | None]) -> None:
    # Statements only (defs in defs, classes, if/try/with blocks): a walk into every
    # expression costs more than the parse. Lambdas go through inspect instead.
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            key = (min([node.lineno, *(d.lineno for d in node.decorator_list)]), node.name)
            defs[key] = None if key in defs else node
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(node, name, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                _index_defs(inner, defs)
        for handler in getattr(node, "handlers", ()) or ():
            _index_defs(handler.body, defs)
        for case in getattr(node, "cases", ()) or ():
            _index_defs(case.body, defs)


def _compiles_to(node: ast.AST, fn: types.FunctionType) -> bool:
    """Whether the def `node`, compiled alone, gives `fn`'s very code (line numbers aside).

    A def nested in a function (closure cells), a method using `super()`, or
    a source edited on disk since `fn` was compiled all say no: then the
    parse is used but not memoized by identity.
    """
    code = fn.__code__
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    body: list[ast.stmt] = [node]
    if code.co_freevars:
        # A closure: compile it inside a function that binds its free variables.
        outer = ast.parse(
            "def _outer():\n" + "".join(f"    {v} = None\n" for v in code.co_freevars)
        ).body[0]
        assert isinstance(outer, ast.FunctionDef)
        outer.body.append(node)
        body = [outer]
    try:
        module = compile(
            ast.Module(body, type_ignores=[]),
            code.co_filename,
            "exec",
            flags=code.co_flags & _FUTURE_FLAGS,
            dont_inherit=True,
        )
    except (SyntaxError, ValueError, RecursionError):
        return False
    consts = list(module.co_consts)
    if code.co_freevars:
        consts = [c for o in consts if isinstance(o, types.CodeType) for c in o.co_consts]
    for const in consts:
        if isinstance(const, types.CodeType) and const.co_name == code.co_name:
            return _identity(const, fn.__doc__, None) == _identity(code, fn.__doc__, None)
    return False


def _find_node(fn: types.FunctionType) -> tuple[ast.AST | None, bool]:
    """`fn`'s def in its source, and whether that source compiles to `fn`'s very code."""
    node, same = _find_node_once(fn)
    filename = fn.__code__.co_filename
    if node is not None and not same and not filename.startswith("<"):
        # linecache may hold an older read of the file: an edit that kept its size and
        # mtime (`cp -p`), then a reload. Read it again before settling for a mismatch.
        linecache.updatecache(filename, fn.__globals__)
        _SOURCES.pop(filename, None)
        node, same = _find_node_once(fn)
    return node, same


def _find_node_once(fn: types.FunctionType) -> tuple[ast.AST | None, bool]:
    code = fn.__code__
    index = _source_index(fn)
    key = (code.co_firstlineno, code.co_name)
    node = index.defs.get(key) if index else None
    if index is not None and node is not None:
        compiled = index.code_at(key, code.co_flags & _FUTURE_FLAGS)
        if compiled is not None:
            same = _identity(compiled, fn.__doc__, None) == _identity(code, fn.__doc__, None)
            return node, same
        return node, _compiles_to(node, fn)
    try:  # no file index (or an ambiguous line): inspect's own search
        source = textwrap.dedent(inspect.getsource(fn))
        node = _find_def(ast.parse(source), fn)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None, False
    return node, node is not None and _compiles_to(node, fn)


def _parse_code(fn: types.FunctionType) -> tuple[CodeInfo, bool]:
    """The normalized-syntax-tree digest of `fn` (its bytecode digest without source), and
    whether it may be memoized by code identity (see `_find_node`; always for bytecode)."""
    code = fn.__code__
    referenced = global_names(code)
    node, verified = _find_node(fn)
    if node is not None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node = copy.copy(node)  # the parsed file is shared: change a copy only
            node.decorator_list = [
                d for d in node.decorator_list if not _is_nbflow_decorator(d, fn.__globals__)
            ]
            node.name = "_"  # the function's name is the task's business, not its code's
            verified = verified and _annotations_match(node, fn)
        out: list[str] = []
        _normalized(node, out)
        updates = updated_globals(code, node)
    else:
        doc = fn.__doc__
        consts = list(code.co_consts)
        if doc is not None and consts and consts[0] == doc:
            code = code.replace(co_consts=(None, *consts[1:]))
        out = _bytecode_digest(code)
        updates = updated_globals(code)
        verified = True
    return CodeInfo(
        _digest_tokens(out), tuple(sorted(referenced)), tuple(sorted(updates))
    ), verified


def _annotations_match(
    node: ast.FunctionDef | ast.AsyncFunctionDef, fn: types.FunctionType
) -> bool:
    """Whether the def's annotations in the source are the ones `fn` carries.

    Annotations are evaluated outside the function's code, so its compiled
    code cannot vouch for them; each one is compared with the live value by
    name instead. A mismatch (the source edited since it was run) only keeps
    the parse out of the memo.
    """
    a = node.args
    args = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    pairs = [(x.arg, x.annotation) for x in args if x.annotation is not None]
    for extra in (a.vararg, a.kwarg):
        if extra is not None and extra.annotation is not None:
            pairs.append((extra.arg, extra.annotation))
    if node.returns is not None:
        pairs.append(("return", node.returns))
    live = getattr(fn, "__annotations__", None) or {}
    if len(pairs) != len(live):
        return False
    for name, annotation in pairs:
        if name not in live:
            return False
        value = live[name]
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            text = annotation.value
        else:
            text = ast.unparse(annotation)
        if isinstance(value, str):
            if value != text:
                return False
            continue
        names = {repr(value), repr(value).replace("typing.", "")}
        names.update(
            n for n in (getattr(value, "__qualname__", None), getattr(value, "__name__", None)) if n
        )
        if text not in names and not any(text.endswith("." + n) for n in names):
            return False
    return True


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
    if top in sys.stdlib_module_names or top in ("builtins", "nbflow"):
        # nbflow itself counts by its version even when it runs from a source
        # checkout: `nf.Output` in a task must not make it stale when nbflow's
        # own modules are edited or moved, only when nbflow is upgraded.
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
            digest = _digest_tokens(out)
        except SyntaxError:
            digest = hash_bytes(source)
        _MODULE_MEMO[memo_key] = digest
    return digest


ValueDigests: TypeAlias = dict[int, tuple[Any, Digest | Unfingerprintable, str]]
"""Per-run digests of global values by `id()` (the object is kept so the id stays its own)."""


class _Walker:
    """Collects the parts of one fingerprint, visiting each referenced object once.

    Helpers are visited from a work list, not by recursion, so a chain of
    helpers of any depth is followed (a recursive walk stopped near 350).
    """

    def __init__(self, memo: CodeMemo | None = None, values: ValueDigests | None = None) -> None:
        self.parts: dict[str, Digest] = {}
        self.shorts: dict[str, str] = {}
        self.volatile: list[str] = []
        self.state: list[str] = []
        self._seen: set[int] = set()
        self._pending: list[tuple[types.FunctionType, str]] = []
        self._memo = memo
        self._values: ValueDigests = values if values is not None else {}
        self.witness: list[tuple[Any, ...]] | None = []
        """What must still hold for this fingerprint to be reused (see `PrintMemo`);
        None once the walk met something it cannot check cheaply (a class)."""

    def drain(self) -> None:
        """Visit the helpers found so far, and theirs, until none is left."""
        while self._pending:
            fn, label = self._pending.pop()
            self.function(fn, label)

    def function(self, fn: types.FunctionType, label: str, wrapped: bool = False) -> None:
        if id(fn) in self._seen:
            return
        self._seen.add(id(fn))
        info = _code_info(fn, self._memo, wrapped)
        self.parts[label] = info.digest
        witness = self.witness
        if witness is not None:
            witness.append(("f", fn, fn.__code__, fn.__defaults__, fn.__kwdefaults__))
        if fn.__defaults__ or fn.__kwdefaults__:
            self.value(f"defaults of {label}", (fn.__defaults__, fn.__kwdefaults__), short=False)
            if witness is not None:
                witness.append(("d", fn, self.parts.get(f"defaults of {label}")))
        if fn.__closure__:
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=False):
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell: the variable is not bound yet
                    if witness is not None:
                        witness.append(("c", cell, _EMPTY))
                    continue
                expect = self.reference(var, contents, closure=True)
                if self.witness is not None:
                    self.witness.append(("c", cell, expect))
        g = fn.__globals__
        builtins = g.get("__builtins__")
        updates = info.updates
        for name in info.globals_read:
            if name in g:
                expect = self.reference(name, g[name], updated=name in updates)
                if self.witness is not None:
                    self.witness.append(("g", g, name, expect))
            elif builtins is not None and not (
                name in builtins if isinstance(builtins, dict) else hasattr(builtins, name)
            ):
                # Not defined yet: calling the task would raise NameError; the
                # planner cannot know its value, so say so rather than guess.
                self.volatile.append(f"global `{name}` is not defined")
            elif self.witness is not None:  # a builtin, until a global of that name is made
                self.witness.append(("g", g, name, _EMPTY))

    def reference(
        self, name: str, obj: Any, closure: bool = False, updated: bool = False
    ) -> tuple[Any, ...]:
        """Add what `obj`, reached by `name`, contributes; return what a reuse must check
        of whatever that name holds then (see `_holds`)."""
        kind = "closure variable" if closure else "global"
        obj = _resolved(obj)
        if isinstance(obj, types.ModuleType):
            if _is_library_module(obj.__name__):
                self.parts[f"library `{obj.__name__}`"] = hash_bytes(_package_version(obj.__name__))
                return ("is", obj)
            digest = _user_module_digest(obj)
            self.parts[f"module `{obj.__name__}`"] = digest
            return ("module", obj, digest)
        if isinstance(obj, types.FunctionType):
            if _is_library_module(obj.__module__ or ""):
                self.parts[f"library `{obj.__module__}.{obj.__qualname__}`"] = hash_bytes(
                    _package_version(obj.__module__ or "")
                )
            elif id(obj) not in self._seen:
                self._pending.append((obj, f"helper `{name}`"))
            return ("is", obj)
        if isinstance(obj, types.BuiltinFunctionType | types.MethodType) or (
            callable(obj) and isinstance(obj, type) and _is_library_module(obj.__module__)
        ):
            module = getattr(obj, "__module__", None) or "builtins"
            if isinstance(obj, types.MethodType) and not _is_library_module(
                getattr(obj.__func__, "__module__", "") or ""
            ):
                self._pending.append((obj.__func__, f"helper `{name}`"))  # type: ignore[arg-type]
                return ("is", obj)
            self.parts[f"library `{module}.{getattr(obj, '__qualname__', name)}`"] = hash_bytes(
                _package_version(module)
            )
            return ("is", obj)
        if isinstance(obj, type):
            self.klass(obj, name)
            self.witness = None  # a class's members can change in place: walked every run
            return ("is", obj)
        label = f"{kind} `{name}`"
        if updated:
            # The code's own state (a log it appends to, a memo it fills): what its
            # runs do to it must not make it stale, so it is not part of the key.
            if label not in self.state:
                self.state.append(label)
            return ("state",)
        self.value(label, obj)
        return ("value", self.parts.get(label))

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
                sub = _Walker(self._memo, self._values)
                sub._seen = self._seen
                sub._pending = self._pending  # the method's helpers are visited by this walk
                sub.function(func, f"method `{name}.{attr}`")
                self.parts.update(sub.parts)
                self.shorts.update(sub.shorts)
                self.volatile.extend(sub.volatile)
                self.state.extend(s for s in sub.state if s not in self.state)
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
        # A global read by many functions is digested once per run (the planner
        # passes one `values` table for the whole run).
        memo = self._values.get(id(obj))
        if memo is None or memo[0] is not obj:
            try:
                digest: Digest | Unfingerprintable = digest_value(obj)
            except Unfingerprintable as exc:
                digest = exc
            memo = (obj, digest, format_value_short(obj, 30) if short else "")
            self._values[id(obj)] = memo
        digest = memo[1]
        if isinstance(digest, Unfingerprintable):
            self.volatile.append(f"{label} cannot be fingerprinted ({digest.brief()})")
            return
        self.parts[label] = digest
        if short:
            self.shorts[label] = memo[2] or format_value_short(obj, 30)


def fingerprint_function(
    fn: Any,
    label: str | None = None,
    *,
    memo: CodeMemo | None = None,
    values: ValueDigests | None = None,
) -> FunctionPrint:
    """Fingerprint a callable and everything user-defined it references (see module docstring).

    `memo` maps code identities to parsed fingerprints across processes (the
    planner passes the store's); `values` shares global-value digests between
    the fingerprints of one run.
    """
    return _combine(_walk(fn, label, memo, values))


def _walk(
    fn: Any, label: str | None, memo: CodeMemo | None, values: ValueDigests | None
) -> _Walker:
    """Walk `fn` and everything it references; the walker holds the parts and the witness."""
    walker = _Walker(memo, values)
    unwrapped = inspect.unwrap(fn) if hasattr(fn, "__wrapped__") else fn
    wrapped, fn = unwrapped is not fn, unwrapped
    label = label or f"function `{getattr(fn, '__name__', 'task')}`"
    if isinstance(fn, types.FunctionType):
        walker.function(fn, label, wrapped)
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
    walker.drain()
    return walker


def _combine(walker: _Walker) -> FunctionPrint:
    material = "\x00".join(f"{k}={v}" for k, v in sorted(walker.parts.items()))
    combined = Digest(blake3(b"nbflow-print-1\x00" + material.encode()).hexdigest(length=20))
    return FunctionPrint(combined, walker.parts, walker.shorts, walker.volatile, walker.state)


_EMPTY = ("empty",)
"""The witness of a name that holds nothing: an empty closure cell, a global left to builtins."""


_WALKED = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
"""What a walk treats as code, not as a value."""


def _resolved(obj: Any) -> Any:
    """A task object stands for its function."""
    if type(obj).__module__ == "nbflow.core.dag.task":
        target = getattr(obj, "fn", None)
        if target is not None:
            return target
    return obj


def _holds(obj: Any, expect: tuple[Any, ...], values: ValueDigests) -> bool:
    """Whether `obj`, what a name holds now, is still what `expect` recorded of it."""
    kind = expect[0]
    obj = _resolved(obj)
    if kind == "is":
        return obj is expect[1]
    if kind == "module":
        return obj is expect[1] and _user_module_digest(obj) == expect[2]
    if isinstance(obj, _WALKED):
        return False  # a value then, something to walk now
    if kind == "state":
        return True
    if expect[1] is None:
        return False
    memo = values.get(id(obj))
    if memo is None or memo[0] is not obj:
        try:
            digest: Digest | Unfingerprintable = digest_value(obj)
        except Unfingerprintable as exc:
            digest = exc
        memo = (obj, digest, format_value_short(obj, 30))
        values[id(obj)] = memo
    return memo[1] == expect[1]


def _witness_holds(witness: tuple[tuple[Any, ...], ...], values: ValueDigests) -> bool:
    for entry in witness:
        tag = entry[0]
        if tag == "g":
            g, name, expect = entry[1], entry[2], entry[3]
            if name in g:
                if expect is _EMPTY or not _holds(g[name], expect, values):
                    return False
            elif expect is not _EMPTY:
                return False
        elif tag == "f":
            fn = entry[1]
            if (
                fn.__code__ is not entry[2]
                or fn.__defaults__ is not entry[3]
                or fn.__kwdefaults__ is not entry[4]
            ):
                return False
        elif tag == "c":
            try:
                contents = entry[1].cell_contents
            except ValueError:
                if entry[2] is not _EMPTY:
                    return False
                continue
            if entry[2] is _EMPTY or not _holds(contents, entry[2], values):
                return False
        else:  # "d": defaults, which may hold mutable values
            fn = entry[1]
            try:
                if digest_value((fn.__defaults__, fn.__kwdefaults__)) != entry[2]:
                    return False
            except Unfingerprintable:
                return False
    return True


class PrintMemo:
    """Fingerprints of earlier runs in this process, each reused only while its witness holds.

    The witness is what the walk looked at: the code, defaults and closure cells
    of every function it visited, and what each name it resolved held (the same
    function, module or class, or a value with the same digest). Checking it
    costs a few attribute and dictionary reads per function, where a walk costs
    a code-memo look-up, the parts and a hash. A fingerprint with a volatile
    part, or one that met a class, is never kept.
    """

    LIMIT = 20_000
    """Entries kept at most (then the memo starts afresh). An entry is keyed by the label and
    the function's module and qualified name, not by the object: a function redefined in a
    kernel replaces its entry instead of adding one, so a long session does not grow it."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], tuple[Any, FunctionPrint, tuple[Any, ...]]]
        self._entries = {}

    def fingerprint(
        self,
        fn: Any,
        label: str,
        *,
        memo: CodeMemo | None = None,
        values: ValueDigests | None = None,
    ) -> FunctionPrint:
        """`fingerprint_function(fn, label, ...)`, from this memo when its witness holds."""
        values = values if values is not None else {}
        key = (label, getattr(fn, "__module__", None) or "", getattr(fn, "__qualname__", ""))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is fn and _witness_holds(entry[2], values):
            return entry[1]
        walker = _walk(fn, label, memo, values)
        fp = _combine(walker)
        # Only a plain function is kept: the witness does not cover a bound object, a
        # partial's arguments or a wrapper.
        plain = isinstance(fn, types.FunctionType) and not hasattr(fn, "__wrapped__")
        if plain and walker.witness is not None and not walker.volatile:
            if len(self._entries) >= self.LIMIT:
                self._entries.clear()
            self._entries[key] = (fn, fp, tuple(walker.witness))
        else:
            self._entries.pop(key, None)
        return fp

    def clear(self) -> None:
        self._entries.clear()


PRINTS = PrintMemo()
"""The process's memo of whole fingerprints (the planner's)."""


def fingerprint_callable(fn: Any) -> Digest:
    """Just the combined digest (used when a function is a parameter value)."""
    return fingerprint_function(fn).digest


register_callable_hasher(fingerprint_callable)

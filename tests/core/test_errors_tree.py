"""The tree drawn in nbflow/core/errors.py is the real one: every NbflowError subclass of every
layer is drawn under its real parent, and nothing drawn is missing."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import nbflow
from nbflow.core import errors


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def _drawn_parents() -> dict[str, str]:
    """name -> parent name, read from the box drawing in the module docstring."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^([\s│]*)(?:[├└]── )?([A-Z]\w+)\s", line + " ")
        if not m or not m.group(2).endswith(
            (
                "Error",
                "Failed",
                "Timeout",
                "Died",
                "Result",
                "Task",
                "Missing",
                "Locked",
                "NotFound",
            )
        ):
            continue
        depth = m.start(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[m.group(2)] = stack[-1][1]
        stack.append((depth, m.group(2)))
    return parents


def test_every_error_class_is_drawn_under_its_parent() -> None:
    for info in pkgutil.walk_packages(nbflow.__path__, "nbflow."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    drawn = _drawn_parents()
    real = {
        cls.__name__: cls.__mro__[1].__name__
        for cls in _all_subclasses(errors.NbflowError)
        if not cls.__name__.startswith("_") and cls.__module__.startswith("nbflow.")
    }
    missing = sorted(set(real) - set(drawn))
    assert not missing, f"not drawn in nbflow/core/errors.py: {missing}"
    wrong = {n: (drawn[n], p) for n, p in real.items() if drawn[n] != p}
    assert not wrong, f"drawn under the wrong parent (drawn, real): {wrong}"
    assert not set(drawn) - set(real), f"drawn but not defined: {sorted(set(drawn) - set(real))}"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    assert not [n for n in real if n not in docs], "docs/errors.md's tree misses some"

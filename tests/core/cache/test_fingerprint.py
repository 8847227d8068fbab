"""Code fingerprints see what a function really runs, and nothing else."""

from __future__ import annotations

import pytest

from nbflow.core.cache.fingerprint import fingerprint_function

from ..cells import define

BASE = """
import math
LIMIT = 10

def helper(x):
    return x * 2

def task(x, scale=3):
    '''Docstring.'''
    return helper(x) + LIMIT * scale + math.floor(x)
"""

# (description, edited source, changes the fingerprint?)
CASES = [
    ("comment added", BASE.replace("return helper", "# a comment\n    return helper"), False),
    ("docstring edited", BASE.replace("Docstring.", "Other words."), False),
    ("formatting", BASE.replace("helper(x) + LIMIT * scale", "helper( x )+LIMIT*scale"), False),
    ("function renamed-only body same", BASE, False),
    ("body edited", BASE.replace("+ math.floor(x)", "- math.floor(x)"), True),
    ("helper edited", BASE.replace("return x * 2", "return x * 3"), True),
    ("global constant edited", BASE.replace("LIMIT = 10", "LIMIT = 11"), True),
    ("constant type changed", BASE.replace("LIMIT = 10", "LIMIT = 10.0"), True),
    ("default edited", BASE.replace("scale=3", "scale=4"), True),
]


@pytest.mark.parametrize(("what", "source", "changes"), CASES, ids=[c[0] for c in CASES])
def test_what_counts_in_a_fingerprint(what: str, source: str, changes: bool) -> None:
    before = fingerprint_function(define(BASE)["task"])
    after = fingerprint_function(define(source)["task"])
    assert (before.digest != after.digest) is changes


def test_changed_part_is_named() -> None:
    before = fingerprint_function(define(BASE)["task"])
    after = fingerprint_function(define(BASE.replace("return x * 2", "return x * 3"))["task"])
    changed = {k for k in before.parts if before.parts[k] != after.parts.get(k)}
    assert changed == {"helper `helper`"}
    assert "library `math`" in before.parts


def test_helpers_are_followed_recursively() -> None:
    src = """
def inner(x):
    return x + 1
def middle(x):
    return inner(x)
def task(x):
    return middle(x)
"""
    a = fingerprint_function(define(src)["task"])
    b = fingerprint_function(define(src.replace("x + 1", "x + 2"))["task"])
    assert a.digest != b.digest
    assert {"helper `middle`", "helper `inner`"} <= set(a.parts)


def test_user_classes_count_by_their_methods() -> None:
    src = """
class Scaler:
    factor = 2
    def apply(self, x):
        return x * self.factor
def task(x):
    return Scaler().apply(x)
"""
    a = fingerprint_function(define(src)["task"])
    assert (
        a.digest != fingerprint_function(define(src.replace("x * self", "x + self"))["task"]).digest
    )
    assert (
        a.digest
        != fingerprint_function(define(src.replace("factor = 2", "factor = 3"))["task"]).digest
    )


def test_closures_count_by_value() -> None:
    def make(n: int):
        def task(x):
            return x + n

        return task

    assert fingerprint_function(make(1)).digest != fingerprint_function(make(2)).digest
    assert fingerprint_function(make(1)).digest == fingerprint_function(make(1)).digest


def test_foreign_decorators_count_but_nbflow_options_do_not() -> None:
    src = """
import functools
import nbflow as nf
p = nf.Pipeline("fp")
def twice(fn):
    @functools.wraps(fn)
    def wrapper(x):
        return fn(fn(x))
    return wrapper
@p.task(retries=1)
def t(x):
    return x + 1
"""
    a = fingerprint_function(define(src)["t"].fn)
    b = fingerprint_function(define(src.replace("retries=1", "retries=5"))["t"].fn)
    assert a.digest == b.digest
    c = fingerprint_function(
        define(src.replace("@p.task(retries=1)", "@p.task(retries=1)\n@twice"))["t"].fn
    )
    assert c.digest != a.digest


def test_functions_from_exec_without_source_work() -> None:
    a = fingerprint_function(
        define("def f(x):\n    '''doc'''\n    return x + 1\n", register=False)["f"]
    )
    b = fingerprint_function(define("def f(x):\n    return x + 1  # same\n", register=False)["f"])
    c = fingerprint_function(define("def f(x):\n    return x + 2\n", register=False)["f"])
    assert a.digest == b.digest != c.digest


def test_library_functions_count_by_package_version() -> None:
    ns = define(
        "from json import dumps\nimport numpy as np\ndef t(x):\n    return dumps(np.sum(x))\n"
    )
    parts = fingerprint_function(ns["t"]).parts
    assert parts["library `numpy`"]
    assert any(k.startswith("library `json") for k in parts)


def test_unfingerprintable_global_is_reported_not_guessed() -> None:
    ns = define(
        "import threading\nLOCK = threading.Lock()\ndef t():\n    with LOCK:\n        return 1\n"
    )
    fp = fingerprint_function(ns["t"])
    assert fp.volatile and "global `LOCK` cannot be fingerprinted" in fp.volatile[0]


def test_a_helper_chain_600_deep_is_followed_to_its_end() -> None:
    # The walk over helpers is a work list: a recursive one hit RecursionError near 350.
    source = "def h0(x):\n    return x + 1\n" + "".join(
        f"def h{i}(x):\n    return h{i - 1}(x)\n" for i in range(1, 600)
    )
    source += "def task(x):\n    return h599(x)\n"
    before = fingerprint_function(define(source)["task"])
    after = fingerprint_function(define(source.replace("x + 1", "x + 2"))["task"])
    assert len(before.parts) == 601
    assert {k for k in before.parts if before.parts[k] != after.parts[k]} == {"helper `h0`"}


def test_an_int_literal_past_pythons_str_limit_is_fingerprinted() -> None:
    # repr() of a 20,000-bit constant raises ValueError; its hex stands in for it.
    a = fingerprint_function(define("def f():\n    return 0x" + "f" * 5000 + "\n")["f"])
    b = fingerprint_function(define("def f():\n    return 0x" + "e" * 5000 + "\n")["f"])
    assert a.digest != b.digest

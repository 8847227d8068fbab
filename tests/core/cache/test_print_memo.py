"""The process's memo of whole fingerprints (`PRINTS`) and of task keys never serves a stale
one: after a first run (the memo warm), each kind of edit a kernel can make in place
reruns exactly the tasks it touches, and an unchanged rerun executes nothing.

Everything here happens in one process, on code defined as notebook cells define it.
"""

from __future__ import annotations

from typing import Any

import pytest

from nbflow import Pipeline
from nbflow.core.cache import fingerprint

from ..cells import define

CELLS = """
FACTOR = 2
CONFIG = {"offset": 0}
log = []

def h2(x):
    return x + 1

def h1(x, mult=[1]):
    return h2(x) * mult[0]

def a():
    log.append("a")
    return [1, 2, 3]

def b(a, scale=[2]):
    return [h1(v) * scale[0] * FACTOR + CONFIG["offset"] + len(a) for v in a]

def c(b):
    return sum(b)
"""


def _pipe(ns: dict[str, Any]) -> Pipeline:
    pipe = Pipeline("memo")
    for name in ("a", "b", "c"):
        pipe.task(ns[name])
    return pipe


@pytest.fixture
def warm(home: Any) -> tuple[dict[str, Any], Pipeline]:
    """Cells defined, the pipeline run twice: the second run served by the memos."""
    ns = define(CELLS)
    pipe = _pipe(ns)
    assert pipe.run().executed == ["a", "b", "c"]
    assert pipe.run().executed == []
    return ns, pipe


def _rerun(ns: dict[str, Any]) -> list[str]:
    executed = _pipe(ns).run().executed
    assert _pipe(ns).run().executed == []  # and then fresh again
    return executed


def test_a_mutated_default_list_reruns_its_task(warm):
    ns, _ = warm
    ns["b"].__defaults__[0][0] = 3  # the same list object, new contents (a run parameter's)
    assert _rerun(ns) == ["b", "c"]


def test_a_mutated_default_of_a_helper_reruns_its_caller(warm):
    ns, _ = warm
    ns["h1"].__defaults__[0][0] = 2  # in the fingerprint only: `mult` is not a task's parameter
    assert _rerun(ns) == ["b", "c"]


def test_a_rebound_global_reruns_the_task_that_reads_it(warm):
    ns, _ = warm
    ns["FACTOR"] = 5
    assert _rerun(ns) == ["b", "c"]


def test_a_global_the_user_mutates_in_place_reruns_its_reader(warm):
    ns, _ = warm
    ns["CONFIG"]["offset"] = 10
    assert _rerun(ns) == ["b", "c"]


def test_module_state_a_task_updates_keeps_it_fresh(warm):
    ns, _ = warm
    assert ns["log"] == ["a"]
    ns["log"].append("more")  # the task's own state (it appends to it)
    assert _pipe(ns).run().executed == []


def test_a_helper_changed_two_levels_down_reruns_and_is_named(warm):
    ns, pipe = warm
    define("def h2(x):\n    return x + 2\n", ns)  # a new cell redefines the helper's helper
    assert "helper `h2`" in _pipe(ns).explain("b")
    assert _rerun(ns) == ["b", "c"]


def test_a_helpers_code_replaced_in_place_reruns(warm):
    ns, _ = warm
    other = define("def h2(x):\n    return x - 1\n")["h2"]
    ns["h2"].__code__ = other.__code__  # the same function object, new code
    assert _rerun(ns) == ["b", "c"]


def test_a_closure_cell_change_reruns(home):
    ns = define(
        """
def make(factor):
    def scaled(x):
        return x * factor
    return scaled

def a():
    return 2
"""
    )
    scaled = ns["make"](3)

    def build() -> Pipeline:
        pipe = Pipeline("closure")
        pipe.task(ns["a"])
        pipe.task(scaled, name="b", inputs={"x": "a"})
        return pipe

    assert build().run().executed == ["a", "b"]
    assert build().run().executed == []
    scaled.__closure__[0].cell_contents = 4
    result = build().run()
    assert result.executed == ["b"] and result["b"] == 8


def test_a_builtin_shadowed_by_a_new_global_reruns(warm):
    ns, _ = warm
    define("def len(x):\n    return 0\n", ns)
    assert _rerun(ns) == ["b", "c"]


def test_a_task_code_replaced_on_the_same_function_reruns(warm):
    ns, _ = warm
    ns["c"].__code__ = define("def c(b):\n    return max(b)\n")["c"].__code__
    assert _rerun(ns) == ["c"]


def test_a_cell_run_again_unchanged_keeps_everything_fresh(warm):
    ns, _ = warm
    define(CELLS.replace("log = []\n", ""), ns)  # every function a new object, same code
    assert _pipe(ns).run().executed == []


def test_a_changed_run_parameter_reruns_through_the_key_memo(home):
    ns = define("def a(n):\n    return n\n\ndef b(a):\n    return a + 1\n")
    pipe = Pipeline("params")
    pipe.task(ns["a"])
    pipe.task(ns["b"])
    assert pipe.run(params={"n": 1}).executed == ["a", "b"]
    assert pipe.run(params={"n": 1}).executed == []
    result = pipe.run(params={"n": 2})
    assert result.executed == ["a", "b"] and result["b"] == 3


def test_functions_redefined_many_times_do_not_grow_the_memo(home):
    pipe = Pipeline("grow")
    sizes = []
    for i in range(30):
        ns = define(f"def a():\n    return {i}\n")
        pipe.task(ns["a"])
        pipe.run()
        sizes.append(len(fingerprint.PRINTS._entries))
    assert sizes[-1] == sizes[0]

"""Module-level state that tasks update is their state, not their input (issue 13, item 1).

`log.append(...)`, `seen.add(...)`, `memo[k] = v` and `global n; n += 1` in a
task change a global on every run; that must not make the task (or its
downstream) stale. A global the *user* changes still invalidates exactly the
tasks that read it. Tested with `__main__` globals (notebook cells) and
module globals, with every executor, in one process and in fresh processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nbflow import Pipeline

from ...conftest import FIXTURES
from ..cells import define

CELLS = """
LIMIT = 10
log = []
seen = set()
memo = {}
runs = 0

def source():
    log.append("source")
    return 1

def middle(source):
    global runs
    runs += 1
    seen.add("middle")
    memo["middle"] = source
    return source + 1

def capped(middle):
    log.append("capped")
    return min(middle * 20, LIMIT)
"""

NOTE_MIDDLE = (
    "global `memo`, global `runs`, global `seen` are updated by this task; "
    "they are not part of its key"
)


def test_main_globals_a_task_updates_keep_it_fresh(pipe: Pipeline, executor: Any) -> None:
    ns = define(CELLS)
    for name in ("source", "middle", "capped"):
        pipe.task(ns[name])
    first = pipe.run(executor=executor, max_workers=2)
    assert first.executed == ["source", "middle", "capped"]
    again = pipe.run(executor=executor, max_workers=2)
    assert again.executed == [] and again["capped"] == 10
    # The user changes a global in a plain cell: exactly its reader reruns, saying why.
    ns["LIMIT"] = 5
    assert pipe.explain("capped") == (
        "stale: global `LIMIT` changed: 10 → 5 "
        "(global `log` is updated by this task; it is not part of its key)"
    )
    changed = pipe.run(executor=executor, max_workers=2)
    assert changed.executed == ["capped"] and changed["capped"] == 5


def test_module_globals_a_task_updates_keep_it_fresh(
    pipe: Pipeline, executor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fixtures.pipelines import module_state

    module_state.build(pipe)
    first = pipe.run(executor=executor, max_workers=2)
    assert first.executed == ["source", "middle", "capped"]
    again = pipe.run(executor=executor, max_workers=2)
    assert again.executed == []
    assert pipe.explain("middle") == (
        f"fresh: unchanged since it last ran; its result is cached ({NOTE_MIDDLE})"
    )
    monkeypatch.setattr(module_state, "LIMIT", 5)
    changed = pipe.run(executor=executor, max_workers=2)
    assert changed.executed == ["capped"]
    # (Worker processes import the module afresh, so only an in-process run sees the 5.)
    if executor in ("sequential", "threads"):
        assert changed["capped"] == 5


def test_state_is_not_part_of_the_key_in_fresh_processes(tmp_path: Path) -> None:
    script = FIXTURES / "pipelines" / "module_state.py"
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "NBFLOW_HOME": str(tmp_path / "home"), "PYTHONPATH": root}

    def run() -> list[str]:
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert run() == ["source", "middle", "capped"]
    assert run() == []


def test_a_reader_that_does_not_update_a_global_keeps_it_as_input(pipe: Pipeline) -> None:
    ns = define(
        """
        log = []

        def source():
            log.append("source")
            return 1

        def report(source):
            return len(log)
        """
    )
    pipe.task(ns["source"])
    pipe.task(ns["report"])
    assert pipe.run()["report"] == 1
    # `report` reads `log` and does not update it: an input, digested as the run began.
    assert pipe.explain("report") == "stale: global `log` changed: [] → ['source']"
    assert pipe.explain("source") == (
        "fresh: unchanged since it last ran; its result is cached "
        "(global `log` is updated by this task; it is not part of its key)"
    )


class Counted:
    """A global whose every digest is counted (digests of plain objects pickle them)."""

    reduces = 0

    def __reduce__(self) -> tuple[Any, ...]:
        Counted.reduces += 1
        return (Counted, ())


def test_a_global_is_digested_once_per_run_however_many_tasks_read_it(pipe: Pipeline) -> None:
    ns: dict[str, Any] = {"__name__": "__main__", "SETTINGS": Counted()}
    previous = "None"
    for i in range(20):
        define(f"def t{i}(x={previous}):\n    return (SETTINGS, x)[1]\n", ns)
        pipe.task(ns[f"t{i}"], inputs={"x": f"t{i - 1}"} if i else None)
        previous = "0"
    Counted.reduces = 0
    assert len(pipe.run().executed) == 20
    assert Counted.reduces == 1
    Counted.reduces = 0
    assert pipe.run().executed == []
    assert Counted.reduces == 1


def test_updates_are_found_without_source_too(pipe: Pipeline) -> None:
    ns = define(
        "log = []\ndef source():\n    log.append(1)\n    return len(log) > 0\n", register=False
    )
    pipe.task(ns["source"])
    assert pipe.run().executed == ["source"]
    assert pipe.run().executed == []

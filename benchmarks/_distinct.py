"""Pipelines of N *distinct* functions, as users write them (issue 21), for bench_fingerprints.py.

Each task has a function of its own (`def tN(x)` with a log call, chained; in the
"state" variant each appends its name to one module-level list instead),
defined either in a generated module file (a) or through `exec` in
`__main__`, the way a notebook cell defines it (b). The shared-function
variant (one `step` for every task, as bench_core.py builds it) is kept for
comparison. `child()` runs one workload in the current (fresh) process and
prints its figures as JSON.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import linecache
import pickle
import sys
import time
from pathlib import Path
from typing import Any

N = 1000
MIDDLE = N // 2


def function_source(i: int, edited: bool = False, state: bool = False) -> str:
    if i == 0:
        return "def t0():\n    return 0\n"
    step = 2 if edited and i == MIDDLE else 1
    # state: each task appends its name to one module-level list (issue 13), instead of logging
    call = f'names.append("t{i}")' if state else f'log.debug("t{i} got %s", x)'
    return f'def t{i}(x):\n    """Step {i} of the chain."""\n    {call}\n    return x + {step}\n'


def module_source(n: int, edited: bool = False, state: bool = False) -> str:
    head = "import logging\n\nlog = logging.getLogger('bench')\nnames = []\n\n\n"
    return head + "\n\n".join(function_source(i, edited, state) for i in range(n))


def _functions(mode: str, workdir: Path, n: int, edited: bool) -> list[Any]:
    if mode in ("module", "state"):
        sys.path.insert(0, str(workdir))
        module = importlib.import_module("distinct_steps")
        return [getattr(module, f"t{i}") for i in range(n)]
    if mode == "main":
        ns = sys.modules["__main__"].__dict__
        cells = [
            "import logging\nlog = logging.getLogger('bench')\n",
            *(function_source(i, edited) for i in range(n)),
        ]
        for k, source in enumerate(cells):
            # As IPython does: the cell's source is registered in linecache under its name.
            filename = f"<ipython-input-{k}-bench>"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            exec(compile(source, filename, "exec"), ns)
        return [ns[f"t{i}"] for i in range(n)]
    raise ValueError(mode)


def write_module(workdir: Path, n: int, edited: bool, state: bool = False) -> None:
    path = workdir / "distinct_steps.py"
    path.write_text(module_source(n, edited, state))
    # A fresh process compiles from source: drop stale bytecode of the other variant.
    for pyc in workdir.glob("__pycache__/distinct_steps*"):
        pyc.unlink()


def build(mode: str, cache_dir: str, workdir: Path, n: int, edited: bool) -> Any:
    import nbflow as nf

    pipe = nf.Pipeline(f"distinct-{mode}", cache_dir=cache_dir)
    if mode == "shared":

        def step(x):
            return x + 1

        def step_edited(x):
            return x + 2

        pipe.task(lambda: 0, name="t0")
        for i in range(1, n):
            fn = step_edited if edited and i == MIDDLE else step
            pipe.task(fn, name=f"t{i}", inputs={"x": f"t{i - 1}"})
        return pipe
    fns = _functions(mode, workdir, n, edited)
    pipe.task(fns[0], name="t0")
    for i in range(1, n):
        pipe.task(fns[i], name=f"t{i}", inputs={"x": f"t{i - 1}"})
    return pipe


def memo_chain(mode: str, cache_dir: str, workdir: Path, n: int, edited: bool) -> float:
    """The hand-written baseline: diskcache keyed by each function's source text + its args."""
    import diskcache

    fns = _functions("module" if mode == "shared" else mode, workdir, n, edited)
    cache = diskcache.Cache(cache_dir)
    start = time.perf_counter()
    x = None
    for i, fn in enumerate(fns):
        args = () if i == 0 else (x,)
        key = hashlib.sha256(inspect.getsource(fn).encode() + pickle.dumps(args)).hexdigest()
        value = cache.get(key)
        if value is None:
            value = fn(*args)
            cache.set(key, value)
        x = value
    return time.perf_counter() - start


def child(system: str, mode: str, cache_dir: str, workdir: str, edited: bool, twice: bool) -> None:
    """Run one workload in this process; print seconds (and counts) as one JSON line."""
    work = Path(workdir)
    if system == "memo":
        print(json.dumps({"seconds": memo_chain(mode, cache_dir, work, N, edited)}))
        return
    pipe = build(mode, cache_dir, work, N, edited)
    start = time.perf_counter()
    r = pipe.run()
    out: dict[str, Any] = {
        "seconds": time.perf_counter() - start,
        "executed": len(r.executed),
        "loads": pipe.store.loads,
    }
    if twice:  # a second nf.run() in the same process ("kernel"), nothing changed
        start = time.perf_counter()
        again = pipe.run()
        out["second_now"] = time.perf_counter() - start  # back to back: the first run's
        # history is still being written by the recorder's thread meanwhile
        out["second_executed"] = len(again.executed)
        paused = []
        for _ in range(5):  # as in a kernel: a moment between two cells (the median of 5)
            time.sleep(0.3)
            start = time.perf_counter()
            pipe.run()
            paused.append(time.perf_counter() - start)
        out["second"] = sorted(paused)[2]
    print(json.dumps(out))

"""Code-fingerprint benchmarks (issue 21): W1–W3 on 1,000 *distinct* functions, in fresh processes.

Run: `.venv/bin/python benchmarks/bench_fingerprints.py`. Prints a table; nothing is asserted.

Variants (see _distinct.py):
  (a) module  — a generated module of 1,000 distinct functions (`def tN(x)` + a log call), chained
  (b) main    — the same functions defined through `exec` in `__main__`, as notebook cells are
  shared      — one `step` function for every task (bench_core.py's chain), labelled as such
Workloads, each in a fresh process:
  W1 cold run (empty cache), per task
  W2 nothing changed: time inside `run()`, tasks executed, values unpickled; and a second
     `run()` in the same process (a kernel's second `nf.run()`)
  W3 the middle function edited: time inside `run()`, tasks executed (must be 500)
Baseline, same run, same functions, fresh processes: a hand-written diskcache memo keyed by
each function's source text (`inspect.getsource`) and its pickled arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _distinct import MIDDLE, N, write_module

CHILD = (
    "import sys; sys.path.insert(0, {here!r}); from _distinct import child; "
    "child({system!r}, {mode!r}, {cache!r}, {work!r}, {edited!r}, {twice!r})"
)


def run_child(system: str, mode: str, cache: Path, work: Path, edited: bool, twice: bool = False):
    code = CHILD.format(
        here=str(HERE),
        system=system,
        mode=mode,
        cache=str(cache),
        work=str(work),
        edited=edited,
        twice=twice,
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=work
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nbflow-bench-fp-"))
    os.environ["NBFLOW_HOME"] = str(tmp / "home")
    print(f"nbflow fingerprint benchmarks (N={N}, Python {sys.version.split()[0]})")
    print(f"  {'variant':<8} {'workload':<34} {'nbflow':>10}   baseline / counts")
    for mode in ("module", "main", "shared"):
        work = tmp / mode
        work.mkdir()
        write_module(work, N, edited=False)
        cache, memo = tmp / f"{mode}-cache", tmp / f"{mode}-memo"
        w1 = run_child("nbflow", mode, cache, work, False)
        m1 = run_child("memo", mode, memo, work, False)
        w2 = run_child("nbflow", mode, cache, work, False, twice=True)
        m2 = run_child("memo", mode, memo, work, False)
        write_module(work, N, edited=True)
        w3 = run_child("nbflow", mode, cache, work, True)
        m3 = run_child("memo", mode, memo, work, True)
        label = f"({mode})" if mode != "shared" else "(shared fn)"
        rows = [
            (
                "W1 cold, per task",
                f"{w1['seconds'] / N * 1e6:.0f} µs",
                f"memo {m1['seconds'] / N * 1e6:.0f} µs; executed {w1['executed']}",
            ),
            (
                "W2 no change (fresh process)",
                f"{w2['seconds'] * 1e3:.1f} ms",
                f"memo {m2['seconds'] * 1e3:.1f} ms (nbflow {m2['seconds'] / w2['seconds']:.1f}x "
                f"faster); executed {w2['executed']}, unpickled {w2['loads']}",
            ),
            (
                "W2 second run() in one process",
                f"{w2['second'] * 1e3:.1f} ms",
                f"executed {w2['second_executed']}",
            ),
            (
                f"W3 t{MIDDLE} edited",
                f"{w3['seconds'] * 1e3:.1f} ms",
                f"memo {m3['seconds'] * 1e3:.1f} ms; executed {w3['executed']}",
            ),
        ]
        for name, value, rest in rows:
            print(f"  {label:<11} {name:<31} {value:>10}   {rest}", flush=True)


if __name__ == "__main__":
    main()

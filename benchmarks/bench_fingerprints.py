"""Code-fingerprint benchmarks (issue 21): W1–W3 on 1,000 *distinct* functions, in fresh processes.

Run: `.venv/bin/python benchmarks/bench_fingerprints.py`. Prints a table of medians of
`REPEATS` full sequences; nothing is asserted.

Variants (see _distinct.py):
  (a) module  — a generated module of 1,000 distinct functions (`def tN(x)` + a log call), chained
  (b) main    — the same functions defined through `exec` in `__main__`, as notebook cells are
  shared      — one `step` function for every task (bench_core.py's chain), labelled as such
  state       — (a) with each task appending its name to one module-level list (issue 13)
Workloads, each in a fresh process:
  W1 cold run (empty cache), per task
  W2 nothing changed: time inside `run()`, tasks executed, values unpickled; and a second
     `run()` in the same process (a kernel's second `nf.run()`): the median of 5, each
     0.3 s after the one before as a kernel's cells are; and one back to back, while the
     recorder's thread still writes the run before it to the history
  W3 the middle function edited: time inside `run()`, tasks executed (must be 500)
Baseline, same run, same functions, fresh processes: a hand-written diskcache memo keyed by
each function's source text (`inspect.getsource`) and its pickled arguments.
"""

from __future__ import annotations

import json
import os
import statistics
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


REPEATS = 3


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def measure(tmp: Path, mode: str, k: int) -> dict[str, dict]:
    """One full W1/W2/W3 sequence, nbflow and the memo, each step in a fresh process."""
    work = tmp / f"{mode}-{k}"
    work.mkdir()
    write_module(work, N, edited=False, state=mode == "state")
    cache, memo = tmp / f"{mode}-{k}-cache", tmp / f"{mode}-{k}-memo"
    out = {
        "w1": run_child("nbflow", mode, cache, work, False),
        "m1": run_child("memo", mode, memo, work, False),
        "w2": run_child("nbflow", mode, cache, work, False, twice=True),
        "m2": run_child("memo", mode, memo, work, False),
    }
    write_module(work, N, edited=True, state=mode == "state")
    out["w3"] = run_child("nbflow", mode, cache, work, True)
    out["m3"] = run_child("memo", mode, memo, work, True)
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nbflow-bench-fp-"))
    os.environ["NBFLOW_HOME"] = str(tmp / "home")
    print(
        f"nbflow fingerprint benchmarks (N={N}, Python {sys.version.split()[0]}, "
        f"medians of {REPEATS})"
    )
    print(f"  {'variant':<11} {'workload':<31} {'nbflow':>10}   baseline / counts")
    for mode in ("module", "main", "shared", "state"):
        runs = [measure(tmp, mode, k) for k in range(REPEATS)]
        at = {name: [r[name] for r in runs] for name in runs[0]}
        w1, m1 = median(at["w1"], "seconds"), median(at["m1"], "seconds")
        w2, m2 = median(at["w2"], "seconds"), median(at["m2"], "seconds")
        w3, m3 = median(at["w3"], "seconds"), median(at["m3"], "seconds")
        second = median(at["w2"], "second")
        second_now = median(at["w2"], "second_now")
        label = f"({mode})" if mode != "shared" else "(shared fn)"
        rows = [
            (
                "W1 cold, per task",
                f"{w1 / N * 1e6:.0f} µs",
                f"memo {m1 / N * 1e6:.0f} µs; executed {at['w1'][0]['executed']}",
            ),
            (
                "W2 no change (fresh process)",
                f"{w2 * 1e3:.1f} ms",
                f"memo {m2 * 1e3:.1f} ms (nbflow {m2 / w2:.1f}x faster); "
                f"executed {at['w2'][0]['executed']}, unpickled {at['w2'][0]['loads']}",
            ),
            (
                "W2 second run() in one process",
                f"{second * 1e3:.1f} ms",
                f"executed {at['w2'][0]['second_executed']}; "
                f"back to back {second_now * 1e3:.1f} ms",
            ),
            (
                f"W3 t{MIDDLE} edited",
                f"{w3 * 1e3:.1f} ms",
                f"memo {m3 * 1e3:.1f} ms; executed {at['w3'][0]['executed']}",
            ),
        ]
        for name, value, rest in rows:
            print(f"  {label:<11} {name:<31} {value:>10}   {rest}", flush=True)


if __name__ == "__main__":
    main()

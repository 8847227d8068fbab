"""run_notebook overhead over bare papermill (issue 4): target ≤ 10% on a trivial notebook.

Run: `.venv/bin/python benchmarks/bench_notebook.py [PAIRS]`. Prints times and the
ratio; nothing is asserted.

Both sides execute the same two-cell notebook (a `parameters` cell and one
statement) with one parameter, into a new output file, with the same kernel:
  papermill    `papermill.execute_notebook(nb, out, parameters={"x": 2}, progress_bar=False)`
  run_notebook `nf.run_notebook(nb, {"x": 2}, output=out)` — reading and checking
               the parameters, rendering the cell, the kernel-spec check, IPC sockets,
               the record folder and reading it back included.
Runs alternate (papermill, nbflow, papermill, ...) after one warm-up of each,
so drift on the machine hits both sides alike. Kernel start and shutdown
dominate both (~95%) and occasionally take seconds longer (a graceful
shutdown waiting out its grace period), so the figure compares medians.
Last, the time until a kernel killed with SIGKILL is reported ("kernel died").
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _notebooks import write_trivial_notebook


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["NBFLOW_HOME"] = str(work / "home")
        import papermill as pm

        import nbflow as nf

        source = write_trivial_notebook(work / "trivial.ipynb", "x = 1", "y = x + 1")

        def bare(i: int) -> float:
            start = time.perf_counter()
            pm.execute_notebook(
                str(source), str(work / f"pm-{i}.ipynb"), parameters={"x": 2}, progress_bar=False
            )
            return time.perf_counter() - start

        def ours(i: int) -> float:
            start = time.perf_counter()
            nr = nf.run_notebook(source, {"x": 2}, output=work / f"nf-{i}.ipynb")
            elapsed = time.perf_counter() - start
            assert nr.ok, nr.error
            return elapsed

        bare(-1)
        ours(-1)
        pm_times, nf_times = [], []
        for i in range(pairs):
            pm_times.append(bare(i))
            nf_times.append(ours(i))

        # How long until a SIGKILLed kernel is reported (nbclient polls liveness each second).
        killed = HERE.parent / "tests" / "fixtures" / "notebooks" / "kills_own_kernel.ipynb"
        start = time.perf_counter()
        nr = nf.run_notebook(killed, output=work / "killed.ipynb")
        dead_after = time.perf_counter() - start
        assert nr.error is not None and nr.error.reason == "kernel died", nr.error

    pm_median, nf_median = statistics.median(pm_times), statistics.median(nf_times)
    overhead = nf_median / pm_median - 1
    print(f"trivial notebook, {pairs} runs each (alternating), one kernel per run")
    print(f"  papermill     median {pm_median * 1000:6.0f} ms   min {min(pm_times) * 1000:6.0f} ms")
    print(f"  run_notebook  median {nf_median * 1000:6.0f} ms   min {min(nf_times) * 1000:6.0f} ms")
    print(
        f"  overhead (ratio of medians - 1): {overhead:+.1%}   target <= +10%: "
        f"{'met' if overhead <= 0.10 else 'NOT met'}"
    )
    print(f"  overhead (ratio of minimums - 1): {min(nf_times) / min(pm_times) - 1:+.1%}")
    print(
        f"kernel SIGKILLed in its second cell: reported as 'kernel died' after {dead_after:.1f} s "
        f"({dead_after / nf_median:.1f}x a whole trivial run)"
    )


if __name__ == "__main__":
    main()

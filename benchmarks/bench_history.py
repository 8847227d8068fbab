"""Run history benchmarks (issue 15): what recording costs, against recording switched off
in the same process (`nbflow.history.set_recording(False)`: the recorder is not a listener).

  W1 cold run of a 1,000-task chain, per task: recording on vs off (target: at most +10%)
  W2 fully cached rerun of the same chain: recording on vs off (target: at most +2 ms)
  W1 writer: the background write of a cold run's task rows, waited for after `run()`
  env: recording a run's environment (issue 18) — the first run of a process (distribution
       set listed, git asked) and every later one (a stat per sys.path entry, the source
       file's and the repository's stats), against scanning every distribution through
       importlib.metadata as a baseline
  capture: entering and leaving the per-task output capture (done with recording on or
           off; it is what `RunResult.logs` needs), per task, as a share of W1 per task

Each figure is the median of several alternating repeats; nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPEATS = 7


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nbflow-bench-history-"))
    os.environ["NBFLOW_HOME"] = str(tmp / "home")
    from bench_core import N, chain_pipeline

    from nbflow.core.capture import capture_output
    from nbflow.history import history, set_recording
    from nbflow.history.recorder import drain

    cold: dict[bool, list[float]] = {True: [], False: []}
    warm: dict[bool, list[float]] = {True: [], False: []}
    writes: dict[bool, list[float]] = {True: [], False: []}
    for i in range(REPEATS):
        for on in (False, True) if i % 2 else (True, False):
            set_recording(on)
            pipe = chain_pipeline(str(tmp / f"cache-{i}-{on}"), name=f"chain{i}{int(on)}")
            start = time.perf_counter()
            r = pipe.run()
            cold[on].append(time.perf_counter() - start)
            assert len(r.executed) == N
            start = time.perf_counter()
            drain()  # the writer thread's share, outside the run: measured apart
            writes[on].append(time.perf_counter() - start)
            start = time.perf_counter()
            r = pipe.run()
            warm[on].append(time.perf_counter() - start)
            assert len(r.cached) == N
            drain()
    set_recording(True)
    recorded = history(limit=None)
    assert len(recorded) == 2 * REPEATS and all(len(rec.tasks) == N for rec in recorded)

    start = time.perf_counter()
    for _ in range(N):
        with capture_output():
            pass
    capture = (time.perf_counter() - start) / N

    env_first, env_warm, importlib_scan = _environment_costs()

    w1_on, w1_off = statistics.median(cold[True]) / N, statistics.median(cold[False]) / N
    w2_on, w2_off = statistics.median(warm[True]), statistics.median(warm[False])
    rows = [
        (
            "W1 cold, per task",
            f"{w1_on * 1e6:.0f} µs",
            f"off {w1_off * 1e6:.0f} µs: +{(w1_on / w1_off - 1) * 100:.1f}% (target ≤ 10%)",
        ),
        (
            "W2 cached 1,000-task rerun",
            f"{w2_on * 1e3:.2f} ms",
            f"off {w2_off * 1e3:.2f} ms: +{(w2_on - w2_off) * 1e3:.2f} ms (target ≤ 2 ms)",
        ),
        (
            "W1 writer thread, after run()",
            f"{statistics.median(writes[True]) * 1e3:.2f} ms",
            "waiting for the background write of the 1,000 task rows (not inside run())",
        ),
        (
            "env, first run of a process",
            f"{env_first * 1e3:.2f} ms",
            f"importlib.metadata over every distribution: {importlib_scan * 1e3:.1f} ms",
        ),
        (
            "env, every later run",
            f"{env_warm * 1e6:.0f} µs",
            "part of W2 above (this file, in the nbflow repository)",
        ),
        (
            "capture, per task",
            f"{capture * 1e6:.1f} µs",
            f"{capture / w1_off * 100:.1f}% of W1 per task without recording",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


def _environment_costs() -> tuple[float, float, float]:
    """(first environment of a process, a later one, importlib.metadata's full scan)."""
    import importlib.metadata

    from nbflow.history import env

    env._ENTRIES.clear()
    env._PACKAGES = None
    env._GIT.clear()
    start = time.perf_counter()
    env.environment("bench", __file__)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(1000):
        env.environment("bench", __file__)
    warm = (time.perf_counter() - start) / 1000
    start = time.perf_counter()
    for dist in importlib.metadata.distributions():
        _ = dist.metadata["Name"], dist.version
    return first, warm, time.perf_counter() - start


if __name__ == "__main__":
    main()

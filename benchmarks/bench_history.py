"""Run history benchmarks (issue 15): what recording costs, against recording switched off
in the same process (`nbflow.history.set_recording(False)`: the recorder is not a listener).

  W1 cold run of a 1,000-task chain, per task: recording on vs off (target: at most +10%),
     wall time and the run thread's CPU time (`time.thread_time`: what the run itself
     spent, less disturbed by other processes on a shared machine); and with an empty
     listener instead of the recorder (what the runner spends on making events for any
     listener: the recorder's own share is the difference)
  W2 fully cached rerun of the same chain: recording on vs off (target: at most +2 ms)
  W1 writer: the background write of a cold run's task rows, waited for after `run()`
  env: recording a run's environment (issue 18) — the first run of a process (distribution
       set listed, git asked) and every later one (a stat per sys.path entry, the source
       file's and the repository's stats), against scanning every distribution through
       importlib.metadata as a baseline
  capture: entering and leaving the per-task output capture (done with recording on or
           off; it is what `RunResult.logs` needs), per task, as a share of W1 per task

Each figure is the median of several repeats, the modes alternating in a rotating order,
and beside it the same from the fastest repeat of each mode (other processes only ever add
time: on a shared machine the minimum is the steadier figure); nothing is asserted.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPEATS = int(os.environ.get("BENCH_REPEATS", "15"))
MODES = ("off", "on", "listener")


class _EmptyListener:
    """A listener that wants what the recorder wants and does nothing with it."""

    def __init__(self, ignores: frozenset[type]) -> None:
        self.ignores = ignores

    def __call__(self, event: object) -> None:
        pass


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nbflow-bench-history-"))
    os.environ["NBFLOW_HOME"] = str(tmp / "home")
    from bench_core import N, chain_pipeline

    from nbflow.core import events
    from nbflow.core.capture import capture_output
    from nbflow.history import history, set_recording
    from nbflow.history.recorder import RECORDER, drain

    empty = _EmptyListener(RECORDER.ignores)
    cold: dict[str, list[float]] = {m: [] for m in MODES}
    cold_cpu: dict[str, list[float]] = {m: [] for m in MODES}
    warm: dict[str, list[float]] = {m: [] for m in MODES}
    writes: list[float] = []
    for i in range(REPEATS):
        for mode in MODES[i % 3 :] + MODES[: i % 3]:
            set_recording(mode == "on")
            if mode == "listener":
                events.add_default_listener(empty)
            pipe = chain_pipeline(str(tmp / f"cache-{i}-{mode}"), name=f"chain{i}{mode}")
            # The previous repeat's pipeline leaves its cache's SQLite connection in a
            # reference cycle (diskcache's, in every mode): collected here, its closing
            # lands in no timed run (it cost ~20 ms in whichever run the collector hit).
            gc.collect()
            start, cpu = time.perf_counter(), time.thread_time()
            r = pipe.run()
            cold[mode].append(time.perf_counter() - start)
            cold_cpu[mode].append(time.thread_time() - cpu)
            assert len(r.executed) == N
            start = time.perf_counter()
            drain()  # the writer thread's share, outside the run: measured apart
            if mode == "on":
                writes.append(time.perf_counter() - start)
            start = time.perf_counter()
            r = pipe.run()
            warm[mode].append(time.perf_counter() - start)
            assert len(r.cached) == N
            drain()
            events.remove_default_listener(empty)
    set_recording(True)
    recorded = history(limit=None)
    assert len(recorded) == 2 * REPEATS and all(len(rec.tasks) == N for rec in recorded)

    start = time.perf_counter()
    for _ in range(N):
        with capture_output():
            pass
    capture = (time.perf_counter() - start) / N

    env_first, env_warm, importlib_scan = _environment_costs()

    def per_task(samples: dict[str, list[float]], mode: str) -> float:
        return statistics.median(samples[mode]) / N

    def fastest(samples: dict[str, list[float]], mode: str) -> float:
        return min(samples[mode]) / N

    w1_on, w1_off = per_task(cold, "on"), per_task(cold, "off")
    cpu_on, cpu_off = per_task(cold_cpu, "on"), per_task(cold_cpu, "off")
    cpu_empty = per_task(cold_cpu, "listener")
    w2_on, w2_off = statistics.median(warm["on"]), statistics.median(warm["off"])
    rows = [
        (
            "W1 cold, per task",
            f"{w1_on * 1e6:.0f} µs",
            f"off {w1_off * 1e6:.0f} µs: +{(w1_on / w1_off - 1) * 100:.1f}% (target ≤ 10%)",
        ),
        (
            "W1 cold, per task, run thread CPU",
            f"{cpu_on * 1e6:.0f} µs",
            f"off {cpu_off * 1e6:.0f} µs: +{(cpu_on / cpu_off - 1) * 100:.1f}% (target ≤ 10%)",
        ),
        (
            "W1 cold, fastest repeats",
            f"{fastest(cold, 'on') * 1e6:.0f} µs",
            f"off {fastest(cold, 'off') * 1e6:.0f} µs: "
            f"+{(fastest(cold, 'on') / fastest(cold, 'off') - 1) * 100:.1f}%; run thread CPU "
            f"+{(fastest(cold_cpu, 'on') / fastest(cold_cpu, 'off') - 1) * 100:.1f}%",
        ),
        (
            "  of which any listener",
            f"{(cpu_empty - cpu_off) * 1e6:.1f} µs",
            "an empty listener instead of the recorder: the runner making the events",
        ),
        (
            "W2 cached 1,000-task rerun",
            f"{w2_on * 1e3:.2f} ms",
            f"off {w2_off * 1e3:.2f} ms: +{(w2_on - w2_off) * 1e3:.2f} ms (target ≤ 2 ms)",
        ),
        (
            "W2, fastest repeats",
            f"{min(warm['on']) * 1e3:.2f} ms",
            f"off {min(warm['off']) * 1e3:.2f} ms: "
            f"+{(min(warm['on']) - min(warm['off'])) * 1e3:.2f} ms",
        ),
        (
            "W1 writer thread, after run()",
            f"{statistics.median(writes) * 1e3:.2f} ms",
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

"""Scheduler costs (issue 5): one tick with 100 jobs, and the per-run overhead beyond run_notebook.

Run: `.venv/bin/python benchmarks/bench_scheduler.py [REPEATS]`. Prints times and
ratios measured in this run; nothing is asserted.

1. `Scheduler.tick_once(now, start=False)` over 100 hourly cron jobs (half of
   them in Europe/Berlin), in a fresh home:
   - idle: no tick is due (the steady state between ticks): per job, one
     `last_tick` query and the cron walk for the window since it;
   - due: every job's tick has just passed, so each tick records 100 runs
     (one write transaction per run, with its rendered parameters).
   Runs are not started (`start=False`): starting is a process spawn per run,
   measured below. Median of REPEATS ticks each.
2. Per-run overhead: `nbflow trigger`'s code path (`trigger_run` +
   `run_in_foreground`: create the run, render and check parameters, sweep,
   claim, heartbeat thread, output path, finish, alerts) against a bare
   `run_notebook` of the same trivial notebook with the same parameter.
   Alternating pairs after one warm-up each; medians. The scheduler daemon
   runs each run in a child process (`python -m nbflow.jobs.attempt RUN_ID`);
   that path is timed too (interpreter start-up and imports come on top).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _notebooks import write_trivial_notebook


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["NBFLOW_HOME"] = str(work / "home")

        import nbflow as nf
        from nbflow.jobs.attempt import run_in_foreground
        from nbflow.jobs.launch import trigger_run
        from nbflow.jobs.runstore import RunStore
        from nbflow.jobs.scheduler import Scheduler
        from nbflow.jobs.schedules import Schedule

        source = write_trivial_notebook(
            work / "trivial.ipynb", 'day = "2024-01-01"', "y = len(day)"
        )

        # -- 1. one tick with 100 jobs
        store = RunStore()
        added = datetime(2024, 1, 1, tzinfo=UTC)
        for i in range(100):
            job = Schedule(
                name=f"job{i:03d}",
                notebook=str(source),
                cron=f"{i % 60} * * * *",
                tz="Europe/Berlin" if i % 2 else "UTC",
                parameters={"day": "{{ ds }}"},
            )
            store.add_job(job.name, job.to_dict(), now=added)
        scheduler = Scheduler(store)
        # first tick: every job records its first hour (and the missed ones before it)
        scheduler.tick_once(added + timedelta(hours=1, minutes=59), start=False)
        idle, due = [], []
        for r in range(repeats):
            base = added + timedelta(hours=2 + r)
            start = time.perf_counter()
            report = scheduler.tick_once(base + timedelta(minutes=59, seconds=59), start=False)
            due.append(time.perf_counter() - start)
            assert len(report.created) == 100, len(report.created)
            start = time.perf_counter()
            report = scheduler.tick_once(base + timedelta(minutes=59, seconds=59), start=False)
            idle.append(time.perf_counter() - start)
            assert not report.created

        # -- 2. per-run overhead beyond run_notebook
        trig = Schedule(name="trivial", notebook=str(source), every=86400)
        store.add_job("trivial", trig.to_dict())

        def bare(i: int) -> float:
            start = time.perf_counter()
            nr = nf.run_notebook(source, {"day": "2024-01-02"}, output=work / f"bare-{i}.ipynb")
            elapsed = time.perf_counter() - start
            assert nr.ok, nr.error
            return elapsed

        def ours(i: int) -> float:
            start = time.perf_counter()
            run = trigger_run(store, "trivial", {"day": "2024-01-02"})
            (done,) = run_in_foreground(store, [run.id], echo=lambda line: None, poll=0.01)
            elapsed = time.perf_counter() - start
            assert done.state == "success", done.error
            return elapsed

        bare(-1)
        ours(-1)
        bare_times, our_times = [], []
        for i in range(repeats):
            bare_times.append(bare(i))
            our_times.append(ours(i))

        # the daemon's path: the same run in a child process (`python -m nbflow.jobs.attempt`)
        def child(i: int) -> float:
            start = time.perf_counter()
            run = trigger_run(store, "trivial", {"day": "2024-01-02"})
            subprocess.run(
                [sys.executable, "-m", "nbflow.jobs.attempt", str(run.id)],
                env=dict(os.environ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            elapsed = time.perf_counter() - start
            assert store.get_run(run.id).state == "success"
            return elapsed

        child_times = [child(i) for i in range(max(3, repeats // 2))]

    idle_ms, due_ms = statistics.median(idle) * 1000, statistics.median(due) * 1000
    b, o = statistics.median(bare_times), statistics.median(our_times)
    print(f"scheduler tick_once with 100 cron jobs defined, median of {repeats}:")
    print(f"  no run due:             {idle_ms:7.1f} ms  ({idle_ms * 10:.0f} µs per job)")
    print(f"  a run due for each job: {due_ms:7.1f} ms  ({due_ms * 10:.0f} µs per recorded run)")
    print(f"trivial notebook, {repeats} runs each (alternating):")
    print(
        f"  run_notebook            median {b * 1000:6.0f} ms   min {min(bare_times) * 1000:6.0f} ms"
    )
    print(
        f"  trigger (foreground)    median {o * 1000:6.0f} ms   min {min(our_times) * 1000:6.0f} ms"
    )
    print(
        f"  per-run overhead: {(o - b) * 1000:+.0f} ms ({o / b - 1:+.1%} of a run, ratio of medians)"
    )
    c = statistics.median(child_times)
    print(
        f"  daemon path (run in a child process): median {c * 1000:.0f} ms, "
        f"{(c - b) * 1000:+.0f} ms ({c / b:.2f}x run_notebook): interpreter start and imports"
    )


if __name__ == "__main__":
    main()

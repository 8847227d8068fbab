"""Dashboard benchmarks (issue 16): server time of the overview and of a run page with
100 jobs and 10,000 runs in the home, against the same pages of a small home (1 job,
10 runs) measured in the same run.

  overview  every job's grid (its last 25 runs), next run, and every pipeline's last runs
            (target: at most 300 ms with 100 jobs and 10,000 runs)
  run page  one job run: its attempts, its notebook run, the pipeline inside with 4 tasks
            and its DAG (target: at most 150 ms)

Server time is the page's queries plus its template, in-process (what a request costs
the server, without the network); the median of REPEATS warm requests (the DAG's
Graphviz layout is memoized per shape, so its first drawing is reported apart).
Filling the home writes the stores' tables in bulk; the pages read them through the
same code the server runs. Nothing is asserted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
REPEATS = 15
JOBS = 100
RUNS = 10_000
NOTEBOOK = HERE.parent / "tests" / "fixtures" / "notebooks" / "dashboard_job.ipynb"


def fill(home: Path, jobs: int, runs: int) -> int:
    """A home with `jobs` daily jobs and `runs` finished runs spread over them (each with
    its history record), plus 20 pipelines with 50 runs of 4 tasks; returns the id of a
    job run whose attempt ran a notebook with a pipeline inside."""
    from nbflow.history.recorder import open_store
    from nbflow.jobs.runstore import RunStore, utc_iso
    from nbflow.jobs.schedules import Schedule

    home.mkdir(parents=True, exist_ok=True)
    store = RunStore(home / "nbflow.db")
    for j in range(jobs):
        spec = Schedule(
            name=f"job{j:03d}", notebook=str(NOTEBOOK), cron=f"{j % 60} 2 * * *", tz="Europe/Berlin"
        ).to_dict()
        store.add_job(f"job{j:03d}", spec)
    store.close()
    start = datetime(2020, 1, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(runs):
        job = f"job{i % jobs:03d}"
        tick = start + timedelta(days=i // jobs, minutes=i % jobs)
        state = "failed" if i % 17 == 0 else "success"
        rows.append(
            (job, "scheduled", utc_iso(tick, "seconds"), state, 1, utc_iso(tick),
             utc_iso(tick), utc_iso(tick + timedelta(seconds=3)), 3.0,
             json.dumps({"day": tick.date().isoformat()}))
        )  # fmt: skip
    conn = sqlite3.connect(home / "nbflow.db")
    conn.executemany(
        "INSERT INTO runs (job, run_type, logical_date, state, attempts, queued_at, started_at, "
        "ended_at, duration, parameters) VALUES (?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.commit()
    last_id = int(conn.execute("SELECT MAX(id) FROM runs").fetchone()[0])
    conn.close()

    history = open_store(home)
    base = start.timestamp()
    hist_runs = [
        {
            "id": f"job-{i + 1}-1", "kind": "job", "name": f"job{i % jobs:03d}", "params": {},
            "started": base + i * 60, "ended": base + i * 60 + 3, "duration": 3.0,
            "state": "failed" if i % 17 == 0 else "ok", "host": "bench", "pid": 1,
        }
        for i in range(runs)
    ]  # fmt: skip
    tasks = []
    names = ["extract", "clean", "enrich", "load"]
    for p in range(20):
        for k in range(50):
            run_id = f"p{p:02d}r{k:03d}"
            hist_runs.append(
                {"id": run_id, "kind": "pipeline", "name": f"pipe{p:02d}", "params": {"n": k},
                 "started": base + k * 3600 + p, "ended": base + k * 3600 + p + 1,
                 "duration": 1.0, "state": "ok", "host": "bench", "pid": 1}
            )  # fmt: skip
            for t, task in enumerate(names):
                tasks.append(
                    {"run_id": run_id, "task": task, "state": "done", "cached": 0,
                     "reason": "never run", "started": base + k * 3600 + t,
                     "ended": base + k * 3600 + t + 0.2, "duration": 0.2}
                )  # fmt: skip
    # The one run page measured: job run `last_id`, its notebook run, a pipeline inside.
    hist_runs += [
        {"id": f"job-{last_id}-1", "kind": "job", "name": f"job{(runs - 1) % jobs:03d}",
         "started": base, "ended": base + 3, "duration": 3.0, "state": "ok", "host": "bench", "pid": 1},
        {"id": "nb-last", "kind": "notebook", "name": "dashboard_job", "parent": f"job-{last_id}-1",
         "started": base, "ended": base + 3, "duration": 3.0, "state": "ok", "host": "bench", "pid": 1},
        {"id": "inner-last", "kind": "pipeline", "name": "pipe00", "parent": "nb-last",
         "started": base + 1, "ended": base + 2, "duration": 1.0, "state": "ok", "host": "bench", "pid": 1},
    ]  # fmt: skip
    tasks += [
        {"run_id": "inner-last", "task": task, "state": "done", "cached": 0, "reason": "never run",
         "started": base + 1, "ended": base + 1.2, "duration": 0.2}
        for task in names
    ]  # fmt: skip
    history.write(runs=hist_runs, tasks=tasks)
    return last_id


def measure(home: Path, run_id: int) -> dict[str, float]:
    from nbflow.jobs.runstore import RunStore
    from nbflow.ui import queries
    from nbflow.ui.app import make_templates

    src = queries.Sources(home)
    env = make_templates()
    job = RunStore(home / "nbflow.db").get_run(run_id).job
    common = {"root": "/nbflow/", "xsrf": "x", "home": str(home), "sandbox": "allow-scripts"}

    def overview() -> None:
        env.get_template("overview.html").render(**common, **queries.overview(src))

    def run_page() -> None:
        env.get_template("job_run.html").render(**common, view=queries.job_run(src, job, run_id))

    out: dict[str, float] = {}
    for label, page in (("overview", overview), ("run page", run_page)):
        began = time.perf_counter()
        page()
        out[f"{label} (first)"] = time.perf_counter() - began
        times = []
        for _ in range(REPEATS):
            began = time.perf_counter()
            page()
            times.append(time.perf_counter() - began)
        out[label] = statistics.median(times)
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nbflow-bench-dashboard-"))
    os.environ["NBFLOW_HOME"] = str(tmp / "unused")
    began = time.perf_counter()
    big_run = fill(tmp / "big", JOBS, RUNS)
    filled = time.perf_counter() - began
    small_run = fill(tmp / "small", 1, 10)
    small = measure(tmp / "small", small_run)
    big = measure(tmp / "big", big_run)
    print(f"dashboard: {JOBS} jobs, {RUNS:,} job runs (+{RUNS:,} history records, 1,000 "
          f"pipeline runs) filled in {filled:.1f} s; median of {REPEATS} warm requests")  # fmt: skip
    targets = {"overview": 0.300, "run page": 0.150}
    for label in ("overview", "run page"):
        ratio = big[label] / small[label] if small[label] else float("nan")
        verdict = "ok" if big[label] <= targets[label] else "OVER TARGET"
        print(
            f"  {label:<9} {big[label] * 1000:7.1f} ms  (first {big[label + ' (first)'] * 1000:.1f} ms; "
            f"small home {small[label] * 1000:.1f} ms, x{ratio:.1f})  target "
            f"{targets[label] * 1000:.0f} ms: {verdict}"
        )


if __name__ == "__main__":
    main()

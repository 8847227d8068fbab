"""Scheduled notebooks on a Dask cluster against the scheduler alone (issue 19, target 3).

Run: `.venv/bin/python benchmarks/bench_dask_notebooks.py [SECONDS]` (default 30). Prints
times and ratios measured in this run; nothing is asserted.

Four jobs, each a CPU-bound notebook of SECONDS of one core's work (a pure-Python loop,
calibrated on this machine first), are due at the same tick. The time from that tick to
the fourth run's end is measured:

- **alone**: `nbflow scheduler` with the local executor and its default concurrency
  (`--max-running`: the CPU count, at least 2; each job's `max_active` is 1), the
  kernels on the scheduler's host;
- **cluster**: `nbflow scheduler --executor dask --address ...` with the same defaults,
  every notebook on one of two `dask worker` processes (one thread each) of a
  `dask scheduler`, all on 127.0.0.1.

One machine cannot hold two machines, so each comparison is made twice:

1. **pinned** (the issue's setting, simulated): "a machine" is one CPU core. Alone, the
   scheduler and its kernels are pinned to core 0; on the cluster, worker A is pinned to
   core 0 and worker B to core 1 (two one-core machines), the scheduler anywhere.
2. **shared**: nothing pinned; alone and cluster both use every core of this machine, so
   the cluster has no more CPU than the scheduler alone and the ratio shows the cost of
   going through Dask, not a gain.

Other users of the machine make both numbers noisy: they are reported as measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

JOBS = 4
LOOP = "x = 0\nfor i in range(n):\n    x += i * i\n"


def calibrate(seconds: float) -> int:
    """Iterations of LOOP that take `seconds` of one core's CPU time (best of three).

    CPU time, not wall time: other users' load would make a wall-clock calibration
    (and so the notebooks' work) vary from one run of the benchmark to the next."""
    probe = 5_000_000
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        exec(LOOP, {"n": probe})
        best = min(best, time.process_time() - start)
    return int(probe * seconds / best)


def write_notebook(path: Path, n: int) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell(f"n = {n}")
    params.metadata["tags"] = ["parameters"]
    cells = [params, new_code_cell(LOOP)]
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i}"
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)
    return path


def pin(cores: set[int] | None):
    return (lambda: os.sched_setaffinity(0, cores)) if cores else None


class Cluster:
    def __init__(self, folder: Path, worker_cores: list[set[int] | None]) -> None:
        dask = str(Path(sys.executable).with_name("dask"))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("NBFLOW_HOME", None)
        file = folder / f"scheduler-{time.monotonic_ns()}.json"
        log = open(folder / "dask.log", "ab")  # noqa: SIM115 - the cluster's life
        common = {"env": env, "stdout": log, "stderr": log, "start_new_session": True}
        self.procs = [
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
                + ["--scheduler-file", str(file)],
                **common,  # type: ignore[call-overload]
            )
        ]
        try:
            self._start_workers(file, dask, worker_cores, common)
        except BaseException:
            self.close()  # never leave a scheduler or a worker behind
            raise

    def _start_workers(
        self, file: Path, dask: str, worker_cores: list[set[int] | None], common: dict
    ) -> None:
        deadline = time.monotonic() + 120
        while not file.exists() or not file.read_text().strip():
            if time.monotonic() > deadline:
                raise SystemExit("the Dask scheduler did not start in 120 s")
            time.sleep(0.2)
        self.address = json.loads(file.read_text())["address"]
        for cores in worker_cores:
            self.procs.append(
                subprocess.Popen(
                    [dask, "worker", self.address, "--nthreads", "1", "--nworkers", "1"]
                    + ["--host", "127.0.0.1", "--no-dashboard"],
                    preexec_fn=pin(cores),
                    **common,  # type: ignore[call-overload]
                )
            )
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=60) as client:
            client.wait_for_workers(len(worker_cores), timeout=120)

    def close(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def four_at_one_tick(work: Path, notebook: Path, executor: str, address: str | None) -> float:
    """Seconds from the tick at which four jobs are due to the end of the fourth run."""
    home = work / f"home-{executor}-{time.monotonic_ns()}"
    os.environ["NBFLOW_HOME"] = str(home)
    from nbflow.jobs.runstore import RunStore, utc_now
    from nbflow.jobs.scheduler import Scheduler
    from nbflow.jobs.schedules import Schedule

    store = RunStore(home / "nbflow.db")
    added = utc_now() - timedelta(hours=1, minutes=1)  # one hourly tick due now, for all four
    for i in range(JOBS):
        job = Schedule(name=f"cpu{i}", notebook=str(notebook), cron="0 * * * *")
        store.add_job(job.name, job.to_dict(), now=added)
    scheduler = Scheduler(store, executor=executor, address=address, echo=lambda _: None)
    start = time.perf_counter()
    try:
        while True:
            scheduler.tick_once()
            runs = [r for r in store.list_runs() if r.state != "missed"]
            if len(runs) == JOBS and store.count_runs() == 0:
                break
            time.sleep(0.1)
    finally:
        scheduler.kill_children()
    took = time.perf_counter() - start
    bad = [f"{r.job}: {r.state} {r.error}" for r in runs if r.state != "success"]
    if bad:
        raise SystemExit("runs failed: " + "; ".join(bad))
    return took


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    everything = os.sched_getaffinity(0)
    print(f"{JOBS} notebooks of {seconds:g} s of one core's work each, due at one tick")
    print(f"machine: {os.cpu_count()} CPUs (shared with other users: figures are noisy)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.sched_setaffinity(0, {0})
        n = calibrate(seconds)
        os.sched_setaffinity(0, everything)
        notebook = write_notebook(work / "cpu.ipynb", n)
        print(f"calibrated: {n:,} loop iterations ≈ {seconds:g} s of one core's CPU time\n")
        # Other users' load changes while this runs: the pinned setting, the one the
        # target is about, is measured in the order alone, cluster, cluster, alone, and
        # its ratio taken over the sums; the load average is printed beside each figure.
        for label, alone_cores, worker_cores, order in (
            ("pinned", {0}, [{0}, {1}], "ABBA"),
            ("shared", None, [None, None], "AB"),
        ):
            times: dict[str, list[float]] = {"A": [], "B": []}
            for which in order:
                if which == "A":
                    if alone_cores:
                        os.sched_setaffinity(0, alone_cores)  # the kernels inherit it
                    took = four_at_one_tick(work, notebook, "local", None)
                    os.sched_setaffinity(0, everything)
                else:
                    cluster = Cluster(work, worker_cores)
                    try:
                        took = four_at_one_tick(work, notebook, "dask", cluster.address)
                    finally:
                        cluster.close()
                times[which].append(took)
                what = "scheduler alone   " if which == "A" else "two-worker cluster"
                load = os.getloadavg()[0]
                print(f"  {label}: {what} {took:6.1f} s   (load average {load:.1f})", flush=True)
            ratio = sum(times["B"]) / sum(times["A"])
            target = " (target <= 0.6)" if label == "pinned" else " (no target: same CPUs)"
            print(f"{label}: cluster / alone = {ratio:.2f}{target}\n", flush=True)
        ideal = JOBS * seconds / 2
        print(
            f"\n(ideal for two one-core workers: {ideal:.0f} s; alone on one core with "
            f"{JOBS} notebooks: {JOBS * seconds:.0f} s)"
        )


if __name__ == "__main__":
    main()

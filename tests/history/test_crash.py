"""Real processes: a run killed with SIGKILL reads as `interrupted` with the tasks it finished;
two processes writing into one home at once lose no record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbflow as nf

ROOT = Path(__file__).resolve().parents[2]

SLOW_RUN = """
import sys, time
import nbflow as nf
p = nf.Pipeline("slow")
p.task(lambda: print("first done") or 1, name="first")
def second(first):
    print("second started", flush=True)
    open(sys.argv[1], "w").write("started")
    time.sleep(600)
p.task(second, name="second")
p.run()
"""

MANY_RUNS = """
import sys
import nbflow as nf
p = nf.Pipeline(sys.argv[1])
for i in range(5):
    p.task(lambda i=i: i, name=f"t{i}")
for _ in range(int(sys.argv[2])):
    p.run(force=True)
"""


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "NBFLOW_HOME": str(home), "PYTHONPATH": str(ROOT)}


def test_a_run_killed_with_sigkill_reads_as_interrupted_with_its_finished_tasks(
    home: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, str(started)], env=_env(home), cwd=tmp_path
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.5)  # past one batched write of the finished task
    [running] = nf.history("slow")
    assert running.state == "running"  # its process is alive
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [run] = nf.history("slow")
    assert run.state == "interrupted"
    assert {t.name: t.state for t in run.tasks} == {"first": "done"}  # what it finished
    assert run.task("first").log == "first done\n"
    assert nf.history(state="interrupted")[0].id == run.id  # written so, not only read so


def test_two_writer_processes_lose_no_record(home: Path, tmp_path: Path) -> None:
    runs = 15
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MANY_RUNS, name, str(runs)], env=_env(home), cwd=tmp_path
        )
        for name in ("writer_a", "writer_b")
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    for name in ("writer_a", "writer_b"):
        records = nf.history(name, limit=None)
        assert len(records) == runs
        assert all(r.state == "ok" and len(r.tasks) == 5 for r in records)

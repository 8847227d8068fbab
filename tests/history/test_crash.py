"""Real processes: a run killed with SIGKILL reads as `interrupted` with the tasks it finished
and the one it was running; two processes writing into one home at once lose no record;
`nbflow logs --follow` shows a running task's lines while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

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


def test_a_run_killed_with_sigkill_reads_as_interrupted_with_its_finished_and_running_tasks(
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
    # Wait for the batched write that shows the task in flight (within a FLUSH_INTERVAL).
    while True:
        [running] = nf.history("slow")
        tasks = {t.name: t.state for t in running.tasks}
        if tasks.get("second") == "running" and running.task("second").log:
            break
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert running.state == "running"  # its process is alive
    assert tasks == {"first": "done", "second": "running"}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [run] = nf.history("slow")
    assert run.state == "interrupted"
    # What it finished, and the task it was running when it died, with what that printed.
    assert {t.name: t.state for t in run.tasks} == {"first": "done", "second": "interrupted"}
    assert run.task("first").log == "first done\n"
    assert run.task("second").log == "second started\n"
    assert run.task("second").started is not None
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


TALKING_RUN = """
import sys, time
from pathlib import Path
import nbflow as nf
p = nf.Pipeline("talking")
def talk():
    print("line 1")
    release = Path(sys.argv[1])
    while not release.exists():  # ends only when the test lets it
        time.sleep(0.05)
    print("line 2")
    return 1
p.task(talk, name="talk")
p.run()
"""


def _read_line(stream: IO[str], seconds: float) -> str:
    """The next line of `stream`, or "" after `seconds` without one (a reader thread)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return box[0] if box else ""


def test_logs_follow_prints_a_running_tasks_lines_as_they_come_and_ends_with_the_run(
    home: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run_proc = subprocess.Popen(
        [sys.executable, "-c", TALKING_RUN, str(release)], env=_env(home), cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 60
        while not nf.history("talking"):
            assert run_proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        [run] = nf.history("talking")
        follower = subprocess.Popen(
            [sys.executable, "-m", "nbflow", "logs", run.id, "--follow"],
            env=_env(home),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None
        assert _read_line(follower.stdout, 60) == "--- talk\n"
        assert _read_line(follower.stdout, 60) == "line 1\n"
        # Seen while the task still runs: it cannot end before `release` exists.
        assert run_proc.poll() is None and not release.exists()
        assert follower.poll() is None  # still following
        release.touch()
        rest, _ = follower.communicate(timeout=60)
        assert rest == "line 2\n"  # printed once, and the follower ended with the run
        assert follower.returncode == 0
        assert run_proc.wait(timeout=60) == 0
    finally:
        release.touch()
        run_proc.wait(timeout=60)
    [done] = nf.history("talking")
    assert done.state == "ok" and done.task("talk").log == "line 1\nline 2\n"

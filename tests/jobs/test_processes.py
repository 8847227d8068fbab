"""kill_group stops a child and everything it started (a runner's kernel, a shell's children)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from nbflow.jobs.processes import kill_group


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by its parent) is gone for our purpose
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_the_whole_group_dies_and_the_child_is_reaped(tmp_path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    kill_group(process)
    assert process.returncode == -9
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_group_already_gone_is_not_an_error() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process.wait()
    kill_group(process)  # nothing left to kill: returns quietly
    assert process.returncode == 0


def test_a_child_with_pipes_is_drained_and_reaped() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; print('x' * 100000, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    time.sleep(0.3)
    kill_group(process, wait=5)
    assert process.returncode == -9

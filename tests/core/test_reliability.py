"""Crash safety and concurrency with real processes: SIGKILL mid-write, two runs at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nbflow.core.store import DiskStore

from ..conftest import FIXTURES

PIPELINES = FIXTURES / "pipelines"


def run_script(
    script: str, env_extra: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, str(PIPELINES / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sigkill_while_writing_a_50mb_value_leaves_no_partial_value(home: Path) -> None:
    killed = run_script("big_value.py", {"NBFLOW_FAULT": "store-mid-write"})
    assert killed.returncode == -signal.SIGKILL
    store = DiskStore(home / "cache")
    leftovers = list((home / "cache" / "tmp").glob("*.tmp"))
    assert leftovers, "the kill should have interrupted a value write"
    assert not list((home / "cache" / "values").glob("*/*.nbv"))  # nothing half-written in place
    assert store.info()["records"] == 0 or all(r["task"] != "big" for r in store.records())

    again = run_script("big_value.py", {})
    assert again.returncode == 0, again.stderr
    assert "executed=small,big,total" in again.stdout or "executed=big,total" in again.stdout
    assert f"total={7.0 * 50 * 2**20 // 8}" in again.stdout

    third = run_script("big_value.py", {})
    assert "executed= total=" in third.stdout  # nothing ran the third time
    assert store.gc(grace=0.0)["tmp"] == len(leftovers)


def test_two_processes_share_one_cache(tmp_path: Path) -> None:
    env = {**os.environ, "CHAIN_CACHE": str(tmp_path / "shared-cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, str(PIPELINES / "slow_chain.py")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "database is locked" not in err
    third = subprocess.run(
        [sys.executable, str(PIPELINES / "slow_chain.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert third.returncode == 0, third.stderr
    assert "executed=0 cached=30" in third.stdout

"""`nbflow cache info` and `nbflow cache gc` on a real cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from nbflow import Pipeline
from nbflow.core.store import INLINE_LIMIT


def nbflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbflow.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )


def test_cache_info_and_gc(home: Path) -> None:
    pipe = Pipeline("cli")
    pipe.task(lambda: np.zeros(INLINE_LIMIT), name="big")
    pipe.task(lambda: 1, name="small")
    pipe.run()
    info = json.loads(nbflow_cli("cache", "info", "--json").stdout)
    assert info["records"] == 2 and info["pipelines"] == {"cli": 2} and info["value_files"] == 1
    text = nbflow_cli("cache", "info").stdout
    assert "results:      2" in text and "eviction off" in text
    orphan_dir = home / "cache" / "values" / "ab"
    orphan_dir.mkdir()
    orphan = orphan_dir / "ab00.nbv"
    orphan.write_bytes(b"junk")
    os.utime(orphan, (0, 0))  # old enough to be past the grace period
    out = nbflow_cli("cache", "gc")
    assert out.returncode == 0 and "1 orphan value files" in out.stdout
    assert not orphan.exists() and pipe.run().cached == ["big", "small"]
    out = nbflow_cli("cache", "gc", "--older-than", "0")
    assert "removed 2 results" in out.stdout
    bad = nbflow_cli("cache", "gc", "--max-size", "lots")
    assert bad.returncode == 2 and "is not a size" in bad.stderr

"""`nbflow cache info` and `nbflow cache gc` on a real cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from nbflow import Pipeline
from nbflow.core.cache.store import INLINE_LIMIT

from .conftest import FIXTURES


def nbflow_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbflow.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
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
    assert out.returncode == 0, out.stderr
    assert "1 orphan value files" in out.stdout
    assert not orphan.exists() and pipe.run().cached == ["big", "small"]
    out = nbflow_cli("cache", "gc", "--older-than", "0")
    assert "removed 2 results" in out.stdout
    bad = nbflow_cli("cache", "gc", "--max-size", "lots")
    assert bad.returncode == 2 and "is not a size" in bad.stderr


def test_gc_refuses_negative_ages_and_sizes(home: Path) -> None:
    pipe = Pipeline("cli")
    pipe.task(lambda: 1, name="one")
    pipe.run()
    for args, option in (
        (("--older-than", "-1"), "--older-than"),
        (("--older-than", "nan"), "--older-than"),
        (("--max-size", "-5GB"), "--max-size"),
    ):
        out = nbflow_cli("cache", "gc", *args)
        assert out.returncode == 2, (args, out.stdout)
        assert option in out.stderr and "0 or more" in out.stderr
        assert "Traceback" not in out.stderr and "removed" not in out.stdout


def test_gc_under_another_home_refuses_and_deletes_nothing(tmp_path: Path, home: Path) -> None:
    cache = tmp_path / "project-cache"
    pipe = Pipeline("p", cache_dir=cache)
    pipe.task(lambda: np.zeros(INLINE_LIMIT), name="big")
    pipe.task(lambda: 1, name="small")
    pipe.run()
    pipe.store.close()
    files = sorted((cache / "values").glob("*/*.nbv"))
    assert len(files) == 1
    for f in files:
        os.utime(f, (0, 0))  # past the grace period: only judgement keeps them
    work = tmp_path / "elsewhere"
    work.mkdir()

    # A home that does not exist: refused, and no home is created by the refusal.
    out = nbflow_cli(
        "cache", "gc", "--cache-dir", str(cache), env={"NBFLOW_HOME": "other"}, cwd=work
    )
    assert out.returncode == 2, out.stdout
    assert f"NBFLOW_HOME={home}" in out.stderr and "Nothing was deleted" in out.stderr
    assert "has no secret.key" in out.stderr
    assert not (work / "other").exists() and not (work / ".nbflow").exists()
    assert sorted((cache / "values").glob("*/*.nbv")) == files

    # A home with a secret of its own: refused too.
    other = tmp_path / "other-home"
    info = nbflow_cli("cache", "info", "--cache-dir", str(cache), env={"NBFLOW_HOME": str(other)})
    assert info.returncode == 0 and "results:      0" in info.stdout
    assert "unverified:   2" in info.stdout
    out = nbflow_cli("cache", "gc", "--cache-dir", str(cache), env={"NBFLOW_HOME": str(other)})
    assert out.returncode == 2 and f"secret of home `{other}`" in out.stderr
    assert sorted((cache / "values").glob("*/*.nbv")) == files

    # Under the home that wrote it, gc judges and keeps what is referenced.
    out = nbflow_cli("cache", "gc", "--cache-dir", str(cache))
    assert out.returncode == 0, out.stderr
    assert "removed 0 results, 0 orphan value files" in out.stdout
    rerun = Pipeline("p", cache_dir=cache)
    rerun.task(lambda: np.zeros(INLINE_LIMIT), name="big")
    rerun.task(lambda: 1, name="small")
    assert rerun.run().cached == ["big", "small"]


def test_gc_drop_unverified_removes_tampered_results(tmp_path: Path, home: Path) -> None:
    cache = tmp_path / "c"
    pipe = Pipeline("p", cache_dir=cache)
    pipe.task(lambda: np.zeros(INLINE_LIMIT), name="big")
    pipe.run()
    store = pipe.store
    (name,) = [k for k in store._meta.iterkeys() if k.startswith("r:")]
    raw = store._meta.get(name)
    store._meta.set(name, raw[:-5] + b"XXXXX")
    store.close()
    (value_file,) = (cache / "values").glob("*/*.nbv")
    os.utime(value_file, (0, 0))
    refused = nbflow_cli("cache", "gc", "--cache-dir", str(cache))
    assert refused.returncode == 2 and "--drop-unverified" in refused.stderr
    assert value_file.exists()
    out = nbflow_cli("cache", "gc", "--cache-dir", str(cache), "--drop-unverified")
    assert out.returncode == 0, out.stderr
    assert "1 orphan value files" in out.stdout and "1 unverified results" in out.stdout
    assert not value_file.exists()


def test_gc_of_a_missing_cache_creates_nothing(tmp_path: Path) -> None:
    out = nbflow_cli("cache", "gc", env={"NBFLOW_HOME": str(tmp_path / "nowhere")})
    assert out.returncode == 0 and "nothing to collect" in out.stdout
    assert not (tmp_path / "nowhere").exists()


def test_gc_names_the_home_of_a_cache_from_before_signer_files(tmp_path: Path) -> None:
    old_home = tmp_path / "old-home"
    shutil.copytree(FIXTURES / "caches" / "v1-home", old_home)
    # git keeps no 0600 mode; a secret others can read is refused (docs/security.md).
    os.chmod(old_home / "secret.key", 0o600)
    out = nbflow_cli(
        "cache",
        "gc",
        "--cache-dir",
        str(old_home / "cache"),
        env={"NBFLOW_HOME": str(tmp_path / "new-home")},
    )
    assert out.returncode == 2 and "3 results cannot be judged" in out.stderr
    assert f"NBFLOW_HOME={old_home} nbflow cache gc" in out.stderr
    assert not (tmp_path / "new-home").exists()
    out = nbflow_cli(
        "cache", "gc", "--cache-dir", str(old_home / "cache"), env={"NBFLOW_HOME": str(old_home)}
    )
    assert out.returncode == 0 and "removed 0 results" in out.stdout

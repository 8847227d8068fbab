"""Crash safety and concurrency with real processes: SIGKILL mid-write, two runs at once;
corrupt value files that heal; a full disk."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import nbflow as nf
from nbflow import Pipeline
from nbflow.core.cache import valuefile
from nbflow.core.cache.store import INLINE_LIMIT, DiskStore

from ...conftest import FIXTURES, Calls

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


# --- corrupt value files heal (issue 22: 9) -----------------------------------


def _big_pipeline(cache: Path, calls: Calls) -> Pipeline:
    def big():
        calls("big")
        return np.arange(INLINE_LIMIT, dtype=np.float64)

    pipe = Pipeline("heal", cache_dir=cache)
    pipe.task(big)
    pipe.task(lambda big: float(big.sum()), name="total")
    return pipe


@pytest.mark.parametrize("damage", ["byte-flip", "truncation"])
def test_a_corrupt_value_file_is_replaced_by_the_recompute(
    tmp_path: Path, calls: Calls, damage: str
) -> None:
    expected = float(np.arange(INLINE_LIMIT, dtype=np.float64).sum())
    _big_pipeline(tmp_path / "c", calls).run()
    (value_file,) = (tmp_path / "c" / "values").glob("*/*.nbv")
    good = value_file.read_bytes()
    if damage == "byte-flip":
        data = bytearray(good)
        data[-100] ^= 0xFF
        value_file.write_bytes(bytes(data))
    else:
        value_file.write_bytes(good[: len(good) // 2])

    pipe = _big_pipeline(tmp_path / "c", calls)
    pipe.invalidate("total")
    with pytest.warns(nf.NbflowWarning, match="cached value of task `big` was unusable"):
        assert pipe.run()["total"] == expected
    assert value_file.read_bytes() == good  # the recompute wrote it again, in full
    assert not list((tmp_path / "c" / "tmp").iterdir())

    # Healed: later runs neither warn nor recompute.
    calls.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = _big_pipeline(tmp_path / "c", calls)
        fresh.invalidate("total")
        assert fresh.run()["total"] == expected
    assert calls.count("big") == 0


def test_gc_removes_a_corrupt_value_file_and_its_record(tmp_path: Path, calls: Calls) -> None:
    pipe = _big_pipeline(tmp_path / "c", calls)
    pipe.run()
    (value_file,) = (tmp_path / "c" / "values").glob("*/*.nbv")
    data = bytearray(value_file.read_bytes())
    data[-100] ^= 0xFF
    value_file.write_bytes(bytes(data))
    store = DiskStore(tmp_path / "c")
    assert store.gc(grace=0.0)["corrupt"] == 0  # same size: only a full check sees a flip
    assert store.gc(grace=0.0, verify=True)["corrupt"] == 1
    assert not value_file.exists()
    assert [r["task"] for r in store.records()] == ["total"]
    value_file.parent.mkdir(exist_ok=True)
    value_file.write_bytes(bytes(data[:1000]))  # a truncated file is seen without hashing
    assert store.gc(grace=0.0)["files"] == 1


# --- a full disk (issue 22: 10) -----------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs (we run as root); else a 20 MB per-file limit (RLIMIT_FSIZE)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    if mounted:
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
            # The test may lower the limit; every later test (and process it starts) must
            # not inherit it: a 20 MB limit broke SQLite writes in later tests.
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        return
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 2**20, old_limit[1]))
    try:
        yield folder
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def mounted_tmpfs(folder: Path) -> bool:
    """Is `folder` the 20 MB tmpfs (not the per-file-limit fallback)?"""
    st = os.statvfs(folder)
    return st.f_blocks * st.f_frsize <= 20 * 2**20


def _fill(folder: Path, leave: int) -> Path:
    """Fill `folder`'s file system up to `leave` free bytes."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
        while leave == 0:
            fh.write(b"\0" * 65536)
            fh.flush()
    return filler


def test_a_full_disk_is_an_error_naming_the_folder_and_nothing_half_written_is_kept(
    small_disk: Path,
) -> None:
    cache = small_disk / "cache"
    size = 6 * 2**20

    def big():
        return np.ones(size // 8)

    pipe = Pipeline("full", cache_dir=cache)
    pipe.task(big)
    pipe.task(lambda: "small", name="small")
    if mounted_tmpfs(small_disk):
        filler = _fill(small_disk, leave=3 * 2**20)
    else:  # the RLIMIT_FSIZE fallback: one file may not pass the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (5 * 2**20, resource.RLIM_INFINITY))
        filler = small_disk / "filler"
    with pytest.raises(nf.CacheError, match=f"no room in cache folder `{cache}`.*6,29"):
        pipe.run()
    assert not list((cache / "tmp").iterdir())
    assert not list((cache / "values").glob("*/*.nbv"))
    assert all(r["task"] != "big" for r in DiskStore(cache).records())

    filler.unlink(missing_ok=True)
    if not mounted_tmpfs(small_disk):
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 2**20, resource.RLIM_INFINITY))
    r = Pipeline("full", cache_dir=cache)
    r.task(big)
    r.task(lambda: "small", name="small")
    result = r.run()
    assert "big" in result.executed and result["big"].nbytes == size
    pipe.store.close()


def test_a_full_database_is_an_error_and_the_cache_survives_it(small_disk: Path) -> None:
    if not mounted_tmpfs(small_disk):
        pytest.skip("needs the tmpfs: a per-file limit does not fill SQLite's journal")
    cache = small_disk / "cache"
    pipe = Pipeline("db", cache_dir=cache)
    pipe.task(lambda: "first", name="first")
    pipe.run()
    filler = _fill(small_disk, leave=0)
    pipe.task(lambda: "x" * 100_000, name="second")
    with pytest.raises(nf.CacheError, match=f"no room in cache folder `{cache / 'meta'}`"):
        pipe.run()
    filler.unlink()
    again = Pipeline("db", cache_dir=cache)
    again.task(lambda: "first", name="first")
    again.task(lambda: "x" * 100_000, name="second")
    result = again.run()
    assert result.cached == ["first"] and result.executed == ["second"]
    pipe.store.close()
    again.store.close()


class _ShortWriter:
    """A writer that takes at most `most` bytes per call, as write() may (and does past 2 GiB)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.out = bytearray()
        self.calls: list[int] = []

    def __call__(self, chunk: memoryview) -> int:
        taken = bytes(chunk[: self.most])
        self.calls.append(len(chunk))
        self.out += taken
        return len(taken)


def test_the_write_loop_writes_every_byte_through_short_writes() -> None:
    data = np.random.default_rng(0).integers(0, 255, size=3 * valuefile.CHUNK + 17, dtype=np.uint8)
    writer = _ShortWriter(most=1_000_003)
    assert valuefile.write_all(writer, memoryview(data)) == data.nbytes
    assert bytes(writer.out) == data.tobytes()
    # No single call is offered more than CHUNK bytes: far below Linux's 2 GiB per-call limit.
    assert max(writer.calls) <= valuefile.CHUNK < 2_147_479_552


def test_a_writer_that_takes_nothing_is_a_full_disk() -> None:
    with pytest.raises(OSError) as info:
        valuefile.write_all(_ShortWriter(most=0), memoryview(b"abc"))
    assert info.value.errno == errno.ENOSPC

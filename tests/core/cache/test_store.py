"""The cache store: private folders, signed records, checked values, garbage collection."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import warnings
from pathlib import Path

import diskcache
import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow import Pipeline
from nbflow.core.cache.store import INLINE_LIMIT, DiskStore

from ...conftest import FIXTURES, Calls


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_folders_are_private_and_the_secret_is_0600(pipe: Pipeline, home: Path) -> None:
    pipe.task(lambda: 1, name="a")
    pipe.run()
    for folder in [home, home / "cache", home / "cache" / "values", home / "cache" / "meta"]:
        assert mode(folder) == 0o700, folder
    assert mode(home / "secret.key") == 0o600


def test_small_values_inline_large_values_as_files(pipe: Pipeline, home: Path) -> None:
    pipe.task(lambda: "small", name="small")
    pipe.task(lambda: np.arange(INLINE_LIMIT, dtype=np.int64), name="large")
    pipe.run()
    info = pipe.store.info()
    assert info["records"] == 2 and info["value_files"] == 1
    assert info["value_bytes"] > INLINE_LIMIT * 8
    r = pipe.run()
    assert r.cached == ["small", "large"]
    np.testing.assert_array_equal(r["large"], np.arange(INLINE_LIMIT, dtype=np.int64))


def test_dataframes_round_trip(pipe: Pipeline) -> None:
    df = pd.DataFrame({"x": np.arange(100_000), "y": ["a"] * 100_000})
    pipe.task(lambda: df, name="df")
    pipe.run()
    pd.testing.assert_frame_equal(pipe.run()["df"], df)


def test_tampered_record_is_a_miss_with_a_warning(pipe: Pipeline, calls: Calls) -> None:
    @pipe.task
    def a():
        calls("a")
        return 1

    pipe.run()
    store = pipe.store
    for key in list(store._meta.iterkeys()):
        if key.startswith(("r:test:", "index:test")):
            raw = store._meta.get(key)
            store._meta.set(key, raw[:-5] + b"XXXXX")  # edit the pickle, keep the old signature
    with pytest.warns(nf.NbflowWarning, match="bad signature"):
        r = pipe.run()
    assert r.executed == ["a"] and calls.count("a") == 2


def test_tampered_value_file_is_never_unpickled(
    pipe: Pipeline, calls: Calls, tmp_path: Path
) -> None:
    @pipe.task
    def big():
        calls("big")
        return np.ones(INLINE_LIMIT, dtype=np.float64)

    pipe.task(lambda big: float(big.sum()), name="total")
    pipe.run()
    (value_file,) = pipe.store.values_dir.glob("*/*.nbv")
    data = bytearray(value_file.read_bytes())
    data[-8:] = np.float64(1e9).tobytes()
    value_file.write_bytes(bytes(data))
    pipe.invalidate("total")
    with pytest.warns(nf.NbflowWarning, match="cached value of task `big` was unusable"):
        r = pipe.run()
    assert r["total"] == float(INLINE_LIMIT)
    assert calls.count("big") == 2


def test_foreign_home_entries_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "shared"
    p1 = Pipeline("p", cache_dir=cache)
    p1.task(lambda: 1, name="a")
    p1.run()
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "other-home"))
    p2 = Pipeline("p", cache_dir=cache)
    p2.task(lambda: 1, name="a")
    with pytest.warns(nf.NbflowWarning, match="another nbflow home"):
        assert p2.run().executed == ["a"]


def test_gc_removes_orphans_and_enforces_size_limit(tmp_path: Path) -> None:
    pipe = Pipeline("gc", cache_dir=tmp_path / "c", size_limit=3 * INLINE_LIMIT * 8)
    for i in range(5):
        pipe.task(lambda i=i: np.full(INLINE_LIMIT, i, dtype=np.int64), name=f"v{i}")
    pipe.run()
    info = pipe.store.info()
    assert info["records"] <= 2 and info["value_files"] == 5  # files wait for the grace period
    assert pipe.store.gc(grace=0.0)["files"] == 5 - info["records"]
    remaining = sorted(r["task"] for r in pipe.store.records())
    assert remaining == ["v3", "v4"]  # the oldest were evicted first
    assert pipe.run(["v4"]).cached == ["v4"]


def test_clear_cache_removes_only_that_pipeline(tmp_path: Path) -> None:
    a, b = Pipeline("a"), Pipeline("b")
    a.task(lambda: 1, name="x")
    b.task(lambda: 2, name="x")
    a.run()
    b.run()
    assert a.clear_cache() == 1
    assert a.status()["x"].state == "never-run" and b.status()["x"].state == "fresh"


def test_store_survives_reopening(tmp_path: Path) -> None:
    s1 = DiskStore(tmp_path / "c")
    s1.close()
    s2 = DiskStore(tmp_path / "c")
    assert s2.info()["records"] == 0


def test_private_folders_are_private_all_the_way_down(tmp_path: Path) -> None:
    from nbflow.core.home import ensure_private_dir

    tmp_path.chmod(0o755)
    ensure_private_dir(tmp_path / "home" / "runs" / "job")
    for folder in (
        tmp_path / "home",
        tmp_path / "home" / "runs",
        tmp_path / "home" / "runs" / "job",
    ):
        assert mode(folder) == 0o700, folder
    assert mode(tmp_path) == 0o755  # a folder that existed keeps its mode


# --- attacks on the metadata database (issue 22: 1, 6, 7) ---------------------


class _TouchOnUnpickle:
    """Unpickling this creates `path`: the proof that a planted pickle's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.path,))


def test_a_raw_pickle_planted_on_the_index_key_is_never_unpickled(
    pipe: Pipeline, calls: Calls, tmp_path: Path
) -> None:
    @pipe.task
    def a():
        calls("a")
        return 1

    pipe.run()
    marker = tmp_path / "pwned"
    # A plain diskcache on the same folder, in its default (pickle) mode: what an
    # attacker who can write the database file would do.
    planted = diskcache.Cache(str(pipe.store.directory / "meta"))
    planted.set("index:test", _TouchOnUnpickle(marker))
    planted.set("state:test", _TouchOnUnpickle(marker))
    planted.set(("a", "pickled", "key"), b"x")  # a key diskcache stores pickled
    planted.close()
    assert not marker.exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = pipe.run()
    assert not marker.exists(), "the planted pickle was unpickled: its code ran"
    assert any("not signed bytes" in str(w.message) for w in caught), caught
    assert r.ok and r["a"] == 1
    pipe.store.info()
    pipe.store.gc()
    pipe.clear_cache()
    assert not marker.exists()


def test_records_swapped_between_keys_are_refused(tmp_path: Path, home: Path, calls: Calls) -> None:
    def a():
        calls("a")
        return "value of a"

    def b():
        calls("b")
        return "value of b"

    pipe = Pipeline("swap", cache_dir=tmp_path / "c")
    pipe.task(a)
    pipe.task(b)
    pipe.run()
    key_a, key_b = pipe.store.index("swap")["a"]["key"], pipe.store.index("swap")["b"]["key"]
    pipe.store.close()
    # Swap the two signed rows in the real database file, as an attacker would.
    db = sqlite3.connect(tmp_path / "c" / "meta" / "cache.db")
    rows = {k: v for k, v in db.execute("SELECT key, value FROM Cache WHERE key LIKE 'r:swap:%'")}
    name_a, name_b = f"r:swap:{key_a}", f"r:swap:{key_b}"
    db.execute("UPDATE Cache SET value = ? WHERE key = ?", (rows[name_b], name_a))
    db.execute("UPDATE Cache SET value = ? WHERE key = ?", (rows[name_a], name_b))
    db.commit()
    db.close()

    again = Pipeline("swap", cache_dir=tmp_path / "c")
    again.task(a)
    again.task(b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = again.run()
        assert r["a"] == "value of a" and r["b"] == "value of b"
    assert any("bad signature" in str(w.message) for w in caught), caught
    assert calls.count("a") == 2 and calls.count("b") == 2


def test_pipelines_whose_names_prefix_each_other_stay_apart(tmp_path: Path) -> None:
    cache = tmp_path / "shared"
    pipes = {name: Pipeline(name, cache_dir=cache) for name in ("sales", "sales2", "sales:eu")}
    for name, p in pipes.items():
        p.task(lambda name=name: f"total of {name}", name="total")
        p.task(lambda total: total.upper(), name="report")
        p.run()
    pipes["sales2"].invalidate("report")
    assert pipes["sales2"].status()["report"].state == "stale"

    assert pipes["sales"].clear_cache() == 2
    assert pipes["sales"].status()["total"].state == "never-run"
    # sales:eu keeps its results, sales2 keeps its results and its invalidation.
    assert pipes["sales:eu"].run().cached == ["total", "report"]
    assert pipes["sales:eu"].run()["total"] == "total of sales:eu"
    assert pipes["sales2"].status()["total"].state == "fresh"
    assert pipes["sales2"].status()["report"].state == "stale"
    assert DiskStore(cache).info()["pipelines"] == {"sales2": 2, "sales:eu": 2}


def test_a_cache_written_before_keys_were_escaped_and_bound_is_still_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written by nbflow before this change (NBS1 signatures, unescaped keys): records of
    # `sales`, `sales2` and `sales:eu`, and an invalidation in the state of `sales2`.
    old_home = tmp_path / "old-home"
    shutil.copytree(FIXTURES / "caches" / "v1-home", old_home)
    # git keeps no 0600 mode; a secret others can read is refused (docs/security.md).
    os.chmod(old_home / "secret.key", 0o600)
    monkeypatch.setenv("NBFLOW_HOME", str(old_home))
    store = DiskStore(old_home / "cache")
    for name in ("sales", "sales2", "sales:eu"):
        entry = store.index(name)["x"]
        assert store.load(entry) == f"value of {name}"
    assert store.pipeline_state("sales2")["invalidated"] == {"x": "invalidated by hand"}
    assert store.clear("sales") == 1
    assert store.index("sales") == {} and store.index("sales:eu") != {}
    assert store.pipeline_state("sales2")["invalidated"]
    assert store.clear("sales:eu") == 1 and store.info()["pipelines"] == {"sales2": 1}


def test_named_bytes_are_signed_with_their_name(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "c")
    store.put_bytes("memo", "f:1", b'{"x": 1}')
    store.put_bytes("memo", "f:2", b'{"x": 2}')
    assert store.get_bytes("memo", "f:1") == b'{"x": 1}'
    assert store.get_bytes("memo", "missing") is None
    # Moving one signed entry onto the other's key is refused.
    raw = store._meta.get("b:memo:f%3A1")
    store._meta.set("b:memo:f%3A2", raw)
    with pytest.warns(nf.NbflowWarning, match="bad signature"):
        assert store.get_bytes("memo", "f:2") is None


def test_a_store_that_reads_its_index_again_sees_what_another_process_wrote(
    tmp_path: Path,
) -> None:
    """The parsed index is reused only while its stored bytes are the same: a run made by
    another process (another store object on the folder) is seen at the next plan, and what
    a caller does to the returned index does not reach the next reader."""
    here, there = Pipeline("p", cache_dir=tmp_path / "c"), Pipeline("p", cache_dir=tmp_path / "c")
    here.task(lambda: 1, name="a")
    there.task(lambda: 1, name="a")
    there.task(lambda a: a + 1, name="b", inputs={"a": "a"})
    here.run()
    first = here.store.index("p")
    assert set(first) == {"a"}
    first.clear()
    assert set(here.store.index("p")) == {"a"}
    assert there.run().executed == ["b"]
    assert set(here.store.index("p")) == {"a", "b"}
    assert here.status()["a"].state == "fresh"

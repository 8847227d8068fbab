"""Freshness decisions and their reasons, traced to the root cause."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nbflow import Pipeline

from ...conftest import Calls
from ..cells import define

ETL = """
import nbflow as nf
pipe = nf.Pipeline("etl")
SCALE = 2

def parse(x):
    return x * SCALE

@pipe.task
def raw(date):
    return [parse(len(date)), 1]

@pipe.task
def clean(raw):
    return [v for v in raw if v]

@pipe.task
def report(clean, title="r"):
    return f"{title}: {sum(clean)}"
"""


def run_etl(source: str, date: str = "2024-01-01", **kwargs):
    ns = define(source)
    pipe: Pipeline = ns["pipe"]
    return pipe, pipe.run(params={"date": date}, **kwargs)


# (what the user did, the edited source, params, reason for `raw`, reason for `report`)
REASONS = [
    ("nothing", ETL, "2024-01-01", None, None),
    (
        "edited a helper",
        ETL.replace("x * SCALE", "x * SCALE + 1"),
        "2024-01-01",
        "code of helper `parse` changed",
        "upstream `raw` is stale (via `clean`): code of helper `parse` changed",
    ),
    (
        "edited a constant",
        ETL.replace("SCALE = 2", "SCALE = 3"),
        "2024-01-01",
        "global `SCALE` changed: 2 → 3",
        "upstream `raw` is stale (via `clean`): global `SCALE` changed: 2 → 3",
    ),
    (
        "changed a parameter",
        ETL,
        "2024-01-02",
        "parameter `date` changed: '2024-01-01' → '2024-01-02'",
        None,
    ),
    (
        "edited the task itself",
        ETL.replace("return [parse(len(date)), 1]", "return [parse(len(date)), 2]"),
        "2024-01-01",
        "code of `raw` changed",
        "upstream `raw` is stale (via `clean`): code of `raw` changed",
    ),
    (
        "edited a comment",
        ETL.replace("return [v for v", "# keep truthy\n    return [v for v"),
        "2024-01-01",
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("what", "source", "date", "raw_reason", "report_reason"), REASONS, ids=[r[0] for r in REASONS]
)
def test_status_names_the_root_cause(what, source, date, raw_reason, report_reason) -> None:
    run_etl(ETL)
    pipe = define(source)["pipe"]
    status = pipe.status(params={"date": date})
    assert (status["raw"].reason or None) == raw_reason
    if report_reason is not None:
        assert status["report"].reason == report_reason
    if raw_reason is None:
        assert status["raw"].state == "fresh"


def test_deciding_freshness_unpickles_nothing() -> None:
    pipe, _ = run_etl(ETL)
    pipe = define(ETL)["pipe"]
    status = pipe.status(params={"date": "2024-01-01"})
    assert [s.state for s in status.values()] == ["fresh"] * 3
    r = pipe.run(params={"date": "2024-01-01"})
    assert r.executed == [] and r.cached == ["raw", "clean", "report"]
    assert pipe.store.loads == 0


def test_early_cutoff_same_bytes_leave_downstream_fresh(calls: Calls) -> None:
    pipe = Pipeline("cutoff")

    def make_raw(offset):
        def raw():
            calls("raw")
            return [1, 2, 3 + offset - offset]  # same value, different code

        return raw

    pipe.task(make_raw(0), name="raw")

    @pipe.task
    def total(raw):
        calls("total")
        return sum(raw)

    pipe.run()
    pipe.task(make_raw(1), name="raw")  # the closure changed: raw reruns
    assert pipe.status()["total"].state == "stale"
    r = pipe.run()
    assert r.executed == ["raw"] and r.cached == ["total"]
    assert calls.names == ["raw", "total", "raw"]


def test_reverting_an_edit_finds_the_older_result() -> None:
    run_etl(ETL)
    edited = ETL.replace("SCALE = 2", "SCALE = 5")
    run_etl(edited)
    pipe, r = run_etl(ETL)
    assert r.executed == []


def test_watched_files(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    pipe = Pipeline("files")
    pipe.task(lambda: data.read_text(), name="load", watch=[str(tmp_path / "*.csv")])
    pipe.run()
    assert pipe.status()["load"].state == "fresh"
    data.write_text("a,b\n1,3\n")
    assert pipe.status()["load"].reason == f"watched file `{data}` changed"
    assert pipe.run().executed == ["load"]


def test_a_watched_file_edited_in_place_with_its_mtime_kept_is_seen(tmp_path: Path) -> None:
    """`cp -p`, `rsync -a` and some checkouts keep a file's mtime (and a one-character edit
    its size): the file's change time, which no user can set back, still moves."""
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    pipe = Pipeline("files-kept-mtime")
    pipe.task(lambda: data.read_text(), name="load", watch=[str(data)])
    assert pipe.run()["load"] == "a,b\n1,2\n"
    before = data.stat()
    data.write_text("a,b\n1,3\n")
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = data.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert pipe.status()["load"].reason == f"watched file `{data}` changed"
    r = pipe.run()
    assert r.executed == ["load"] and r["load"] == "a,b\n1,3\n"


def test_version_ttl_force_invalidate_and_cache_false() -> None:
    pipe = Pipeline("opts")
    pipe.task(lambda: 1, name="a", version="1")
    pipe.task(lambda a: a + 1, name="b", ttl=0.05)
    pipe.task(lambda b: b + 1, name="c")
    pipe.run()
    pipe.task(lambda: 1, name="a", version="2")
    assert pipe.status()["a"].reason == "version changed: 1 → 2"
    pipe.run()
    time.sleep(0.06)
    assert pipe.status()["b"].reason.startswith("expired: cached")
    pipe.run()
    r = pipe.run(force=["c"])
    assert r.executed == ["c"] and r.reasons["c"] == "forced"
    assert pipe.invalidate("b") == ["b", "c"]
    status = pipe.status()
    assert status["a"].state == "fresh"
    assert status["b"].reason == "invalidated"
    assert status["c"].reason == "upstream `b` is stale: invalidated"
    assert pipe.run().executed == ["b", "c"]
    assert pipe.status().stale() == []
    pipe.task(lambda c: c, name="d", cache=False)
    pipe.run()
    assert pipe.status()["d"].reason == "caching is off for this task (cache=False)"


def test_last_attempt_failed_is_the_reason(calls: Calls) -> None:
    pipe = Pipeline("fails")
    flag = Path("fail-flag")
    flag.write_text("1")

    @pipe.task
    def flaky():
        if flag.exists():
            raise ValueError("upstream API down")
        return 1

    r = pipe.run(raise_on_failure=False)
    assert r.states == {"flaky": "failed"}
    assert pipe.explain("flaky") == "stale: last attempt failed: ValueError: upstream API down"
    flag.unlink()
    assert pipe.run().states == {"flaky": "done"}
    assert pipe.explain("flaky").startswith("fresh")


def test_never_run_and_explain() -> None:
    pipe = Pipeline("new")
    pipe.task(lambda: 1, name="a")
    assert pipe.status()["a"].state == "never-run"
    assert pipe.explain("a") == "stale: never run"
    pipe.task(lambda date: date, name="b")
    assert pipe.status()["b"].reason == "needs run parameter `date`"


def test_unfingerprintable_global_always_reruns_and_says_why() -> None:
    ns = define("""
import threading
import nbflow as nf
pipe = nf.Pipeline("volatile")
LOCK = threading.Lock()
@pipe.task
def guarded():
    with LOCK:
        return 1
""")
    pipe = ns["pipe"]
    pipe.run()
    assert pipe.run().executed == ["guarded"]
    assert "always reruns: global `LOCK` cannot be fingerprinted" in pipe.explain("guarded")


def test_edited_middle_task_reruns_exactly_its_downstream() -> None:
    pipe = Pipeline("chain")

    def step(x):
        return x + 1

    pipe.task(lambda: 0, name="t0")
    for i in range(1, 20):
        pipe.task(step, name=f"t{i}", inputs={"x": f"t{i - 1}"})
    pipe.run()

    def step2(x):
        return x + 2

    pipe.task(step2, name="t10", inputs={"x": "t9"})
    r = pipe.run()
    assert r.executed == [f"t{i}" for i in range(10, 20)]
    assert r["t19"] == 20

"""The history file: its schema upgrades in place, and it refuses one newer than this nbflow."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbflow import NbflowError
from nbflow.history import store as st
from nbflow.history.store import MIGRATIONS, VERSION, HistoryStore


def _file_at(path: Path, version: int) -> sqlite3.Connection:
    """A history file as an nbflow of schema `version` left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:version]:
        for statement in step.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_upgrade_from_version_1_keeps_runs_and_adds_log_columns(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    conn = _file_at(path, 1)
    conn.execute(
        "INSERT INTO runs (id, kind, name, started, state) VALUES ('r1', 'pipeline', 'etl', 1.0, 'ok')"
    )
    conn.execute("INSERT INTO tasks (run_id, task, state) VALUES ('r1', 'raw', 'done')")
    conn.close()
    store = HistoryStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == VERSION
    [run] = store.runs()
    assert (run["id"], run["name"], run["output"]) == ("r1", "etl", None)
    [task] = store.tasks(["r1"])["r1"]
    assert (task["task"], task["log_path"], task["log_dropped"]) == ("raw", None, None)
    store.write(tasks=[{"run_id": "r1", "task": "raw", "state": "done", "log_path": "x.log"}])
    assert store.tasks(["r1"])["r1"][0]["log_path"] == "x.log"


def test_a_new_file_is_created_at_the_current_version_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    HistoryStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert path.stat().st_mode & 0o077 == 0


def test_a_newer_file_is_refused_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    _file_at(path, VERSION).execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(NbflowError, match="newer than this nbflow"):
        HistoryStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == VERSION + 1


def test_a_running_run_whose_process_is_gone_reads_as_interrupted(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = HistoryStore(tmp_path / "history.sqlite")
    now = time.time()
    store.write(
        runs=[
            {
                "id": "gone",
                "kind": "pipeline",
                "name": "p",
                "started": now,
                "state": "running",
                "host": store.host,
                "pid": dead.pid,
                "heartbeat": now,
            },
            {
                "id": "alive",
                "kind": "pipeline",
                "name": "p",
                "started": now,
                "state": "running",
                "host": store.host,
                "pid": os.getpid(),
                "heartbeat": now,
            },
            {
                "id": "far",
                "kind": "pipeline",
                "name": "p",
                "started": now - 1000,
                "state": "running",
                "host": "elsewhere",
                "pid": 1,
                "heartbeat": now - 1000,
            },
        ],
        tasks=[{"run_id": "gone", "task": "t", "state": "running"}],
    )
    store.settle_interrupted()
    states = {r["id"]: r["state"] for r in store.runs()}
    assert states == {"gone": "interrupted", "alive": "running", "far": "interrupted"}
    assert store.tasks(["gone"])["gone"][0]["state"] == "interrupted"
    assert st.STALE_AFTER < 1000


def test_upgrade_from_version_2_adds_the_compact_cached_tasks_column(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    conn = _file_at(path, 2)
    conn.execute(
        "INSERT INTO runs (id, kind, name, started, state, output) "
        "VALUES ('r2', 'notebook', 'nb', 1.0, 'ok', 'out.ipynb')"
    )
    conn.close()
    store = HistoryStore(path)
    [run] = store.runs()
    assert (run["output"], run["cached_tasks"]) == ("out.ipynb", None)
    store.write(runs=[{**run, "cached_tasks": [["t", "k", "d", 3, None]]}])
    [task] = store.tasks(["r2"])["r2"]
    assert (task["task"], task["state"], task["key"], task["size"]) == ("t", "cached", "k", 3)


def test_upgrade_from_version_3_adds_the_graph_column(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    conn = _file_at(path, 3)
    conn.execute(
        "INSERT INTO runs (id, kind, name, started, state) VALUES ('r3', 'pipeline', 'p', 1.0, 'ok')"
    )
    conn.close()
    store = HistoryStore(path)
    [run] = store.runs()
    assert run["id"] == "r3" and run["graph"] is None  # kept, drawn without edges
    graph = {"tasks": ["a", "b"], "edges": [["a", "b"]]}
    store.write(runs=[{**run, "graph": graph}])
    assert store.runs()[0]["graph"] == graph


def test_upgrade_from_version_4_adds_the_outputs_column_and_the_names_index(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.sqlite"
    conn = _file_at(path, 4)
    conn.execute(
        "INSERT INTO runs (id, kind, name, started, state) VALUES ('r4', 'notebook', 'nb', 2.0, 'ok')"
    )
    conn.close()
    store = HistoryStore(path)
    [run] = store.runs()
    assert run["id"] == "r4" and run["outputs"] is None
    plan = (
        sqlite3.connect(path)
        .execute(
            "EXPLAIN QUERY PLAN SELECT name, max(started) FROM runs WHERE kind = 'notebook' GROUP BY name"
        )
        .fetchall()
    )
    assert any("runs_by_kind_name" in str(row) for row in plan)
    store.write(runs=[{**run, "outputs": {"rows": 3}}])
    assert store.runs()[0]["outputs"] == {"rows": 3}


def test_upgrade_from_version_6_adds_status_snapshots_and_keeps_the_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.sqlite"
    conn = _file_at(path, 6)
    conn.execute(
        "INSERT INTO runs (id, kind, name, started, ended, state, graph) VALUES ('r6', "
        """'pipeline', 'etl', 1.0, 2.0, 'ok', '{"tasks": ["a", "b"], "edges": [["a", "b"]]}')"""
    )
    conn.execute("INSERT INTO tasks (run_id, task, state) VALUES ('r6', 'a', 'done')")
    conn.execute("INSERT INTO key_parts (key, parts) VALUES ('k', '{}')")
    conn.close()
    store = HistoryStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == VERSION == 7
    [run] = store.runs()
    assert (run["id"], run["graph"]["edges"]) == ("r6", [["a", "b"]])
    assert [t["task"] for t in store.tasks(["r6"])["r6"]] == ["a"]
    assert store.parts_of(["k"]) == {"k": ({}, {})}
    assert store.snapshot("etl") is None
    # A run snapshot takes its tasks and edges from its run's graph; a status one has its own.
    store.write(
        snapshots=[
            {"pipeline": "etl", "taken": 2.0, "origin": "run", "run_id": "r6", "host": "h",
             "pid": 1, "verdicts": {"b": ["stale", "always reruns: x", ""]}},
        ]
    )  # fmt: skip
    snap = store.snapshot("etl")
    assert snap is not None
    assert (snap["tasks"], snap["edges"], snap["verdicts"]) == (
        ["a", "b"],
        [["a", "b"]],
        {"b": ["stale", "always reruns: x", ""]},
    )
    store.write(
        snapshots=[
            {"pipeline": "etl", "taken": 3.0, "origin": "status", "host": "h", "pid": 2,
             "source": "/x.py", "tasks": ["a"], "edges": [], "verdicts": {}},
            {"pipeline": "other", "taken": 1.0, "origin": "status", "tasks": [], "edges": [],
             "verdicts": {}},
        ]
    )  # fmt: skip
    assert store.snapshot("etl")["pid"] == 2  # type: ignore[index]
    # A prune keeps the newest snapshot of each pipeline; a run snapshot whose run goes keeps
    # that run's graph.
    store.keep_graph_of(["r6"])
    store.delete_runs(["r6"])
    assert store.prune_snapshots() == 1
    assert store.snapshot_count() == 2 and store.snapshot_count("etl") == 1


def test_a_run_snapshot_keeps_its_graph_when_its_run_is_pruned(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite")
    graph = {"tasks": ["a", "b"], "edges": [["a", "b"]]}
    store.write(
        runs=[{"id": "r1", "kind": "pipeline", "name": "p", "started": 1.0, "ended": 2.0,
               "state": "ok", "graph": graph}],
        snapshots=[{"pipeline": "p", "taken": 2.0, "origin": "run", "run_id": "r1",
                    "verdicts": {}}],
    )  # fmt: skip
    store.keep_graph_of(["r1"])
    store.delete_runs(["r1"])
    snap = store.snapshot("p")
    assert snap is not None and (snap["tasks"], snap["edges"]) == (["a", "b"], [["a", "b"]])


def test_upgrade_from_version_5_adds_environments_package_sets_and_key_parts(
    tmp_path: Path, home: Path
) -> None:
    path = home / "history.sqlite"
    home.mkdir(parents=True, exist_ok=True)
    conn = _file_at(path, 5)
    conn.execute(
        "INSERT INTO runs (id, kind, name, started, state, version, cached_tasks) "
        """VALUES ('r3', 'pipeline', 'etl', 1.0, 'ok', '0.0.9', '[["t", "k", "d", 3, null]]')"""
    )
    conn.close()
    store = HistoryStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == VERSION
    [run] = store.runs()
    assert (run["id"], run["env"], run["packages"], run["cached_tasks"][0][1]) == (
        "r3",
        None,
        None,
        "k",
    )
    store.write(
        runs=[{**run, "id": "r4", "env": {"python": "3.11"}, "packages": "p1"}],
        package_sets={"p1": {"numpy": "2.0"}},
        key_parts=[("k", {"code": {"function `t`": "c1"}}, {})],
    )
    store.write(package_sets={"p1": {"numpy": "9.9"}})  # kept once: the digest names it
    assert store.package_set("p1") == {"numpy": "2.0"}
    assert store.parts_of(["k", "missing"]) == {"k": ({"code": {"function `t`": "c1"}}, {})}
    # A run of the old file reads without an environment, and a diff says so.
    from nbflow.history.diff import diff_runs

    d = diff_runs("r3", "r4")
    assert any("no environment recorded for run r3" in n for n in d.notes)
    assert any("no package set recorded for run r3" in n for n in d.notes)
    # Pruning the runs that named a package set removes the set.
    store.delete_runs(["r4"])
    assert store.package_set("p1") is None

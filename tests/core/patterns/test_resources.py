"""Resources: injected by name, created once per run and lazily, closed after, out of keys unless versioned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import nbflow as nf
from nbflow import Pipeline

from ...conftest import Calls


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT, balance REAL)")
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?)",
            [(1, "ada", 10.0), (2, "bob", None), (2, "bob", None), (3, "cy", 30.0)],
        )
    conn.close()
    return path


def etl(pipe: Pipeline, calls: Calls, db: Path) -> None:
    def connect():
        calls("connect")
        return sqlite3.connect(db)

    pipe.resource("warehouse", connect)

    @pipe.task
    def extract(warehouse):
        return warehouse.execute("SELECT id, name, balance FROM customers").fetchall()

    @pipe.task
    def transform(extract):
        return sorted({row for row in extract if None not in row})

    @pipe.task
    def load(transform, warehouse):
        warehouse.execute("DROP TABLE IF EXISTS customers_clean")
        warehouse.execute("CREATE TABLE customers_clean (id INTEGER, name TEXT, balance REAL)")
        warehouse.executemany("INSERT INTO customers_clean VALUES (?, ?, ?)", transform)
        return len(transform)


def test_injected_by_name_created_once_and_closed(pipe: Pipeline, calls: Calls, db: Path) -> None:
    etl(pipe, calls, db)
    r = pipe.run()
    assert r["load"] == 2 and calls.names == ["connect"]  # one connection for two tasks
    # The connection was committed and closed after the run: another one sees the rows.
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM customers_clean").fetchone() == (2,)
    conn.close()
    assert pipe.graph().resources == {"extract": ("warehouse",), "load": ("warehouse",)}
    assert pipe.graph().run_params["extract"] == ()


def test_a_cached_run_creates_no_resource(pipe: Pipeline, calls: Calls, db: Path) -> None:
    etl(pipe, calls, db)
    pipe.run()
    calls.reset()
    r = pipe.run()
    assert r.executed == [] and calls.names == []


def test_not_in_the_key_unless_versioned(pipe: Pipeline, calls: Calls, db: Path) -> None:
    etl(pipe, calls, db)
    pipe.run()
    pipe.resource("warehouse", lambda: sqlite3.connect(db))  # another factory: same data
    assert pipe.run().executed == []
    pipe.resource("warehouse", lambda: sqlite3.connect(db), version="v2")
    assert pipe.explain("extract") == "stale: resource `warehouse` version changed: None → v2"
    assert pipe.run().executed == ["extract", "load"]  # transform: same input, cached
    assert pipe.status().stale() == []


def test_generator_and_context_manager_factories_are_closed(pipe: Pipeline, calls: Calls) -> None:
    @pipe.resource
    def session():
        calls("open_session")
        yield {"token": "abc"}
        calls("close_session")

    class Client:
        def __enter__(self):
            calls("enter_client")
            return self

        def __exit__(self, *exc):
            calls("exit_client")

    pipe.resource("client", Client)

    @pipe.task
    def call(session, client):
        calls("call")
        return session["token"]

    assert pipe.run()["call"] == "abc"
    assert calls.names == ["open_session", "enter_client", "call", "exit_client", "close_session"]


def test_only_resources_a_running_task_needs_are_created(pipe: Pipeline, calls: Calls) -> None:
    pipe.resource("used", lambda: calls("used") or 1)
    pipe.resource("unused", lambda: calls("unused") or 2)
    pipe.task(lambda used: used, name="a")
    pipe.task(lambda unused: unused, name="b")
    pipe.run("a")
    assert calls.names == ["used"]


def test_a_failing_factory_fails_the_task_naming_the_resource(pipe: Pipeline) -> None:
    def connect():
        raise ConnectionRefusedError("warehouse is down")

    pipe.resource("warehouse", connect)
    pipe.task(lambda warehouse: 1, name="extract")
    pipe.task(lambda: 2, name="other")
    r = pipe.run(raise_on_failure=False)
    assert r.states == {"extract": "failed", "other": "done"}
    error = r.errors["extract"][0]
    assert str(error) == (
        "resource `warehouse` needed by task `extract` could not be created: "
        "ConnectionRefusedError: warehouse is down"
    )
    assert "warehouse is down" in r.errors["extract"][1]


def test_default_pipeline_and_decorator_form(calls: Calls, db: Path) -> None:
    @nf.resource("warehouse", version="1")
    def connect():
        return sqlite3.connect(db)

    @nf.task
    def count(warehouse):
        return warehouse.execute("SELECT count(*) FROM customers").fetchone()[0]

    assert nf.run()["count"] == 4


def test_a_task_named_like_a_resource_wins(pipe: Pipeline) -> None:
    pipe.resource("config", lambda: {"from": "resource"})
    pipe.task(lambda: {"from": "task"}, name="config")
    pipe.task(lambda config: config["from"], name="use")
    assert pipe.run()["use"] == "task"

"""Seed parity: each pattern of the Airflow / Prefect / Dagster comparison, expressed in nbflow.

The comparison this project grew from (`shared/seed/000_1060064bbfe39948.txt`)
shows a daily customer ETL and the advanced patterns of each tool. One test
per pattern, asserting behaviour: states, values, and what reran. Pieces that
belong to the scheduler (a cron schedule, a file that starts a run) are
expressed as `nbflow.jobs.schedules.Schedule` objects and checked through their
ticks, without running a daemon. `notebooks/from_airflow_prefect_dagster.ipynb`
shows the same patterns in a notebook; the last test runs it with papermill.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

import nbflow as nf
from nbflow import Pipeline
from nbflow.jobs.schedules import Schedule

from .conftest import ROOT, Calls

CUSTOMERS = [
    (1, "ada", 23, 120.0),
    (2, "bob", None, 80.0),
    (3, "cy", 41, 640.0),
    (3, "cy", 41, 640.0),
    (4, "di", 35, 15.0),
]
ORDERS = [
    ("2024-01-01", 1, 10.0),
    ("2024-01-01", 3, 25.0),
    ("2024-01-02", 4, 7.5),
    ("2024-01-03", 1, 12.0),
]


@pytest.fixture
def source_db(tmp_path: Path) -> Path:
    """The operational database the seed's `pd.read_sql("SELECT * FROM customers", conn)` reads."""
    path = tmp_path / "source.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "CREATE TABLE customers (customer_id INTEGER, name TEXT, age INTEGER, balance REAL)"
        )
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", CUSTOMERS)
        conn.execute("CREATE TABLE orders (date TEXT, customer_id INTEGER, amount REAL)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", ORDERS)
    conn.close()
    return path


def read_table(db: Path, query: str) -> pd.DataFrame:
    conn = sqlite3.connect(db)
    try:
        return pd.read_sql(query, conn)
    finally:
        conn.close()


# --- 1. The daily customer ETL (Airflow DAG / Prefect flow / Dagster assets) ------------------


def customer_etl(
    cache_dir: Path,
    source: Path,
    warehouse: Path,
    retry_delay: float = 300.0,
    fail_first: Path | None = None,
) -> Pipeline:
    pipe = Pipeline("customer_etl_pipeline", cache_dir=cache_dir)
    retrying = {"retries": 3, "retry_delay": retry_delay}

    @pipe.task(watch=[str(source)], owner="data-team", tags=["etl", "customers"], **retrying)
    def extract():
        """Extract customer data from the database."""
        if fail_first is not None and fail_first.read_text().count("x") < 2:
            fail_first.write_text(fail_first.read_text() + "x")
            raise ConnectionError("database not reachable yet")
        return read_table(source, "SELECT * FROM customers")

    @pipe.task(**retrying)
    def transform(extract):
        """Clean and transform customer data."""
        return extract.dropna().drop_duplicates()

    @pipe.task(**retrying)
    def load(transform):
        """Load customer data to the warehouse."""
        conn = sqlite3.connect(warehouse)
        with conn:
            transform.to_sql("customers_clean", conn, if_exists="replace", index=False)
        conn.close()
        return len(transform)

    return pipe


def test_daily_customer_etl_with_retries_and_a_2am_schedule(
    tmp_path: Path, source_db: Path
) -> None:
    warehouse = tmp_path / "warehouse.db"
    pipe = customer_etl(tmp_path / "cache", source_db, warehouse)
    r = pipe.run()
    assert r.executed == ["extract", "transform", "load"] and r["load"] == 3
    assert read_table(warehouse, "SELECT count(*) AS n FROM customers_clean")["n"][0] == 3
    assert pipe.run().executed == []  # nothing changed: nothing reruns
    options = pipe.tasks["extract"].options
    assert (options.retries, options.retry_delay, options.owner) == (3, 300.0, "data-team")

    # New rows in the source: the watched database changed, so the ETL reruns.
    conn = sqlite3.connect(source_db)
    with conn:
        conn.execute("INSERT INTO customers VALUES (5, 'ed', 52, 300.0)")
    conn.close()
    assert customer_etl(tmp_path / "cache", source_db, warehouse).run()["load"] == 4

    # The schedule belongs to the scheduler: 2 AM daily, no catch-up, retries 3 after 5 minutes.
    schedule = Schedule(
        "customer_etl_pipeline",
        "customer_etl.ipynb",
        cron="0 2 * * *",
        start=datetime(2024, 1, 1, tzinfo=UTC),
        catchup=False,
        retries=3,
        retry_delay=300,
    )
    assert schedule.next_ticks(datetime(2024, 1, 1, 12, 0, tzinfo=UTC), 3) == [
        datetime(2024, 1, d, 2, 0, tzinfo=UTC) for d in (2, 3, 4)
    ]
    assert not schedule.catchup


def test_retries_recover_a_flaky_extract(tmp_path: Path, source_db: Path) -> None:
    attempts = tmp_path / "attempts"
    attempts.write_text("")
    pipe = customer_etl(
        tmp_path / "cache", source_db, tmp_path / "w.db", retry_delay=0.01, fail_first=attempts
    )
    r = pipe.run()
    assert r.ok and r.attempts["extract"] == 3 and r["load"] == 3


def test_retry_with_exponential_backoff(tmp_path: Path) -> None:
    """Prefect: @task(retries=5, retry_delay_seconds=exponential_backoff(backoff_factor=10))."""
    pipe = Pipeline("api", cache_dir=tmp_path / "cache")
    calls = Calls(tmp_path / "calls")

    @pipe.task(retries=5, retry_delay=10, backoff=2)
    def fetch_api_data(url: str):
        calls("fetch")
        return {"url": url}

    options = pipe.tasks["fetch_api_data"].options
    assert [options.retry_delay_for(n) for n in range(1, 6)] == [10, 20, 40, 80, 160]
    assert pipe.run(params={"url": "https://api.example.com"})["fetch_api_data"]["url"].endswith(
        ".com"
    )


# --- 2. Branching on Monday (Airflow BranchPythonOperator, Prefect if/else) --------------------


def weekly_refresh(cache_dir: Path, calls: Calls, join_rule: str) -> Pipeline:
    pipe = Pipeline("advanced_pipeline", cache_dir=cache_dir)

    @pipe.branch
    def choose_path(execution_date: str):
        if datetime.fromisoformat(execution_date).weekday() == 0:  # Monday
            return "full_refresh"
        return "incremental_update"

    @pipe.task(after=["choose_path"])
    def full_refresh():
        calls("full_refresh")
        return "Full refresh"

    @pipe.task(after=["choose_path"])
    def incremental_update():
        calls("incremental_update")
        return "Incremental"

    pipe.task(
        lambda: "joined",
        name="join",
        after=["full_refresh", "incremental_update"],
        trigger_rule=join_rule,
    )
    return pipe


def test_branching_on_monday_for_a_full_refresh(tmp_path: Path, calls: Calls) -> None:
    pipe = weekly_refresh(tmp_path / "cache", calls, "none_failed_min_one_success")
    monday = pipe.run(params={"execution_date": "2024-01-01"})
    assert (
        monday.states["full_refresh"] == "done" and monday.states["incremental_update"] == "skipped"
    )
    assert monday.states["join"] == "done"
    tuesday = pipe.run(params={"execution_date": "2024-01-02"})
    assert (
        tuesday.states["full_refresh"] == "skipped"
        and tuesday.states["incremental_update"] == "done"
    )
    assert tuesday.reasons["full_refresh"] == "branch `choose_path` chose `incremental_update`"
    assert calls.names == ["full_refresh", "incremental_update"]


# --- 3. A wait-for-upstream sensor (Airflow TimeDeltaSensor) ---------------------------------


def test_wait_for_upstream_sensor(tmp_path: Path, calls: Calls) -> None:
    marker = tmp_path / "upstream_done"
    pipe = Pipeline("sensing", cache_dir=tmp_path / "cache")

    @pipe.sensor(interval=0.02, timeout=3600)  # the seed waits up to one hour
    def wait_for_upstream():
        calls("poke")
        return marker.exists()

    pipe.task(lambda: "extracted", name="extract", after=["wait_for_upstream"])
    threading.Timer(0.15, marker.touch).start()
    r = pipe.run()
    assert r.states == {"wait_for_upstream": "done", "extract": "done"} and calls.count("poke") >= 2
    # In development the condition can be assumed; a sensor that never holds times out.
    calls.reset()
    assert pipe.run(assume={"wait_for_upstream"}).ok and calls.names == []
    marker.unlink()
    pipe.sensor(lambda: marker.exists(), name="wait_for_upstream", interval=0.01, timeout=0.05)
    r = pipe.run(raise_on_failure=False)
    assert r.states == {"wait_for_upstream": "failed", "extract": "upstream_failed"}


# --- 4. Five generated partition tasks (Airflow: a loop creating PythonOperators) --------------


def process_partition(partition_id: int) -> str:
    return f"Processing partition {partition_id}"


def test_five_generated_partition_tasks(tmp_path: Path) -> None:
    pipe = Pipeline("generated", cache_dir=tmp_path / "cache")
    for i in range(5):
        pipe.task(functools.partial(process_partition, i), name=f"process_partition_{i}")
    r = pipe.run()
    assert r.executed == [f"process_partition_{i}" for i in range(5)]
    assert r["process_partition_3"] == "Processing partition 3"
    # Regenerating with one more task runs only the new one.
    pipe.task(functools.partial(process_partition, 5), name="process_partition_5")
    assert pipe.run().executed == ["process_partition_5"]


# --- 5. A join with trigger rule all_success ---------------------------------------------------


def test_join_with_trigger_rule_all_success(tmp_path: Path, calls: Calls) -> None:
    # After a branch, all_success skips the join (as in Airflow): one path was skipped.
    pipe = weekly_refresh(tmp_path / "cache", calls, "all_success")
    r = pipe.run(params={"execution_date": "2024-01-01"})
    assert (
        r.states["join"] == "skipped"
        and r.reasons["join"] == "upstream `incremental_update` skipped"
    )
    # Without a branch, all_success runs the join once every upstream succeeded, and fails it
    # when one failed.
    plain = Pipeline("join", cache_dir=tmp_path / "cache")
    plain.task(lambda: 1, name="a")
    plain.task(lambda: 2, name="b")
    plain.task(lambda a, b: a + b, name="join", trigger_rule="all_success")
    assert plain.run()["join"] == 3
    plain.task(lambda: 1 / 0, name="b")
    r = plain.run(raise_on_failure=False)
    assert r.states["join"] == "upstream_failed"


# --- 6. process_customer.map([1, 2, 3, 4, 5]) (Prefect) ------------------------------------------


def test_process_customer_map(tmp_path: Path, calls: Calls) -> None:
    pipe = Pipeline("parallel_customer_processing", cache_dir=tmp_path / "cache")

    @pipe.task(map="customer_id", inputs={"customer_id": "customer_ids"})
    def process_customer(customer_id: int):
        calls(str(customer_id))
        return f"Processed customer {customer_id}"

    pipe.task(lambda: [1, 2, 3, 4, 5], name="customer_ids")
    r = pipe.run(executor="threads", max_workers=5)
    assert r["process_customer"] == [f"Processed customer {i}" for i in range(1, 6)]
    assert sorted(r.map_states["process_customer"].values()) == ["done"] * 5
    pipe.task(lambda: [1, 2, 3, 4, 5, 6], name="customer_ids")
    r = pipe.run()
    assert r.map_executed["process_customer"] == [5] and calls.count("6") == 1
    assert sorted(calls.names) == ["1", "2", "3", "4", "5", "6"]


# --- 7. Sub-flows composed into a main flow (Prefect) ------------------------------------------


def test_subflows_compose_into_a_main_flow(tmp_path: Path, source_db: Path, calls: Calls) -> None:
    cache = tmp_path / "cache"
    extract_flow = Pipeline("extract_flow", cache_dir=cache)

    @extract_flow.task(watch=[str(source_db)])
    def extract_customers():
        calls("extract")
        return read_table(source_db, "SELECT * FROM customers")

    transform_flow = Pipeline("transform_flow", cache_dir=cache)

    @transform_flow.task
    def transform_customers(data):
        calls("transform")
        return data.dropna().drop_duplicates()

    main = Pipeline("main_etl_flow", cache_dir=cache)
    main.subpipeline(extract_flow, name="data")
    main.subpipeline(transform_flow, name="clean_data", inputs={"data": "raw"})
    main.task(lambda data: data["extract_customers"], name="raw")
    main.task(lambda clean_data: len(clean_data["transform_customers"]), name="load_customers")
    r = main.run()
    assert r["load_customers"] == 3 and calls.names == ["extract", "transform"]
    r = main.run()
    assert r.states["load_customers"] == "cached" and calls.names == ["extract", "transform"]


# --- 8. Daily partitioned orders (Dagster DailyPartitionsDefinition) ----------------------------


def test_daily_partitioned_orders(tmp_path: Path, source_db: Path, calls: Calls) -> None:
    pipe = Pipeline("orders", cache_dir=tmp_path / "cache")
    daily_partitions = nf.DailyPartitions(start="2024-01-01", end="2024-01-31")

    @pipe.task(partitions=daily_partitions, watch=[str(source_db)])
    def daily_orders(partition: str):
        calls(partition)
        return read_table(source_db, f"SELECT * FROM orders WHERE date = '{partition}'")

    b = pipe.run(partitions=daily_partitions.range("2024-01-01", "2024-01-03"))
    assert [len(b[d]["daily_orders"]) for d in b] == [2, 1, 1]
    assert calls.names == ["2024-01-01", "2024-01-02", "2024-01-03"]
    r = pipe.run(partition="2024-01-02")
    assert r.states["daily_orders"] == "cached"
    with pytest.raises(
        nf.ParameterError, match="daily partitions run from 2024-01-01 to 2024-01-31"
    ):
        pipe.run(partition="2023-12-31")


# --- 9. Assets with metadata (owner, SLA, checks) and a preview (Dagster) ------------------------


def test_assets_with_metadata_checks_and_a_preview(tmp_path: Path, source_db: Path) -> None:
    pipe = Pipeline("assets", cache_dir=tmp_path / "cache")

    @pipe.task(watch=[str(source_db)])
    def customers_clean():
        return read_table(source_db, "SELECT * FROM customers").dropna().drop_duplicates()

    @pipe.task(
        inputs={"customers": "customers_clean"},
        owner="data-team",
        metadata={"sla_minutes": 60, "data_quality_checks": ["no_nulls", "unique_ids"]},
    )
    def customer_analytics(customers):
        customers = customers.assign(
            age_group=pd.cut(
                customers["age"],
                bins=[0, 18, 30, 50, 100],
                labels=["0-18", "19-30", "31-50", "51+"],
            )
        )
        analytics = customers.groupby("age_group", observed=True).agg(
            customers=("customer_id", "count"), balance=("balance", "sum")
        )
        return nf.Output(
            analytics,
            metadata={
                "num_rows": len(analytics),
                "total_customers": len(customers),
                "preview": analytics.head().to_string(),
            },
        )

    @pipe.check("customers_clean")
    def no_nulls(df):
        return not df.isna().any().any()

    @pipe.check("customers_clean")
    def unique_ids(df):
        dupes = int(df["customer_id"].duplicated().sum())
        return dupes == 0, f"{dupes} duplicate ids"

    r = pipe.run()
    assert r.ok and r.checks["no_nulls"].passed and r.checks["unique_ids"].passed
    meta = r.metadata["customer_analytics"]
    assert meta["num_rows"] == 2 and meta["total_customers"] == 3 and "31-50" in meta["preview"]
    assert pipe.tasks["customer_analytics"].options.metadata["sla_minutes"] == 60
    # The metadata comes back with a cached load, and a failing check stops the downstream.
    assert pipe.run().metadata["customer_analytics"]["num_rows"] == 2
    pipe.task(lambda: read_table(source_db, "SELECT * FROM customers"), name="customers_clean")
    r = pipe.run(raise_on_failure=False)
    assert r.states["customer_analytics"] == "upstream_failed" and not r.checks["no_nulls"].passed


# --- 10. A file sensor that triggers a run (Dagster @sensor + RunRequest) ----------------------


def test_file_sensor_that_triggers_a_run(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    pattern = str(incoming / "customers*.csv")
    # The scheduler's side: a job started by each new or changed file (no daemon here).
    job = Schedule("customer_pipeline_job", "customer_etl.ipynb", when_file=pattern)
    assert job.kind == "file sensor" and "when a file matching" in job.describe_when()
    # Inside a run: a sensor waits for the file and hands its path on.
    pipe = Pipeline("file_triggered", cache_dir=tmp_path / "cache")
    pipe.wait_for_file(pattern, name="new_file", interval=0.02, timeout=10)
    pipe.task(
        lambda new_file: pd.read_csv(new_file[0])["id"].sum(),
        name="load",
        inputs={"new_file": "new_file"},
    )
    threading.Timer(0.1, lambda: (incoming / "customers.csv").write_text("id\n1\n2\n")).start()
    r = pipe.run()
    assert r["new_file"] == [str(incoming / "customers.csv")] and r["load"] == 3


# --- 11. Resources injected by name (Dagster resources) ---------------------------------------


def test_resources_injected_by_name(tmp_path: Path, source_db: Path, calls: Calls) -> None:
    pipe = Pipeline("resources", cache_dir=tmp_path / "cache")

    @pipe.resource("database")
    def database_connection():
        calls("connect")
        conn = sqlite3.connect(source_db)
        yield conn
        calls("close")
        conn.close()

    @pipe.task
    def customers_from_db(database):
        return pd.read_sql("SELECT * FROM customers", database)

    @pipe.task
    def order_totals(database):
        return pd.read_sql(
            "SELECT customer_id, sum(amount) AS total FROM orders GROUP BY 1", database
        )

    r = pipe.run()
    assert len(r["customers_from_db"]) == 5 and len(r["order_totals"]) == 3
    assert calls.names == ["connect", "close"]  # one connection for the run, closed after
    assert pipe.run().executed == [] and calls.names == ["connect", "close"]


# --- the notebook -----------------------------------------------------------------------------


def test_the_seed_parity_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    notebook = ROOT / "notebooks" / "from_airflow_prefect_dagster.ipynb"
    nr = nf.run_notebook(notebook, output=tmp_path / notebook.name, timeout=120, cwd=tmp_path)
    assert nr.ok, nr.error
    assert nr.outputs["patterns"] == 11


def test_scheduled_job_passes_its_logical_date_as_the_partition(home: Path, tmp_path: Path):
    """Issue 7 item 4 with the scheduler: `-p partition "{{ ds }}"`, one cached partition per tick."""
    from click.testing import CliRunner

    from nbflow.cli import cli
    from nbflow.jobs.runstore import RunStore
    from tests.jobs.notebooks import write_notebook

    log = tmp_path / "computed.txt"
    notebook = write_notebook(
        tmp_path / "daily_orders.ipynb",
        parameters='partition = "2024-01-01"  # the day to process',
        cells=[
            "import nbflow as nf\n"
            "pipe = nf.Pipeline('orders')\n"
            "daily = nf.DailyPartitions('2024-01-01', '2024-12-31')\n"
            "@pipe.task(partitions=daily)\n"
            "def daily_orders(partition: str):\n"
            f"    open({str(log)!r}, 'a').write(partition + '\\n')\n"
            "    return {'day': partition, 'orders': int(partition[-2:]) * 10}\n"
            "r = pipe.run(partition=partition)\n"
            "nf.record('executed', r.executed)\n",
        ],
    )

    def nbflow(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    added = nbflow(
        "schedule", "add", "orders", str(notebook), "--cron", "0 2 * * *",
        "-p", "partition", "{{ ds }}",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    done = nbflow("backfill", "orders", "--start", "2024-01-02", "--end", "2024-01-03")
    assert done.exit_code == 0, done.output
    assert log.read_text().split() == ["2024-01-02", "2024-01-03"]
    runs = RunStore().list_runs("orders", oldest_first=True)
    assert [r.parameters["partition"] for r in runs] == ["2024-01-02", "2024-01-03"]
    # Reprocessing the same ticks reuses each partition's cached result.
    again = nbflow(
        "backfill", "orders", "--start", "2024-01-02", "--end", "2024-01-03", "--reprocess", "all"
    )
    assert again.exit_code == 0, again.output
    assert log.read_text().split() == ["2024-01-02", "2024-01-03"]

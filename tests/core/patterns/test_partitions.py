"""Partitions: cached per key, run one or a backfill, unknown keys refused with the valid ones."""

from __future__ import annotations

import datetime as dt

import pytest

import nbflow as nf
from nbflow import Pipeline
from nbflow.core.patterns.partitions import UnknownPartitionError

from ...conftest import Calls

daily = nf.DailyPartitions("2024-01-01", end="2024-01-31")


def orders_pipeline(pipe: Pipeline, calls: Calls) -> None:
    @pipe.task
    def price_list():
        calls("price_list")
        return {"widget": 2.5}

    @pipe.task(partitions=daily)
    def daily_orders(partition: str):
        calls(f"orders:{partition}")
        day = int(partition[-2:])
        return [{"date": partition, "item": "widget", "qty": day}]

    @pipe.task
    def revenue(daily_orders, price_list):
        return sum(o["qty"] * price_list[o["item"]] for o in daily_orders)


def test_one_partition_is_cached_on_its_own(pipe: Pipeline, calls: Calls) -> None:
    orders_pipeline(pipe, calls)
    r = pipe.run(partition="2024-01-03")
    assert r["revenue"] == 7.5 and r["daily_orders"][0]["date"] == "2024-01-03"
    r = pipe.run(partition="2024-01-04")
    assert r.executed == ["daily_orders", "revenue"]  # price_list is shared by all partitions
    assert pipe.run(partition="2024-01-03").executed == []
    assert calls.names == ["price_list", "orders:2024-01-03", "orders:2024-01-04"]


def test_a_backfill_reruns_only_missing_partitions(pipe: Pipeline, calls: Calls) -> None:
    orders_pipeline(pipe, calls)
    pipe.run(partition="2024-01-02")
    calls.reset()
    b = pipe.run(partitions=daily.range("2024-01-01", "2024-01-04"))
    assert isinstance(b, nf.BackfillResult) and b.ok
    assert list(b) == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    assert b["2024-01-02"].executed == [] and b["2024-01-04"]["revenue"] == 10.0
    assert calls.names == ["orders:2024-01-01", "orders:2024-01-03", "orders:2024-01-04"]
    # slice(first, last) and a range of positions select the same way.
    assert list(pipe.run(partitions=slice("2024-01-30", None))) == ["2024-01-30", "2024-01-31"]
    assert list(pipe.run(partitions=range(2))) == ["2024-01-01", "2024-01-02"]


def test_unknown_partitions_are_refused_before_anything_runs(pipe: Pipeline, calls: Calls) -> None:
    orders_pipeline(pipe, calls)
    with pytest.raises(UnknownPartitionError) as info:
        pipe.run(partition="2023-12-31")
    assert str(info.value) == (
        "unknown partition '2023-12-31' of task `daily_orders`; daily partitions run from "
        "2024-01-01 to 2024-01-31, time zone UTC; write keys as 'YYYY-MM-DD'"
    )
    with pytest.raises(UnknownPartitionError, match="'Jan 3'"):
        pipe.run(partitions=["2024-01-01", "Jan 3"])
    assert calls.names == []


def test_a_partitioned_run_needs_a_partition(pipe: Pipeline, calls: Calls) -> None:
    orders_pipeline(pipe, calls)
    with pytest.raises(nf.ParameterError, match=r"task `daily_orders` is partitioned \(daily"):
        pipe.run()
    pipe.task(lambda: 1, name="plain")
    with pytest.raises(nf.ParameterError, match="no task of this run is partitioned"):
        pipe.run("plain", partition="2024-01-01")


def test_static_partitions(pipe: Pipeline) -> None:
    regions = nf.StaticPartitions(["us", "eu", "asia"])

    @pipe.task(partitions=regions)
    def sales(partition):
        return {"us": 3, "eu": 2, "asia": 1}[partition]

    b = pipe.run(partitions=regions.keys())
    assert {k: r["sales"] for k, r in b.items()} == {"us": 3, "eu": 2, "asia": 1}
    with pytest.raises(
        UnknownPartitionError,
        match=r"unknown partition 'euu' of task `sales` \(did you mean `eu`\?\); "
        "valid partitions: us, eu, asia",
    ):
        pipe.run(partition="euu")


def test_daily_partitions_without_end_reach_today() -> None:
    tz = "Pacific/Kiritimati"  # UTC+14: "today" differs from UTC's for part of the day
    today = dt.datetime.now(dt.UTC).astimezone(__import__("zoneinfo").ZoneInfo(tz)).date()
    keys = nf.DailyPartitions(today - dt.timedelta(days=2), tz=tz).keys()
    assert keys[-1] == today.isoformat() and len(keys) == 3


def test_a_partitioned_task_must_take_partition(pipe: Pipeline) -> None:
    with pytest.raises(nf.NbflowError, match="must take a parameter named `partition`"):
        pipe.task(lambda day: day, name="bad", partitions=daily)


def test_default_pipeline_partition(calls: Calls) -> None:
    @nf.task(partitions=daily)
    def daily_orders(partition):
        return partition

    assert nf.run(partition=dt.date(2024, 1, 5).isoformat())["daily_orders"] == "2024-01-05"

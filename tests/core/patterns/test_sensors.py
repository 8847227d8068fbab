"""Sensors: polled until truthy, timeout from the first check, soft fail, assume=, never fresh."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import nbflow as nf
from nbflow import Pipeline, RunFailed
from nbflow.core.patterns.sensors import SensorTimeout

from ...conftest import Calls


def test_polled_until_the_condition_holds(pipe: Pipeline, calls: Calls) -> None:
    @pipe.sensor(interval=0.01, timeout=5)
    def ready():
        calls("check")
        return calls.count("check") >= 3 and "go"

    pipe.task(lambda ready: f"ran after {ready}", name="work")
    r = pipe.run()
    assert r["ready"] == "go" and r["work"] == "ran after go"
    assert calls.count("check") == 3


def test_timeout_fails_and_is_not_retried(pipe: Pipeline, calls: Calls) -> None:
    @pipe.sensor(interval=0.02, timeout=0.1, retries=3)
    def never():
        calls("check")
        return False

    pipe.task(lambda: 1, name="after_it", after=["never"])
    start = time.monotonic()
    with pytest.raises(RunFailed) as info:
        pipe.run()
    assert time.monotonic() - start < 2
    error = info.value.error
    assert isinstance(error, SensorTimeout) and "within 0.1 s" in str(error)
    assert info.value.result.attempts["never"] == 1
    assert info.value.result.states["after_it"] == "upstream_failed"
    assert 4 <= calls.count("check") <= 8  # first check, every 0.02 s, one at the deadline


def test_soft_fail_skips_with_the_reason(pipe: Pipeline) -> None:
    pipe.sensor(lambda: [], name="wait", interval=0.01, timeout=0.03, soft_fail=True)
    pipe.task(lambda: 1, name="after_it", after=["wait"])
    pipe.task(lambda: 2, name="anyway", after=["wait"], trigger_rule="all_done")
    r = pipe.run()
    assert r.ok and r.states["wait"] == "skipped"
    assert r.reasons["wait"].startswith("soft fail: sensor `wait` timed out")
    assert r.states["after_it"] == "skipped" and r.states["anyway"] == "done"


def test_wait_for_file_returns_the_matching_paths(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    nf.wait_for_file(str(incoming / "*.csv"), name="new_file", interval=0.01, timeout=5)

    @nf.task
    def load(new_file):
        return [Path(p).name for p in new_file]

    threading.Timer(0.1, lambda: (incoming / "customers.csv").write_text("id\n1\n")).start()
    r = nf.run()
    assert r["load"] == ["customers.csv"]
    assert r["new_file"] == [str(incoming / "customers.csv")]


def test_sensors_are_never_fresh_but_downstream_can_be(pipe: Pipeline, calls: Calls) -> None:
    pipe.sensor(lambda: "ok", name="s", interval=0.01, timeout=1)

    @pipe.task
    def down(s):
        calls("down")
        return s

    pipe.run()
    r = pipe.run()
    assert r.states["s"] == "done" and r.states["down"] == "cached"
    assert pipe.explain("s") == (
        "stale: always reruns: a sensor re-checks its condition on every run"
    )


def test_assume_marks_a_sensor_satisfied(pipe: Pipeline, calls: Calls) -> None:
    @pipe.sensor(interval=10, timeout=60)
    def wait_for_upstream():
        calls("checked")
        return False

    pipe.task(lambda: "extracted", name="extract", after=["wait_for_upstream"])
    r = pipe.run(assume={"wait_for_upstream"})
    assert r["extract"] == "extracted" and r["wait_for_upstream"] is True
    assert r.reasons["wait_for_upstream"].startswith("assumed satisfied")
    assert calls.names == []
    r = pipe.run(assume={"wait_for_upstream": ["/data/x.csv"]})
    assert r["wait_for_upstream"] == ["/data/x.csv"]


def test_assume_names_a_sensor(pipe: Pipeline) -> None:
    pipe.sensor(lambda: True, name="wait", interval=1)
    pipe.task(lambda: 1, name="extract")
    with pytest.raises(nf.NbflowError, match="`extract` is not a sensor; sensors of .*: wait"):
        pipe.run(assume={"extract"})
    with pytest.raises(nf.UnknownTaskError, match="did you mean `wait`"):
        pipe.run(assume={"wiat"})


def test_bad_interval_is_refused(pipe: Pipeline) -> None:
    with pytest.raises(nf.NbflowError, match="interval must be a positive number"):
        pipe.sensor(lambda: True, name="s", interval=0)


def test_a_sensor_waits_in_a_worker_process(pipe: Pipeline, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    pipe.wait_for_file(str(flag), name="flag_file", interval=0.01, timeout=5)
    threading.Timer(0.2, flag.touch).start()
    r = pipe.run(executor="processes", max_workers=1)
    assert r["flag_file"] == [str(flag)]

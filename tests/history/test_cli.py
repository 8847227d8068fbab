"""`nbflow history`, `history show`, `history prune` and `nbflow logs`, as a user types them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

import nbflow as nf
from nbflow import Pipeline
from nbflow.cli import cli
from nbflow.history.recorder import drain, open_store


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _two_runs(pipe: Pipeline) -> tuple[str, str]:
    @pipe.task
    def raw() -> int:
        print("raw says hi")
        return 1

    @pipe.task
    def clean(raw: int) -> int:
        return raw

    return pipe.run().run_id, pipe.run().run_id


def test_history_lists_one_line_a_run_and_filters(pipe: Pipeline) -> None:
    first, second = _two_runs(pipe)
    out = _invoke("history")
    lines = [line for line in out.splitlines() if first in line or second in line]
    assert len(lines) == 2 and second in lines[0]  # newest first
    assert "2 cached" in lines[0] and "2 done" in lines[1]
    assert second in _invoke("history", "test", "--limit", "1")
    assert first not in _invoke("history", "test", "--limit", "1")
    assert "no failed runs of `test`" in _invoke("history", "test", "--state", "failed")
    data = json.loads(_invoke("history", "--json", "--kind", "pipeline"))
    assert [d["id"] for d in data] == [second, first]
    assert data[1]["tasks"][0]["name"] == "raw"


def test_history_show_and_logs(pipe: Pipeline) -> None:
    first, _ = _two_runs(pipe)
    out = _invoke("history", "show", first[:6])
    assert f"run {first}: pipeline `test` ok" in out
    assert "raw" in out and "never run" in out
    assert json.loads(_invoke("history", "show", first, "--json"))["tasks"][0]["state"] == "done"
    assert _invoke("logs", first) == "--- raw\nraw says hi\n"
    assert _invoke("logs", first, "raw") == "raw says hi\n"


def test_unknown_run_is_an_error_in_nbflow_form(pipe: Pipeline) -> None:
    result = CliRunner().invoke(cli, ["history", "show", "nope"])
    assert result.exit_code == 2
    assert "nbflow: error: no run `nope` in the history" in result.output


def test_prune_removes_old_runs_and_their_logs_never_the_cache(pipe: Pipeline, home: Path) -> None:
    first, second = _two_runs(pipe)
    drain()
    store = open_store()
    old = store.run(first)
    assert old is not None
    store.write(runs=[{**old, "started": time.time() - 40 * 86400}])
    dry = _invoke("history", "prune", "--older-than", "30d", "--dry-run")
    assert f"would remove run {first}" in dry and second not in dry
    assert (home / "logs" / first).is_dir()
    out = _invoke("history", "prune", "--older-than", "30d")
    assert "removed 1 run(s), 1 file(s)" in out
    assert [r.id for r in nf.history()] == [second]
    assert not (home / "logs" / first).exists()
    assert pipe.run().cached == ["raw", "clean"]  # the values the kept run needs are there
    drain()
    assert store.snapshot_count("test") == 2  # the one the last prune kept, and the run's
    _invoke("history", "prune", "--keep", "1")
    assert len(nf.history()) == 1
    # The newest status snapshot stays, the older go.
    assert store.snapshot_count("test") == 1
    snap = store.snapshot("test")
    assert snap is not None and snap["tasks"] == ["raw", "clean"]


def test_the_scheduler_applies_history_keep_days_at_start(pipe: Pipeline, home: Path) -> None:
    """`history.keep_days` prunes old runs each time the scheduler starts; a value under one
    day is refused, since it would drop every run."""
    first, second = _two_runs(pipe)
    drain()
    store = open_store()
    old = store.run(first)
    assert old is not None
    store.write(runs=[{**old, "started": time.time() - 40 * 86400}])
    refused = CliRunner().invoke(cli, ["settings", "set", "history.keep_days", "0"])
    assert refused.exit_code == 2 and "1 or more" in refused.output
    _invoke("settings", "set", "history.keep_days", "30")
    out = _invoke("scheduler", "--once")
    assert "history retention (keep_days 30): removed 1 run(s)" in out
    assert [r.id for r in nf.history()] == [second]
    assert pipe.run().cached == ["raw", "clean"]

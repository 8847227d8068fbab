"""Replay of a cached task's output: `run(replay_output=...)` and `%%task` cells, through the
history of real runs."""

from __future__ import annotations

import logging
import shutil

import nbflow as nf
from nbflow.core import capture
from nbflow.history.api import computed_output


def _pipe(name: str = "replay_etl") -> nf.Pipeline:
    pipe = nf.Pipeline(name)

    @pipe.task
    def clean(n: int) -> int:
        print("cleaning", n, "rows")
        logging.getLogger("etl").warning("3 rows dropped")
        return n - 3

    @pipe.task
    def total(clean: int) -> int:  # prints nothing: nothing to replay
        return clean * 2

    return pipe


def test_a_cached_task_replays_the_output_of_the_run_that_computed_it(home, capsys):
    pipe = _pipe()
    first = pipe.run(params={"n": 10})
    capsys.readouterr()
    again = pipe.run(params={"n": 10}, replay_output=True)
    out = capsys.readouterr().out
    assert again.states == {"clean": "cached", "total": "cached"}
    marker = f"[nbflow] cached `clean`: output of run {first.run_id} ("
    assert marker in out
    after = out.split(marker, 1)[1].split("\n", 1)[1]
    assert after.startswith("cleaning 10 rows\nWARNING etl: 3 rows dropped\n")
    assert "`total`" not in out, "a task that printed nothing replays nothing"


def test_no_replay_by_default_and_only_the_named_tasks(home, capsys):
    pipe = _pipe()
    pipe.run(params={"n": 10})
    capsys.readouterr()
    pipe.run(params={"n": 10})
    assert "[nbflow] cached" not in capsys.readouterr().out
    pipe.run(params={"n": 10}, replay_output=["total"])
    assert "[nbflow] cached" not in capsys.readouterr().out


def test_the_replay_follows_the_cache_key_not_the_last_run(home, capsys):
    pipe = _pipe()
    ten = pipe.run(params={"n": 10})
    pipe.run(params={"n": 20})  # the newest run computed another value
    capsys.readouterr()
    nf_run = pipe.run(params={"n": 10}, replay_output=True)
    out = capsys.readouterr().out
    assert nf_run.states["clean"] == "cached"
    assert f"output of run {ten.run_id}" in out and "cleaning 10 rows" in out
    assert "cleaning 20" not in out


def test_nf_run_on_the_default_pipeline_replays(home, capsys):
    @nf.task
    def loud() -> int:
        print("computing loud")
        return 1

    nf.run()
    capsys.readouterr()
    nf.run(replay_output=True)
    out = capsys.readouterr().out
    assert "[nbflow] cached `loud`: output of run" in out and "computing loud" in out


def test_a_missing_history_is_at_most_a_one_line_note(home, capsys, monkeypatch):
    pipe = _pipe()
    pipe.run(params={"n": 10})
    nf.history()  # written
    shutil.rmtree(home / "logs")  # logs pruned by hand: nothing to show, no error
    capsys.readouterr()
    assert pipe.run(params={"n": 10}, replay_output=True).states["clean"] == "cached"
    assert capsys.readouterr().out == ""

    (home / "history.sqlite").unlink()
    for extra in ("history.sqlite-wal", "history.sqlite-shm"):
        (home / extra).unlink(missing_ok=True)
    assert computed_output("replay_etl", "clean", "anything") is None
    assert pipe.run(params={"n": 10}, replay_output=True).ok
    assert capsys.readouterr().out == ""

    # Without a replay source (the history layer not loaded): one note for the run.
    monkeypatch.setattr(capture, "_replay_source", None)
    pipe.run(params={"n": 10}, replay_output=True)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("[nbflow] no output to replay")


def test_a_history_that_fails_to_read_is_a_note_not_an_error(home, capsys, monkeypatch):
    pipe = _pipe()
    pipe.run(params={"n": 10})
    capsys.readouterr()

    def broken(pipeline: str, task: str, key: str) -> capture.Replayed | None:
        raise OSError("disk gone")

    monkeypatch.setattr(capture, "_replay_source", broken)
    result = pipe.run(params={"n": 10}, replay_output=True)
    assert result.ok
    out = capsys.readouterr().out
    assert (
        out == "[nbflow] no output to replay for cached tasks: could not read the run "
        "history (OSError: disk gone)\n"
    )


def test_output_captured_in_a_worker_process_is_replayed(home, capsys):
    executor = "processes"
    pipe = _pipe("replay_procs")
    first = pipe.run(params={"n": 10}, executor=executor)
    capsys.readouterr()
    pipe.run(params={"n": 10}, replay_output=True)
    out = capsys.readouterr().out
    assert f"output of run {first.run_id}" in out and "cleaning 10 rows" in out

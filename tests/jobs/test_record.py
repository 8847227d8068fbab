"""nf.record: JSON for plain values, side files for the rest, and a dict outside a run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import nbflow as nf
from nbflow.core.errors import JobsError
from nbflow.jobs import record as record_module
from nbflow.jobs.record import RECORD_DIR_ENV, read_records


@pytest.fixture
def record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    monkeypatch.setenv(RECORD_DIR_ENV, str(folder))
    return folder


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


def test_plain_values_travel_as_json_and_others_through_side_files(record_dir: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    nf.record("rows", 123)
    nf.record("nested", {"k": [1, 2.5, None, True, "s"]})
    nf.record("pair", (1, 2))  # JSON would turn it into a list
    nf.record("big", 10**30)
    nf.record("frame", frame)
    nf.record("point", Point(7))
    entries = [json.loads(p.read_text()) for p in sorted(record_dir.glob("*.json"))]
    assert entries[0] == {"name": "rows", "json": 123}
    assert entries[1]["json"] == {"k": [1, 2.5, None, True, "s"]}
    assert "pickle" in entries[2] and entries[2]["type"] == "builtins.tuple"
    assert entries[4]["type"].endswith("DataFrame")
    assert len(list(record_dir.glob("*.pkl"))) == 3  # the tuple, the frame and the point

    outputs = read_records(record_dir)
    assert outputs["rows"] == 123 and outputs["pair"] == (1, 2) and outputs["big"] == 10**30
    pd.testing.assert_frame_equal(outputs["frame"], frame)
    assert isinstance(outputs["point"], Point) and outputs["point"].x == 7
    assert not list(record_dir.glob(".*.tmp"))  # written atomically


def test_floats_that_json_cannot_hold_still_round_trip(record_dir: Path) -> None:
    nf.record("nan", float("nan"))
    nf.record("inf", float("inf"))
    out = read_records(record_dir)
    assert out["nan"] != out["nan"] and out["inf"] == float("inf")


def test_the_last_value_of_a_name_wins(record_dir: Path) -> None:
    nf.record("n", 1)
    nf.record("n", [2])
    assert read_records(record_dir) == {"n": [2]}


def test_outside_a_run_values_stay_in_a_module_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RECORD_DIR_ENV, raising=False)
    monkeypatch.setattr(record_module, "RECORDED", {})
    nf.record("rows", 5)
    assert record_module.RECORDED == {"rows": 5}


def test_unpicklable_values_are_refused_with_the_name(record_dir: Path) -> None:
    import threading

    with pytest.raises(JobsError, match=r"cannot record `lock`: a lock cannot be pickled"):
        nf.record("lock", threading.Lock())
    assert read_records(record_dir) == {}


def test_a_name_must_be_a_non_empty_string(record_dir: Path) -> None:
    with pytest.raises(JobsError, match="non-empty string name"):
        nf.record("", 1)

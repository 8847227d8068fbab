"""Values are digested with their types; equal values digest equal."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbflow import Pipeline
from nbflow.core.cache.hashing import MAX_DEPTH, Unfingerprintable, digest_value
from nbflow.core.errors import format_value_short

DISTINCT = [
    1,
    "1",
    [1],
    (1,),
    1.0,
    True,
    b"1",
    {1},
    frozenset({1}),
    {"1": 1},
    None,
    Decimal("1"),
    dt.date(2024, 1, 1),
    "2024-01-01",
    Path("1"),
    np.int64(1),
    np.array([1]),
    np.array([1], dtype=np.int32),
    np.array([[1]]),
]


def test_values_of_different_types_or_shapes_differ() -> None:
    digests = [digest_value(v) for v in DISTINCT]
    assert len(set(digests)) == len(DISTINCT)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": 1, "y": 2}, {"y": 2, "x": 1}),
        ({3, 1, 2}, {1, 2, 3}),
        (pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"a": [1, 2]})),
        (np.arange(6).reshape(2, 3), np.arange(6).reshape(2, 3).copy(order="F")),
    ],
)
def test_equal_values_digest_equal(a: object, b: object) -> None:
    assert digest_value(a) == digest_value(b)


def test_pandas_objects_count_fully() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    base = digest_value(df)
    changed_cell = df.copy()
    changed_cell.loc[1, "a"] = 2.5
    renamed = df.rename(columns={"b": "c"})
    reindexed = df.set_axis([10, 11])
    retyped = df.astype({"a": "float32"})
    assert len({base, *map(digest_value, [changed_cell, renamed, reindexed, retyped])}) == 5


def test_unpicklable_values_are_reported() -> None:
    with pytest.raises(Unfingerprintable, match="lock"):
        digest_value(threading.Lock())


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_ints_past_pythons_str_limit_are_digested() -> None:
    # repr(10**5000) raises ValueError (the 4,300-digit limit): digested by bytes instead.
    big = 10**5000
    assert digest_value(big) == digest_value(10**5000) != digest_value(big + 1)
    assert digest_value([big]) != digest_value([-big])
    assert format_value_short(big) == "<int of about 5001 digits>"


def test_a_value_nested_past_the_limit_is_refused_naming_the_limit() -> None:
    with pytest.raises(Unfingerprintable) as info:
        digest_value(_nested(5000))
    assert info.value.brief() == (
        f"list: nested more than {MAX_DEPTH} levels deep, nbflow's limit for a digest"
    )
    assert digest_value(_nested(MAX_DEPTH - 1))  # within the limit: fine


def test_deep_and_huge_parameters_are_handled_in_a_run(pipe: Pipeline) -> None:
    @pipe.task
    def size(x: object) -> int:
        if isinstance(x, int):
            return x.bit_length()
        depth = 0
        while isinstance(x, list) and x:
            x, depth = x[0], depth + 1
        return depth

    big = pipe.run(params={"x": 10**5000})
    assert big.ok and pipe.run(params={"x": 10**5000}).executed == []
    deep = pipe.run(params={"x": _nested(5000)})
    assert deep.ok and deep["size"] == 5000
    assert pipe.explain("size", params={"x": _nested(5000)}) == (
        "stale: always reruns: parameter `x` cannot be fingerprinted "
        f"(list: nested more than {MAX_DEPTH} levels deep, nbflow's limit for a digest)"
    )

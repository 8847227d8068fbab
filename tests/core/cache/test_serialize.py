"""Values become a pickle stream plus out-of-band buffers, and come back equal; the digest is of
the bytes; what cannot be pickled is named with its task and type."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from nbflow.core.cache.serialize import deserialize, digest_payload, serialize
from nbflow.core.errors import UnpicklableResult


def test_a_large_array_travels_out_of_band_and_comes_back_equal() -> None:
    value = {"a": np.arange(1_000_000, dtype=np.float64), "b": [1, "x"]}
    payload = serialize(value, "t")
    assert payload.buffers, "a large array's data is an out-of-band buffer, not copied in"
    back = deserialize(payload.stream, payload.buffers)
    assert back["b"] == [1, "x"] and np.array_equal(back["a"], value["a"])


def test_equal_values_have_equal_digests_and_other_values_other_ones() -> None:
    one, same, other = serialize([1, 2], "t"), serialize([1, 2], "t"), serialize([1, 3], "t")
    d = [digest_payload(p.fmt, p.stream, p.buffers) for p in (one, same, other)]
    assert d[0] == d[1] != d[2]
    assert one.digest == d[0], "the payload carries the digest of its own bytes"


def test_a_function_defined_in_main_is_pickled_by_value() -> None:
    namespace: dict = {"__name__": "__main__"}
    exec("def double(x):\n    return 2 * x\n", namespace)
    payload = serialize(namespace["double"], "t")
    assert payload.fmt == "cloudpickle"
    assert deserialize(payload.stream, payload.buffers)(21) == 42


def test_an_unpicklable_value_names_its_task_and_type() -> None:
    with pytest.raises(UnpicklableResult, match="`clean`.*lock") as info:
        serialize({"lock": threading.Lock()}, "clean")
    assert info.value.task == "clean"

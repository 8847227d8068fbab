"""Digests of values, with their types.

A value's digest is the hash of a canonical, type-tagged encoding, so `1`,
`1.0`, `"1"`, `[1]` and `(1,)` all differ, and equal containers hash equal
regardless of dict or set order. NumPy arrays count dtype, shape and bytes;
pandas objects count every value, the index, the column names and dtypes.
Anything else falls back to its pickle; a value that cannot be pickled
either raises `Unfingerprintable`, which the planner turns into "always
rerun" with the reason stated — never a silent guess. A secret
(`nbflow.core.secrets.Secret`, or a `SecretRef`) counts by its name only:
its value never enters a digest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import pathlib
import pickle
import sys
import uuid
from collections.abc import Callable
from typing import Any

from blake3 import blake3

from nbflow.core.secrets import Secret, SecretRef
from nbflow.core.types import Digest


class Unfingerprintable(Exception):
    """Raised when a value has no stable digest (internal; the planner reports it)."""

    def __init__(self, type_name: str, detail: str = "", limit: str = "") -> None:
        self.type_name = type_name
        self.detail = detail
        self.limit = limit
        """The nbflow limit the value exceeds, for messages ("" for an unpicklable value)."""
        super().__init__(f"{type_name}{': ' + detail if detail else ''}")

    def brief(self) -> str:
        """`list: nested more than 200 levels deep, ...` (with the limit), or just the type name."""
        return f"{self.type_name}: {self.limit}" if self.limit else self.type_name


def hash_bytes(*chunks: bytes | str) -> Digest:
    """Digest of a sequence of chunks, each length-prefixed so boundaries count."""
    h = blake3()  # fed chunk by chunk: no list of pieces joined into one more copy
    for chunk in chunks:
        data = chunk.encode() if isinstance(chunk, str) else chunk
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return Digest(h.hexdigest(length=20))


def digest_value(value: Any) -> Digest:
    """Digest of `value` with its type (see the module docstring)."""
    h = blake3()
    _feed(value, h, 0)
    return Digest(h.hexdigest(length=20))


_SCALARS: dict[type, bytes] = {
    type(None): b"N",
    bool: b"b",
    int: b"i",
    float: b"f",
    complex: b"c",
    str: b"s",
}


def _tag(h: Any, tag: bytes, payload: bytes) -> None:
    h.update(tag)
    h.update(len(payload).to_bytes(8, "little"))
    h.update(payload)


MAX_DEPTH = 200
"""How deeply containers may nest in a digested value (a deeper one cannot be fingerprinted:
its task always reruns, saying so, instead of failing with a RecursionError)."""


def _feed(value: Any, h: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        limit = f"nested more than {MAX_DEPTH} levels deep, nbflow's limit for a digest"
        raise Unfingerprintable(type(value).__name__, limit, limit)
    t = type(value)
    if t is Secret or t is SecretRef:
        # A secret counts by its name, never its value: the value must not reach a key
        # (nor anything derived from one), and a resolved value keys as its reference does.
        _tag(h, b"K", value.__nbflow_secret__.encode())
        return
    tag = _SCALARS.get(t)
    if tag is not None:
        if t is str:
            _tag(h, tag, value.encode("utf-8", "surrogatepass"))
        elif t is int and value.bit_length() > 10_000:
            # Past Python's int->str limit (4,300 digits by default) repr() raises:
            # such ints go by their bytes (a tag of their own, so no collision).
            size = (value.bit_length() + 8) // 8
            _tag(h, b"I", value.to_bytes(size, "little", signed=True))
        else:
            _tag(h, tag, repr(value).encode())
        return
    if t is bytes or t is bytearray:
        _tag(h, b"y" if t is bytes else b"Y", bytes(value))
        return
    if t is tuple or t is list:
        h.update(b"(" if t is tuple else b"[")
        h.update(len(value).to_bytes(8, "little"))
        for item in value:
            _feed(item, h, depth + 1)
        return
    if t is dict:
        # Order-insensitive, like dict equality: hash each item, sort the item digests.
        items = sorted(_digest_pair(k, v, depth) for k, v in value.items())
        h.update(b"{")
        h.update(len(items).to_bytes(8, "little"))
        for item in items:
            h.update(item)
        return
    if t is set or t is frozenset:
        elements = sorted(_sub_digest(v, depth) for v in value)
        h.update(b"S" if t is set else b"F")
        h.update(len(elements).to_bytes(8, "little"))
        for element in elements:
            h.update(element)
        return
    module = t.__module__
    if module.startswith("numpy") and "numpy" in sys.modules:
        _feed_numpy(value, h, depth)
        return
    if module.startswith("pandas") and "pandas" in sys.modules:
        _feed_pandas(value, h, depth)
        return
    if isinstance(value, enum.Enum):
        _tag(h, b"E", f"{t.__module__}.{t.__qualname__}.{value.name}".encode())
        return
    if isinstance(
        value,
        dt.datetime
        | dt.date
        | dt.time
        | dt.timedelta
        | decimal.Decimal
        | fractions.Fraction
        | pathlib.PurePath
        | uuid.UUID
        | range,
    ):
        _tag(h, b"T", f"{t.__module__}.{t.__qualname__}:{value!r}".encode())
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _tag(h, b"D", f"{t.__module__}.{t.__qualname__}".encode())
        for f in dataclasses.fields(value):
            _tag(h, b"n", f.name.encode())
            _feed(getattr(value, f.name), h, depth + 1)
        return
    if callable(value) and hasattr(value, "__code__"):
        if _callable_hasher is None:
            raise Unfingerprintable(f"{t.__module__}.{t.__qualname__}", "no code fingerprinter")
        _tag(h, b"L", _callable_hasher(value).encode())
        return
    _feed_pickle(value, h)


_callable_hasher: Callable[[Any], str] | None = None
"""Digests a function given as a value; `nbflow.core.cache.fingerprint` registers its code
fingerprint here when it is imported (digests sit below fingerprints and do not import them)."""


def register_callable_hasher(hasher: Callable[[Any], str]) -> None:
    """Make functions digestible as values, by `hasher` (the code fingerprint)."""
    global _callable_hasher
    _callable_hasher = hasher


def _sub_digest(value: Any, depth: int) -> bytes:
    h = blake3()
    _feed(value, h, depth + 1)
    return h.digest(length=20)


def _digest_pair(key: Any, value: Any, depth: int) -> bytes:
    h = blake3()
    _feed(key, h, depth + 1)
    _feed(value, h, depth + 1)
    return h.digest(length=20)


def _feed_numpy(value: Any, h: Any, depth: int) -> None:
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            _tag(h, b"A", f"object{value.shape}".encode())
            _feed(value.tolist(), h, depth + 1)
            return
        _tag(h, b"A", f"{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
        return
    if isinstance(value, np.generic):
        _tag(h, b"a", value.dtype.str.encode() + value.tobytes())
        return
    _feed_pickle(value, h)


def _feed_pandas(value: Any, h: Any, depth: int) -> None:
    import pandas as pd

    if isinstance(value, pd.DataFrame | pd.Series | pd.Index):
        t = type(value)
        _tag(h, b"P", f"{t.__qualname__}{value.shape}".encode())
        if isinstance(value, pd.DataFrame):
            _feed([str(c) for c in value.columns], h, depth + 1)
            _feed([str(d) for d in value.dtypes], h, depth + 1)
        else:
            _feed([str(value.dtype), str(getattr(value, "name", None))], h, depth + 1)
        try:
            hashed = pd.util.hash_pandas_object(value, index=not isinstance(value, pd.Index))
            h.update(hashed.to_numpy().tobytes())
        except TypeError:
            # Unhashable cells (lists, dicts): fall back to the full pickle.
            _feed_pickle(value, h)
        return
    _feed_pickle(value, h)


def _feed_pickle(value: Any, h: Any) -> None:
    t = type(value)
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception as exc:
        raise Unfingerprintable(f"{t.__module__}.{t.__qualname__}", str(exc)) from None
    _tag(h, b"p", f"{t.__module__}.{t.__qualname__}".encode())
    h.update(data)

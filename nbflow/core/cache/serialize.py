"""Turning task results into bytes and back.

Values are pickled with protocol 5 and out-of-band buffers, so a large
NumPy array or DataFrame is never copied into the pickle stream: its memory
is hashed and written as is, and read back into fresh buffers. Objects that
plain pickle would store by reference to `__main__` (functions and classes
defined in a notebook) are pickled by value with cloudpickle, so another
process can load them. The digest covers the format, the stream and every
buffer; it is computed once, here, and becomes the value's identity for
downstream cache keys (early cutoff).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from nbflow.core.errors import UnpicklableResult
from nbflow.core.types import Digest

PROTOCOL = 5
_PARALLEL_HASH_BYTES = 16 * 2**20


@dataclass(slots=True)
class Payload:
    """A serialized value: a pickle stream plus out-of-band buffers."""

    fmt: str
    """"pickle" or "cloudpickle" (both load with pickle.loads)."""
    stream: bytes
    buffers: list[memoryview]
    digest: Digest
    size: int


def _main_referenced(stream: bytes) -> bool:
    return b"__main__" in stream


def serialize(value: Any, task: str = "?") -> Payload:
    """Pickle `value` for the cache; raise `UnpicklableResult` naming `task` and the type."""
    buffers: list[pickle.PickleBuffer] = []
    fmt = "pickle"
    try:
        stream = pickle.dumps(value, protocol=PROTOCOL, buffer_callback=buffers.append)
        if _main_referenced(stream):
            raise pickle.PicklingError("refers to __main__")
    except Exception as first:
        import cloudpickle

        buffers = []
        fmt = "cloudpickle"
        try:
            stream = cloudpickle.dumps(value, protocol=PROTOCOL, buffer_callback=buffers.append)
        except Exception as exc:
            t = type(value)
            detail = str(exc) or str(first)
            raise UnpicklableResult(task, f"{t.__module__}.{t.__qualname__}", detail) from exc
    views = [b.raw() for b in buffers]
    return Payload(
        fmt,
        stream,
        views,
        digest_payload(fmt, stream, views),
        len(stream) + sum(v.nbytes for v in views),
    )


def digest_payload(fmt: str, stream: bytes | memoryview, buffers: list[memoryview]) -> Digest:
    h = (
        blake3(max_threads=blake3.AUTO)
        if sum(b.nbytes for b in buffers) > _PARALLEL_HASH_BYTES
        else blake3()
    )
    h.update(fmt.encode())
    h.update(len(stream).to_bytes(8, "little"))
    h.update(stream)
    for buf in buffers:
        h.update(buf.nbytes.to_bytes(8, "little"))
        h.update(buf)
    return Digest(h.hexdigest(length=20))


def deserialize(stream: bytes | memoryview, buffers: list[Any]) -> Any:
    return pickle.loads(stream, buffers=buffers)

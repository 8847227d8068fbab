"""The cached-results page: per task, what the cache holds, read without loading values.

The type of a value comes from the first opcodes of its pickle stream (the class the
outermost object is rebuilt from), so listing a pipeline's results unpickles nothing.
Only a DataFrame or Series is ever loaded here, for its preview, through the store's own
`load` (signature and digest checked first, as every load is).
"""

from __future__ import annotations

import pickletools
from typing import Any

from nbflow.core.cache.store import Record
from nbflow.core.errors import NbflowError
from nbflow.ui.queries import Sources, edges_from_cache, seconds, size, when


def cached_results(src: Sources, name: str) -> dict[str, Any]:
    """Per task of pipeline `name`: its latest value's type, size, when and by which run it
    was computed, its upstream and downstream; DataFrames also get a preview."""
    index, edges = edges_from_cache(src, name)
    downstream: dict[str, list[str]] = {}
    upstream: dict[str, list[str]] = {}
    for up, down in edges:
        downstream.setdefault(up, []).append(down)
        upstream.setdefault(down, []).append(up)
    store = src.history
    rows = []
    for task, record in sorted(index.items()):
        by = store.computed_by(name, task, record["key"])
        kind = value_type(src, record)
        rows.append(
            {
                "task": task,
                "type": kind,
                "size": size(record.get("size")),
                "created": when(record.get("created")),
                "duration": seconds(record.get("duration")),
                "run": by["run_id"] if by else None,
                "upstream": upstream.get(task, []),
                "downstream": downstream.get(task, []),
                "key": record["key"],
                "metadata": record.get("metadata") or {},
                "previewable": kind in PREVIEWABLE,
            }
        )
    return {"name": name, "results": rows}


PREVIEWABLE = ("pandas.DataFrame", "pandas.Series")
_OPCODE_TYPES = {
    "EMPTY_DICT": "dict",
    "EMPTY_LIST": "list",
    "EMPTY_TUPLE": "tuple",
    "SHORT_BINUNICODE": "str",
    "BINUNICODE": "str",
    "BININT": "int",
    "BININT1": "int",
    "BININT2": "int",
    "LONG1": "int",
    "BINFLOAT": "float",
    "NONE": "NoneType",
    "NEWTRUE": "bool",
    "NEWFALSE": "bool",
    "SHORT_BINBYTES": "bytes",
    "BINBYTES": "bytes",
    "MARK": "tuple",
}
_NUMPY_REBUILDERS = {"_frombuffer", "_reconstruct"}


def value_type(src: Sources, record: Record) -> str:
    """The type of a cached value, read from its pickle stream's first opcodes: the class
    the outermost object is rebuilt from, without unpickling anything."""
    stream = _stream(src, record)
    if stream is None:
        return "?"
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STACK_GLOBAL" and len(strings) >= 2:
                module, qual = strings[-2], strings[-1]
                if qual in _NUMPY_REBUILDERS and module.startswith("numpy"):
                    return "numpy.ndarray"
                return f"{module.split('.')[0] if module.startswith('pandas') else module}.{qual}"
            if name == "GLOBAL" and isinstance(arg, str):
                return arg.replace(" ", ".")
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") and isinstance(arg, str):
                strings.append(arg)
                if len(strings) > 2:
                    return "str"
                continue
            if name in ("MEMOIZE", "BINPUT", "PUT"):
                continue
            if strings:
                return "str"
            return _OPCODE_TYPES.get(name, "?")
    except ValueError:
        return "?"
    return "str" if strings else "?"


def _stream(src: Sources, record: Record) -> bytes | None:
    """The pickle stream of a record's value: from the record itself when it is small, else
    from the value file's header (the file is mapped; its buffers are not read)."""
    from nbflow.core.cache import valuefile

    if record.get("file"):
        try:
            _fmt, stream, views, _inode = valuefile.read_value(
                src.cache.values_dir / record["file"], record["key"]
            )
        except Exception:
            return None
        for view in views:
            view.release()
        return stream
    full = src.cache.get_record(record["pipeline"], record["key"])
    if full is None or not full.get("inline"):
        return None
    return bytes(full["inline"][0])


def cached_value_preview(src: Sources, name: str, task: str, rows: int = 10) -> dict[str, Any]:
    """Shape, dtypes and the first `rows` rows of a cached DataFrame or Series.

    The value is loaded through the store (signature and digest checked first, as every
    load is); a large value's buffers stay in the mapped file, so only the pages the
    first rows live on are read into memory by pandas."""
    index = src.cache.index(name)
    record = index.get(task)
    if record is None:
        raise NbflowError(f"pipeline `{name}` has no cached value for task `{task}`")
    kind = value_type(src, record)
    if kind not in PREVIEWABLE:
        raise NbflowError(f"task `{task}` of `{name}` holds a {kind}; only DataFrames preview")
    value = src.cache.load(record)
    frame = value.to_frame() if kind == "pandas.Series" else value
    return {
        "shape": " x ".join(map(str, value.shape)),
        "dtypes": [(str(c), str(t)) for c, t in frame.dtypes.items()],
        "head": frame.head(rows).to_html(border=0, classes="preview", escape=True),
    }

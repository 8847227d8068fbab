"""`nf.record(name, value)`: hand a value from inside a notebook run back to the caller.

Policy:
- Inside a run started by `run_notebook`, the kernel's environment carries
  `NBFLOW_RECORD_DIR`, a private folder of that run. Each `record` call writes
  one file there: `<seq>.json` holding the name and, for plain values (str,
  int, finite float, bool, None, and lists / str-keyed dicts of them), the value
  itself as JSON; for anything else (DataFrames, arrays, tuples, objects defined
  in the notebook) the value is pickled (cloudpickle, so notebook-defined
  classes travel) into `<seq>.pkl` first, and the JSON file points to it.
  Files are written to a temporary name and renamed, the side file before the
  JSON that points to it, so a kernel killed mid-write leaves no half record.
- The caller reads the folder back in sequence order (`read_records`); a name
  recorded twice keeps its last value, as a variable would.
- Outside a run (a person running the notebook interactively), `record` keeps
  the value in the module-level dict `RECORDED`, so the same notebook runs
  unchanged in Jupyter, and the values can be looked at there.

The side files are written by the notebook the user asked to run, in a
folder private to the user, so unpickling them trusts nothing more than
running the notebook already did.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import threading
from pathlib import Path
from typing import Any

from nbflow.core.errors import JobsError

__all__ = ["RECORDED", "RECORD_DIR_ENV", "read_records", "record"]

RECORD_DIR_ENV = "NBFLOW_RECORD_DIR"

RECORDED: dict[str, Any] = {}
"""Values recorded outside a run (interactive use), by name."""

_counter = itertools.count()
_lock = threading.Lock()


def record(name: str, value: Any) -> None:
    """Record `value` under `name`: it becomes `run.outputs[name]` of the `run_notebook` call."""
    if not isinstance(name, str) or not name:
        raise JobsError(f"record() needs a non-empty string name, not {name!r}")
    directory = os.environ.get(RECORD_DIR_ENV)
    if not directory:
        RECORDED[name] = value
        return
    folder = Path(directory)
    with _lock:
        seq = f"{next(_counter):06d}"
    entry: dict[str, Any] = {"name": name}
    if _is_plain(value):
        entry["json"] = value
    else:
        import cloudpickle

        try:
            payload = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (
            Exception
        ) as exc:  # pickling runs arbitrary __reduce__ code; any failure means "cannot"
            raise JobsError(
                f"cannot record `{name}`: a {type(value).__name__} cannot be pickled ({exc}); "
                "record plain data instead (e.g. a dict, a list, or a DataFrame)"
            ) from exc
        _write_atomic(folder / f"{seq}.pkl", payload)
        entry["pickle"] = f"{seq}.pkl"
        entry["type"] = f"{type(value).__module__}.{type(value).__qualname__}"
    _write_atomic(folder / f"{seq}.json", json.dumps(entry).encode())


def read_records(directory: Path) -> dict[str, Any]:
    """The values recorded into `directory` by a run, by name (last write wins)."""
    outputs: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")):
        entry = json.loads(path.read_text())
        if "json" in entry:
            outputs[entry["name"]] = entry["json"]
        else:
            with open(directory / entry["pickle"], "rb") as fh:
                try:
                    outputs[entry["name"]] = pickle.load(fh)
                except (ImportError, AttributeError) as exc:
                    raise JobsError(
                        f"the recorded output `{entry['name']}` (a {entry.get('type')}) cannot be "
                        f"loaded here: {exc}; install the same packages the notebook's kernel uses"
                    ) from exc
    return outputs


def _is_plain(value: Any, depth: int = 0) -> bool:
    """True when JSON gives back exactly this value (same types), so no pickle is needed."""
    if depth > 100:
        return False
    t = type(value)
    if value is None or t in (str, int, bool):
        return True
    if t is float:
        return math.isfinite(value)
    if t is list:
        return all(_is_plain(v, depth + 1) for v in value)
    if t is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)

"""`nf.Output`: a task's value with metadata about it (Dagster's `Output(value, metadata=...)`).

A task that returns `nf.Output(df, metadata={"rows": len(df), "preview": ...})`
hands `df` to its downstream tasks and to the cache; the metadata, which
must be JSON-able, is kept beside it:

- in `RunResult.metadata[task]`,
- in the `metadata` field of the `TaskFinished` event (and of `TaskCached`
  when a later run loads the task from the cache: the metadata is stored in
  the cache record, so it is reported without unpickling the value),
- for displays (the DAG widget shows it in the node's tooltip).

The runner recognizes any object with a `__nbflow_output__()` method that
returns `(value, metadata)`; `Output` is the one nbflow provides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nbflow.core.errors import NbflowError


class Output:
    """A task's value plus JSON-able metadata (rows, a preview, anything a person wants to see)."""

    __slots__ = ("metadata", "value")

    def __init__(self, value: Any, metadata: Mapping[str, Any] | None = None) -> None:
        metadata = dict(metadata or {})
        for key, item in metadata.items():
            try:
                json.dumps(item)
            except (TypeError, ValueError) as exc:
                raise NbflowError(
                    f"metadata `{key}` of an nf.Output must be JSON-able (numbers, strings, "
                    f"lists, dicts), not a `{type(item).__name__}`; convert it first, e.g. "
                    "df.head().to_string() for a preview"
                ) from exc
        self.value = value
        self.metadata = metadata

    def __nbflow_output__(self) -> tuple[Any, dict[str, Any]]:
        return self.value, self.metadata

    def __repr__(self) -> str:
        return f"Output({type(self.value).__name__}, metadata={sorted(self.metadata)})"

"""Define code the way a notebook cell does: source registered in linecache, then exec'd."""

from __future__ import annotations

import itertools
import linecache
import textwrap
from typing import Any

_counter = itertools.count()


def define(
    source: str, namespace: dict[str, Any] | None = None, register: bool = True
) -> dict[str, Any]:
    """Execute `source` like an IPython cell (into `namespace`, a fake `__main__`)."""
    source = textwrap.dedent(source)
    filename = f"<cell-{next(_counter)}>"
    if register:
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns = namespace if namespace is not None else {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), ns)
    return ns

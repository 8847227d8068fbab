"""Dynamic mapping: one task, run once per element of a list or dict, each element cached on its own.

`@nf.task(map="items")` marks the parameter `items` as mapped. It is bound
like any parameter (an upstream task, or a run parameter) and its value must
be a list, tuple or range (the task's value is the list of results, in
order) or a dict (the function sees each value; the task's value is a dict
with the same keys). An empty input gives an empty result.

How caching works, per element:

- The mapped task as a whole has an ordinary key (its upstream digests
  include the whole list): when nothing changed it is `cached` and no element
  is looked at.
- Otherwise it is *expanded*. Each element gets an instance key = hash of the
  task's key parts without the mapped input (code fingerprint, version, the
  other parameters and inputs, watched files) and the digest of that element.
  An instance whose key has a record is loaded; the others become jobs for
  the run's executor, so they run in parallel with it. Changing one element
  of a 10,000-element list reruns exactly one instance.
- Instance records live in the store like any record but stay out of the
  pipeline's index (the index lists tasks, and is read on every run).
- Beside the assembled value, a *manifest* record lists each element's
  instance key. The next expansion loads the last value and its manifest
  (two unpickles) and takes every unchanged element from there; only keys
  not in it are looked up one by one (an older result, a reverted edit).
- When every instance has settled, the results are assembled and stored as
  the task's value, whose digest feeds downstream keys (early cutoff).
  If an instance failed (after its retries), the task fails, naming it.

States: `RunResult.map_states[task]` maps each element's label (its index,
or its key for a dict) to `done`, `cached` or `failed`;
`RunResult.map_executed[task]` lists the labels that ran. Listeners receive
`MapExpanded` once, then one `MapInstance` per element, carrying the
index, so a display can group the instances under their task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blake3 import blake3

from nbflow.core.cache.hashing import Unfingerprintable, digest_value
from nbflow.core.errors import MapInputError
from nbflow.core.types import CacheKey


def split(task: str, param: str, value: Any) -> tuple[list[Any], list[Any], bool]:
    """(labels, elements, is_dict) of a mapped input; `MapInputError` for anything else."""
    if isinstance(value, Mapping):
        return list(value.keys()), list(value.values()), True
    if isinstance(value, list | tuple | range):
        return list(range(len(value))), list(value), False
    raise MapInputError(
        f"task `{task}` maps over `{param}`, which must be a list, tuple or dict; "
        f"it received a `{type(value).__name__}`",
        task=task,
    )


def assemble(labels: list[Any], values: list[Any], is_dict: bool) -> Any:
    return dict(zip(labels, values, strict=True)) if is_dict else values


def instance_base(pipeline: str, task: str, parts: Mapping[str, Any], param: str) -> str:
    """Key material shared by every instance: the task's key parts without the mapped input."""
    params = {k: v for k, v in parts.get("params", {}).items() if k != param}
    inputs = {k: v for k, v in parts.get("inputs", {}).items() if k != param}
    material = [
        "nbflow-map-1",
        f"{len(pipeline)}:{pipeline}",
        f"{len(task)}:{task}",
        f"{len(param)}:{param}",
        repr(sorted(parts.get("code", {}).items())),
        repr(parts.get("version")),
        repr(sorted(params.items())),
        repr(sorted((k, tuple(v)) for k, v in inputs.items())),
        repr(sorted(parts.get("files", {}).items())),
        repr(sorted(parts.get("identity", {}).items())),
        repr(sorted(parts.get("resources", {}).items())),
    ]
    return "\x1f".join(material)


def instance_key(base: str, element: Any) -> CacheKey | None:
    """The key of one element's instance, or None when the element cannot be fingerprinted."""
    try:
        d = digest_value(element)
    except Unfingerprintable:
        return None
    return CacheKey(blake3(f"{base}\x1fe={d}".encode()).hexdigest(length=20))


@dataclass(slots=True)
class MapRun:
    """The instances of one mapped task while a run expands it."""

    task: str
    param: str
    labels: list[Any]
    is_dict: bool
    keys: list[CacheKey | None]
    values: list[Any]
    states: list[str]
    pending: int = 0
    duration: float = 0.0
    attempts: int = 1
    executed: list[Any] = field(default_factory=list)
    errors: dict[int, tuple[BaseException, str]] = field(default_factory=dict)
    outputs: dict[int, tuple[str, int]] = field(default_factory=dict)
    """Element index -> what its instance printed (its last attempt), characters dropped."""

    def instance_name(self, index: int) -> str:
        return f"{self.task}[{index}]"

    def label_states(self) -> dict[Any, str]:
        return dict(zip(self.labels, self.states, strict=True))

    def first_error(self) -> tuple[int, BaseException, str]:
        index = min(self.errors)
        error, trace = self.errors[index]
        return index, error, trace

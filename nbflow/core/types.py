"""Distinct string kinds of the engine, so a task name is never passed where a cache key belongs."""

from __future__ import annotations

from typing import NewType

TaskName = NewType("TaskName", str)
"""The name a task is registered under in a pipeline."""

CacheKey = NewType("CacheKey", str)
"""Hex Merkle key of one task invocation: code, parameters, upstream digests, watched files."""

Digest = NewType("Digest", str)
"""Hex digest of serialized bytes or of a value's canonical form."""

TASK_STATES = ("done", "cached", "failed", "skipped", "upstream_failed")
"""Terminal states a task can end a run in (`RunResult.states`)."""

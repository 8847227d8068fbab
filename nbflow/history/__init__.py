"""The run history: every run of every kind remembered, with its tasks and their output.

Layer: knows only `nbflow.core`. Importing it registers the recorder as a default
listener of every run (`nbflow.core.events.add_default_listener`), unless
`$NBFLOW_HISTORY=0`, and registers `api.computed_output` as the replay source of
`run(replay_output=...)` (`nbflow.core.capture.set_replay_source`).

- `store`: the SQLite file (`<home>/history.sqlite`), its schema and upgrades.
- `recorder`: the listener that writes runs in batches; `track_run` for notebook/job runs.
- `records`: `RunRecord`, `TaskRecord`, `Attempt` — what readers get.
- `logs`: captured task output under `<home>/logs`, capped.
- `env`: the environment of a run (Python, platform, packages, source file, git commit).
- `diff`: `diff_runs()`, what differs between two runs (`nf.diff_runs`).
- `api`: `history()`, `last_run()`, `get_run()`.
- `prune`: retention.
- `cli`: the `nbflow history` and `nbflow logs` commands.
"""

from __future__ import annotations

from nbflow.core.capture import set_replay_source
from nbflow.history.api import computed_output, get_run, history, last_run
from nbflow.history.recorder import set_recording, track_run
from nbflow.history.records import Attempt, RunRecord, TaskRecord

# Replay reads what is recorded, so it works with recording switched off too.
set_replay_source(computed_output)

__all__ = [
    "Attempt",
    "RunRecord",
    "TaskRecord",
    "get_run",
    "history",
    "last_run",
    "set_recording",
    "track_run",
]

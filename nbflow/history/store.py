"""The history store: one SQLite file in the home (`history.sqlite`) holding every run.

Policy:

- **WAL, short transactions.** Several processes write into one home at once
  (two kernels, a scheduler, the CLI): WAL lets readers go on while one
  writer commits, and `busy_timeout` makes a writer wait its turn instead of
  failing. A run costs few transactions: one when it starts, one when it
  ends, and between them at most one a second for the task rows finished
  meanwhile (and a heartbeat).
- **Versioned schema, upgraded in place.** `PRAGMA user_version` holds the
  version; `MIGRATIONS[n]` takes a store from version n to n+1 inside one
  transaction, so an old file is upgraded on its first open and keeps its rows.
  A file newer than this nbflow is refused with a message (not rewritten).
- **A run that died never stays `running`.** A reader that finds a run
  `running` whose process is gone (same host) or whose heartbeat is older
  than `STALE_AFTER` seconds (another host) writes it as `interrupted`
  (`settle_interrupted`); the tasks it finished were written before it died.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from nbflow.core.errors import NbflowError

FILENAME = "history.sqlite"
STALE_AFTER = 120.0
"""Seconds without a heartbeat after which a `running` run of another host is `interrupted`."""
HEARTBEAT = 15.0
"""Seconds between heartbeats of a running run."""

RUN_COLUMNS = (
    "id",
    "kind",
    "name",
    "params",
    "partition",
    "started",
    "ended",
    "duration",
    "state",
    "host",
    "pid",
    "version",
    "parent",
    "heartbeat",
    "error",
    "output",
    "cached_tasks",
    "graph",
    "outputs",
    "env",
    "packages",
)
TASK_COLUMNS = (
    "run_id",
    "task",
    "state",
    "cached",
    "reason",
    "attempts",
    "key",
    "digest",
    "size",
    "metadata",
    "checks",
    "error",
    "traceback",
    "started",
    "ended",
    "duration",
    "log_path",
    "log_size",
    "log_dropped",
    "log_limit",
)
_JSON_COLUMNS = frozenset(
    {"params", "attempts", "metadata", "checks", "cached_tasks", "graph", "outputs", "env"}
)
SNAPSHOT_COLUMNS = (
    "pipeline",
    "taken",
    "origin",
    "run_id",
    "host",
    "pid",
    "source",
    "tasks",
    "edges",
    "verdicts",
)
_SNAPSHOT_JSON = frozenset({"tasks", "edges", "verdicts"})

_TASK_JSON = tuple((c, c in _JSON_COLUMNS) for c in TASK_COLUMNS)

MIGRATIONS: list[str] = [
    # 0 -> 1: runs and their tasks, as first shipped.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, params TEXT,
        partition TEXT, started REAL NOT NULL, ended REAL, duration REAL,
        state TEXT NOT NULL, host TEXT, pid INTEGER, version TEXT, parent TEXT,
        heartbeat REAL, error TEXT
    );
    CREATE INDEX runs_by_name ON runs (name, started);
    CREATE INDEX runs_by_started ON runs (started);
    CREATE INDEX runs_by_parent ON runs (parent);
    CREATE TABLE tasks (
        run_id TEXT NOT NULL, task TEXT NOT NULL, state TEXT NOT NULL,
        cached INTEGER NOT NULL DEFAULT 0, reason TEXT, attempts TEXT, key TEXT,
        digest TEXT, size INTEGER, metadata TEXT, checks TEXT, error TEXT, traceback TEXT,
        started REAL, ended REAL, duration REAL,
        PRIMARY KEY (run_id, task)
    );
    """,
    # 1 -> 2: captured output (a log file per task, capped) and a run's output file.
    """
    ALTER TABLE tasks ADD COLUMN log_path TEXT;
    ALTER TABLE tasks ADD COLUMN log_size INTEGER;
    ALTER TABLE tasks ADD COLUMN log_dropped INTEGER;
    ALTER TABLE tasks ADD COLUMN log_limit INTEGER;
    ALTER TABLE runs ADD COLUMN output TEXT;
    """,
    # 2 -> 3: the tasks a run loaded from the cache, kept in one compact JSON column of the
    # run (a cached 1,000-task rerun is one row, not 1,000): [[task, key, digest, size,
    # metadata], ...].
    """
    ALTER TABLE runs ADD COLUMN cached_tasks TEXT;
    """,
    # 3 -> 4: a pipeline run's graph as its `RunStarted` named it, {"tasks": [...in
    # topological order], "edges": [[up, down], ...]}: a report draws the DAG from the
    # history alone (the pipeline may be gone, its cache elsewhere).
    """
    ALTER TABLE runs ADD COLUMN graph TEXT;
    """,
    # 4 -> 5: the dashboard lists the names of one kind with their last start (`names`);
    # a notebook run keeps the values it recorded with `nf.record` (as its parameters are
    # kept: short JSON as it is, anything else as its cut repr).
    """
    CREATE INDEX runs_by_kind_name ON runs (kind, name, started);
    ALTER TABLE runs ADD COLUMN outputs TEXT;
    """,
    # 5 -> 6: the environment of a run (`env`: Python, platform, nbflow, the source file's
    # digest, its git commit) and its installed distributions, stored once per distinct set
    # (`packages` names a row of `package_sets` by digest); and each cache key's parts (code
    # fingerprint parts, parameter and upstream digests), once per key, for run diffs.
    """
    ALTER TABLE runs ADD COLUMN env TEXT;
    ALTER TABLE runs ADD COLUMN packages TEXT;
    CREATE TABLE package_sets (digest TEXT PRIMARY KEY, packages TEXT NOT NULL);
    CREATE TABLE key_parts (key TEXT PRIMARY KEY, parts TEXT NOT NULL, shorts TEXT);
    """,
    # 6 -> 7: status snapshots: the planner's verdict on each task of a pipeline, taken when
    # a run ends (`origin` "run": its tasks and edges are those of run `run_id`'s graph, so
    # `tasks` and `edges` are NULL) or when a kernel computes the status (`origin` "status":
    # `pipe.status()`, `pipe.explain()`, the widget); where from (host, pid, source file).
    # `verdicts` is {task: [state, reason, note]} for each task not plainly fresh (a task of
    # `tasks` it leaves out is fresh, without a note). The dashboard's Pipeline page reads the
    # newest (`snapshot`); a prune keeps only that one per pipeline.
    """
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, taken REAL NOT NULL,
        origin TEXT NOT NULL, run_id TEXT, host TEXT, pid INTEGER, source TEXT,
        tasks TEXT, edges TEXT, verdicts TEXT NOT NULL
    );
    CREATE INDEX snapshots_by_pipeline ON snapshots (pipeline, taken);
    """,
]
VERSION = len(MIGRATIONS)


def upgrade(conn: sqlite3.Connection, path: Path | str = "history") -> int:
    """Bring the schema of `conn` to `VERSION`, one migration per transaction; returns
    the version found. A newer file (written by a newer nbflow) is refused."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > VERSION:
        raise NbflowError(
            f"the run history {path} has schema version {found}, newer than this nbflow "
            f"understands ({VERSION}); upgrade nbflow to read it"
        )
    for version in range(found, VERSION):
        # BEGIN IMMEDIATE: two processes opening an old file upgrade it once, in turn.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current == version:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    return True


def _encode(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS and value is not None:
        return json.dumps(value, default=repr)
    return value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for column in _JSON_COLUMNS & out.keys():
        if out[column] is not None:
            out[column] = json.loads(out[column])
    return out


def _chunks(ids: Sequence[str], size: int = 500) -> Iterator[tuple[list[str], str]]:
    """`ids` in chunks small enough for one statement, each with its "?, ?, ..." marks."""
    for start in range(0, len(ids), size):
        chunk = list(ids[start : start + size])
        yield chunk, ", ".join("?" * len(chunk))


class HistoryStore:
    """One process's connection to the history file of a home; safe to share between threads."""

    def __init__(self, path: Path | str, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.host = socket.gethostname()
        # isolation_level=None: transactions are begun and committed explicitly below.
        self._conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            upgrade(self._conn, self.path)
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass  # a file of another owner fails on the first write, with its own message

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one write transaction (BEGIN IMMEDIATE), under the lock:
        committed when the block ends, rolled back if it raises."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # --- writing -------------------------------------------------------------

    def write(
        self,
        runs: Iterable[dict[str, Any]] = (),
        tasks: Iterable[dict[str, Any]] = (),
        heartbeat: Sequence[str] = (),
        package_sets: Mapping[str, Mapping[str, str]] | None = None,
        key_parts: Iterable[tuple[str, Any, Any]] = (),
        snapshots: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Insert or replace `runs` and `tasks` (dicts of columns) and beat for the runs named
        in `heartbeat`, in one transaction. `package_sets` (digest -> {name: version}) and
        `key_parts` ((key, parts, shorts)) are kept once per digest / key: an existing row
        is left as it is (the digest or key names its content). `snapshots`: status snapshot
        rows to add (dicts of `SNAPSHOT_COLUMNS`)."""
        now = time.time()
        with self._transaction() as conn:
            for run in runs:
                cols = [c for c in RUN_COLUMNS if c in run]
                conn.execute(
                    f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                    f"ON CONFLICT(id) DO UPDATE SET "
                    + ", ".join(f"{c}=excluded.{c}" for c in cols if c != "id"),
                    [_encode(c, run[c]) for c in cols],
                )
            rows = [
                [
                    json.dumps(t[c], default=repr) if j and t.get(c) is not None else t.get(c)
                    for c, j in _TASK_JSON
                ]
                for t in tasks
            ]
            if rows:
                conn.executemany(
                    f"INSERT OR REPLACE INTO tasks ({', '.join(TASK_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(TASK_COLUMNS))})",
                    rows,
                )
            if package_sets:
                conn.executemany(
                    "INSERT OR IGNORE INTO package_sets (digest, packages) VALUES (?, ?)",
                    [(d, json.dumps(p, sort_keys=True)) for d, p in package_sets.items()],
                )
            parts_rows = [
                (key, json.dumps(parts, default=repr), json.dumps(shorts, default=repr))
                for key, parts, shorts in key_parts
            ]
            if parts_rows:
                conn.executemany(
                    "INSERT OR IGNORE INTO key_parts (key, parts, shorts) VALUES (?, ?, ?)",
                    parts_rows,
                )
            snapshot_rows = [
                [
                    json.dumps(row.get(c), default=repr)
                    if c in _SNAPSHOT_JSON and row.get(c) is not None
                    else row.get(c)
                    for c in SNAPSHOT_COLUMNS
                ]
                for row in snapshots
            ]
            if snapshot_rows:
                conn.executemany(
                    f"INSERT INTO snapshots ({', '.join(SNAPSHOT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(SNAPSHOT_COLUMNS))})",
                    snapshot_rows,
                )
            if heartbeat:
                conn.executemany(
                    "UPDATE runs SET heartbeat=? WHERE id=? AND state='running'",
                    [(now, run_id) for run_id in heartbeat],
                )

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Remove runs and their task rows (their files are the caller's), and the package
        sets no remaining run names. (A key's parts stay: a later run may have that key.)"""
        with self._transaction() as conn:
            for chunk, marks in _chunks(run_ids):
                conn.execute(f"DELETE FROM tasks WHERE run_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", chunk)
            conn.execute(
                "DELETE FROM package_sets WHERE digest NOT IN "
                "(SELECT packages FROM runs WHERE packages IS NOT NULL)"
            )

    def prune_snapshots(self) -> int:
        """Keep the newest snapshot of each pipeline only; returns how many were removed.
        (A run snapshot whose run goes takes its graph first: `keep_graph_of`.)"""
        with self._transaction() as conn:
            removed = conn.execute(
                "DELETE FROM snapshots WHERE id NOT IN (SELECT (SELECT n.id FROM snapshots "
                "AS n WHERE n.pipeline = p.pipeline ORDER BY n.taken DESC, n.id DESC LIMIT 1) "
                "FROM (SELECT DISTINCT pipeline FROM snapshots) AS p)"
            ).rowcount
        return int(removed)

    def keep_graph_of(self, run_ids: Sequence[str]) -> None:
        """Before runs go: the snapshots that name one of `run_ids` for their tasks and edges
        take a copy of that run's graph."""
        if not run_ids:
            return
        with self._transaction() as conn:
            for chunk, marks in _chunks(run_ids):
                rows = conn.execute(
                    "SELECT snapshots.id, runs.graph FROM snapshots JOIN runs "
                    "ON runs.id = snapshots.run_id WHERE snapshots.tasks IS NULL "
                    f"AND runs.graph IS NOT NULL AND runs.id IN ({marks})",
                    chunk,
                ).fetchall()
                for snapshot_id, graph in rows:
                    decoded = json.loads(graph)
                    conn.execute(
                        "UPDATE snapshots SET tasks=?, edges=? WHERE id=?",
                        (
                            json.dumps(decoded.get("tasks") or []),
                            json.dumps(decoded.get("edges") or []),
                            snapshot_id,
                        ),
                    )

    # --- reading -------------------------------------------------------------

    def snapshot(self, pipeline: str) -> dict[str, Any] | None:
        """The newest status snapshot of `pipeline` (tasks and edges filled in from its run's
        graph for a run snapshot; None when they are not known), or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT snapshots.*, runs.graph AS run_graph FROM snapshots "
                "LEFT JOIN runs ON runs.id = snapshots.run_id WHERE pipeline=? "
                "ORDER BY taken DESC, snapshots.id DESC LIMIT 1",
                (pipeline,),
            ).fetchone()
        if row is None:
            return None
        out = dict(row)
        for column in (*_SNAPSHOT_JSON, "run_graph"):
            if out[column] is not None:
                out[column] = json.loads(out[column])
        graph = out.pop("run_graph") or {}
        if out["tasks"] is None and graph:
            out["tasks"] = list(graph.get("tasks") or [])
            out["edges"] = [list(e) for e in graph.get("edges") or []]
        return out

    def snapshot_count(self, pipeline: str | None = None) -> int:
        """How many snapshots are kept (of `pipeline`, or of every pipeline)."""
        with self._lock:
            if pipeline is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0])
            return int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM snapshots WHERE pipeline=?", (pipeline,)
                ).fetchone()[0]
            )

    def settle_interrupted(self) -> None:
        """Write as `interrupted` every `running` run whose process is gone (this host) or
        whose heartbeat is stale (another host)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, host, pid, heartbeat, started FROM runs WHERE state='running'"
            ).fetchall()
        now = time.time()
        dead = []
        for row in rows:
            if row["host"] == self.host and row["pid"] is not None:
                gone = not pid_alive(int(row["pid"]))
            else:
                gone = now - (row["heartbeat"] or row["started"]) > STALE_AFTER
            if gone:
                dead.append(row["id"])
        if not dead:
            return
        with self._transaction() as conn:
            for run_id in dead:
                conn.execute(
                    "UPDATE runs SET state='interrupted', ended=COALESCE(heartbeat, started), "
                    "duration=COALESCE(heartbeat, started) - started, "
                    "error=COALESCE(error, 'the process running it ended without finishing it') "
                    "WHERE id=? AND state='running'",
                    (run_id,),
                )
                conn.execute(
                    "UPDATE tasks SET state='interrupted' WHERE run_id=? AND state='running'",
                    (run_id,),
                )

    def runs(
        self,
        *,
        name: str | None = None,
        kind: str | None = None,
        state: str | None = None,
        parent: str | None = None,
        before: float | None = None,
        limit: int | None = 20,
    ) -> list[dict[str, Any]]:
        """Run rows, newest first, filtered by the given columns."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("name", name), ("kind", kind), ("state", state), ("parent", parent)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if before is not None:
            where.append("started<?")
            args.append(before)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [_decode(r) for r in self._conn.execute(sql, args).fetchall()]

    def names(self, kind: str) -> list[tuple[str, float]]:
        """The names of the runs of `kind` with each one's latest start, newest first
        (answered from the `runs_by_kind_name` index alone)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, MAX(started) FROM runs WHERE kind=? GROUP BY name "
                "ORDER BY MAX(started) DESC",
                (kind,),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run row by id, or by a unique prefix of its id."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM runs WHERE id=? OR id LIKE ? ORDER BY id=? DESC LIMIT 2",
                (run_id, run_id.replace("%", "").replace("_", "") + "%", run_id),
            ).fetchall()
        if not rows:
            return None
        if len(rows) > 1 and rows[0]["id"] != run_id:
            raise NbflowError(f"run id `{run_id}` is ambiguous; give more of its characters")
        return _decode(rows[0])

    def tasks(
        self, run_ids: Sequence[str], runs: Sequence[dict[str, Any]] = ()
    ) -> dict[str, list[dict[str, Any]]]:
        """Task rows of `run_ids`: run id -> rows in the order they ended, after the rows of
        the tasks loaded from the cache (from the `cached_tasks` column of `runs`, the rows of those
        runs when the caller has them)."""
        out: dict[str, list[dict[str, Any]]] = {r: [] for r in run_ids}
        if not run_ids:
            return out
        if not runs:
            runs = [r for r in (self.run(i) for i in run_ids) if r is not None]
        for run in runs:
            for task, key, digest, size, metadata in run.get("cached_tasks") or ():
                out[run["id"]].append(
                    {
                        "run_id": run["id"],
                        "task": task,
                        "state": "cached",
                        "cached": 1,
                        "key": key,
                        "digest": digest,
                        "size": size,
                        "metadata": metadata,
                        "started": run["started"],
                        "duration": 0.0,
                    }
                )
        with self._lock:
            for chunk, marks in _chunks(run_ids):
                rows = self._conn.execute(
                    f"SELECT * FROM tasks WHERE run_id IN ({marks}) "
                    "ORDER BY COALESCE(ended, started), rowid",
                    chunk,
                ).fetchall()
                for row in rows:
                    out[row["run_id"]].append(_decode(row))
        return out

    def task_runs(self, pipeline: str, task: str, limit: int = 5) -> list[dict[str, Any]]:
        """The last runs of one task of a pipeline: task rows with the run's `started`."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT tasks.*, runs.started AS run_started FROM tasks JOIN runs "
                "ON runs.id = tasks.run_id WHERE runs.name=? AND tasks.task=? "
                "ORDER BY runs.started DESC LIMIT ?",
                (pipeline, task, limit),
            ).fetchall()
        return [_decode(r) for r in rows]

    def last_log(self, pipeline: str, task: str) -> dict[str, Any] | None:
        """The newest task row of `pipeline`/`task` with captured output (a running task's
        included: its output so far), with the run's `started` as `run_started`."""
        with self._lock:
            row = self._conn.execute(
                "SELECT tasks.*, runs.started AS run_started FROM tasks JOIN runs "
                "ON runs.id = tasks.run_id WHERE runs.name=? AND tasks.task=? "
                "AND tasks.log_path IS NOT NULL ORDER BY runs.started DESC LIMIT 1",
                (pipeline, task),
            ).fetchone()
        return _decode(row) if row is not None else None

    def computed_by(self, pipeline: str, task: str, key: str) -> dict[str, Any] | None:
        """The newest task row of `pipeline`/`task` that computed the value of `key`."""
        with self._lock:
            row = self._conn.execute(
                "SELECT tasks.* FROM tasks JOIN runs ON runs.id = tasks.run_id "
                "WHERE runs.name=? AND tasks.task=? AND tasks.key=? AND tasks.cached=0 "
                "AND tasks.state='done' ORDER BY runs.started DESC LIMIT 1",
                (pipeline, task, key),
            ).fetchone()
        return _decode(row) if row is not None else None

    def package_set(self, digest: str) -> dict[str, str] | None:
        """The distributions (name -> version) stored under `digest`, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT packages FROM package_sets WHERE digest=?", (digest,)
            ).fetchone()
        return json.loads(row[0]) if row is not None else None

    def parts_of(self, keys: Iterable[str]) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
        """key -> (parts, shorts) of the cache keys recorded in `key_parts` among `keys`."""
        wanted = [k for k in dict.fromkeys(keys) if k]
        out: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = self._conn.execute(
                    "SELECT key, parts, shorts FROM key_parts "
                    f"WHERE key IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, parts, shorts in rows:
                    out[key] = (json.loads(parts), json.loads(shorts) if shorts else {})
        return out

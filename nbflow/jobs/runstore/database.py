"""The open database: one connection per thread and process, WAL, short write transactions,
the schema created or upgraded on first use."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nbflow.core.home import ensure_private_dir, home_dir
from nbflow.jobs.runstore.schema import (
    _MIGRATIONS,
    _SCHEMA,
    BUSY_TIMEOUT_MS,
    SCHEMA_VERSION,
)


class Database:
    """The SQLite file and its connections (the base of every table's methods)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else home_dir() / "nbflow.db"
        ensure_private_dir(self.path.parent)
        self._local = threading.local()
        self._connect()  # creates the file and the schema now, so errors surface here

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self._create_or_upgrade(conn)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _create_or_upgrade(self, conn: sqlite3.Connection) -> None:
        """Create the tables, or upgrade an older file, in one transaction: two processes
        doing it at once queue on the write lock, and the second finds it done."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            has_runs = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
            ).fetchone()
            if has_runs:
                for old in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS.get(old, "").split(";"):
                        if statement.strip():
                            conn.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        os.chmod(self.path, 0o600)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, with the write lock taken up front."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _read(self) -> sqlite3.Connection:
        return self._connect()

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def journal_mode(self) -> str:
        return str(self._read().execute("PRAGMA journal_mode").fetchone()[0])

"""The home's settings (SMTP server, history retention, ...), one JSON value per key."""

from __future__ import annotations

import json
from typing import Any

from nbflow.jobs.runstore.database import Database


class SettingsTable(Database):
    """The home's settings (SMTP server, history retention, ...), one JSON value per key."""

    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self._read().execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row is not None else default

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serializable setting (e.g. `smtp`: host, port, sender...)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def erase_setting_field(self, key: str, field: str) -> None:
        """Remove `field` from setting `key` and overwrite its old bytes on disk.

        A plain UPDATE leaves the old row in the database file's free pages and in the
        write-ahead log; for a value that must not stay on disk (a password moving to the
        secret store) the deleted content is zeroed (`secure_delete`) and the log is
        checkpointed and truncated.
        """
        conn = self._connect()
        conn.execute("PRAGMA secure_delete = ON")
        try:
            with self._write() as db:
                row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    value = json.loads(row[0])
                    value.pop(field, None)
                    db.execute(
                        "UPDATE settings SET value = ? WHERE key = ?", (json.dumps(value), key)
                    )
            # The old page stays in the log until a checkpoint copies it back, and the log
            # file keeps its frames until it is truncated.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.execute("PRAGMA secure_delete = OFF")

    def delete_setting(self, key: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM settings WHERE key = ?", (key,)).rowcount == 1

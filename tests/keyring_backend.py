"""A real keyring backend for tests: keyring's plug-in interface, values in a JSON file outside the home.

Selected in child processes (the kernel of a notebook run) through keyring's own
`PYTHON_KEYRING_BACKEND=tests.keyring_backend.FileKeyring`, and in the test process
with `keyring.set_keyring`; `NBFLOW_TEST_KEYRING` names the file. It stands in for
the system keyring a desktop or server has, which this machine lacks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import pytest
from jaraco.classes import properties

PATH_ENV = "NBFLOW_TEST_KEYRING"


class FileKeyring(keyring.backend.KeyringBackend):
    @properties.classproperty
    def priority(cls) -> float:
        # Only where a test selected it: keyring considers every backend class imported,
        # and one that raises here is not viable.
        if PATH_ENV not in os.environ:
            raise RuntimeError(f"{PATH_ENV} is not set")
        return 1

    def _load(self) -> dict[str, dict[str, str]]:
        path = Path(os.environ[PATH_ENV])
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        Path(os.environ[PATH_ENV]).write_text(json.dumps(data))

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data.setdefault(service, {})[username] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if username not in data.get(service, {}):
            raise keyring.errors.PasswordDeleteError(username)
        del data[service][username]
        self._save(data)


@pytest.fixture
def plugin_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Use `FileKeyring` here and in child processes; the file it writes (outside the home)."""
    # Taken before PYTHON_KEYRING_BACKEND is set: keyring picks its backend on first use.
    previous = keyring.get_keyring()
    path = tmp_path / "keyring.json"
    monkeypatch.setenv(PATH_ENV, str(path))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.keyring_backend.FileKeyring")
    monkeypatch.delenv("NBFLOW_SECRET_BACKEND", raising=False)
    # Child processes import this module by name, whatever their working directory.
    root = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    keyring.set_keyring(FileKeyring())
    try:
        yield path
    finally:
        keyring.set_keyring(previous)

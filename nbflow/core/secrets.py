"""Secrets: values a run needs (a database password) that no file nbflow writes may hold.

Responsibilities:

- **The store.** `set_secret`, `remove_secret`, `secret_names` and `secret`
  keep values in the operating system's keyring (the `keyring` package,
  imported only when a secret is used) when it has a usable backend — macOS
  Keychain, Windows Credential Locker, the Secret Service of a desktop
  session; keyring's `fail` and `null` backends, which store nothing, do not
  count. Otherwise, or when `NBFLOW_SECRET_BACKEND=file`, values are kept in
  `secrets.json` in the home, a file of the user's that nobody else may read
  (0600, checked on every read as `secret.key` is, never followed when it is
  a link) in a home that is 0700. The same file lists every secret's *name*
  and the backend holding it, so `nbflow secret list` works with keyring too
  (keyring cannot enumerate). Keyring entries are under the service
  `nbflow:<home>`, so two homes never share a value by accident.
- **References.** `SecretRef` is what a job's parameters hold: `secret:NAME`
  on the command line, `{{ secret('NAME') }}` in a template. It is rendered
  into the injected-parameters cell as a call, `secret('NAME')`, which runs in
  the kernel: the value exists only in the kernel's memory, never in the
  notebook, its metadata, the run store or the history.
- **Values that know their name.** `secret()` returns a `Secret`, a `str`
  whose repr is `secret('NAME')` and which the cache key, the history and
  `explain` see as the reference (`secret `NAME``), never as the value.
  A value derived from it (`"x" + s`, `s.upper()`) is a plain `str` again:
  nbflow cannot follow it.
- **Masking.** `mask(text, values)` replaces each value with `***`. Every
  value `secret()` returned in a process is remembered (`revealed()`), and
  task logs are masked with them (`nbflow.core.capture`); the papermill client
  masks a kernel's messages with every value in the store before they reach
  the output notebook.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from nbflow.core.errors import NbflowError
from nbflow.core.home import ensure_private_dir, home_dir

__all__ = [
    "MASK",
    "REFERENCE_PREFIX",
    "Secret",
    "SecretError",
    "SecretRef",
    "backend_name",
    "mask",
    "mask_revealed",
    "parse_reference",
    "remove_secret",
    "revealed",
    "secret",
    "secret_names",
    "secret_values",
    "set_secret",
]

MASK = "***"
REFERENCE_PREFIX = "secret:"
BACKEND_ENV = "NBFLOW_SECRET_BACKEND"
STORE_FILE = "secrets.json"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")

Backend = Literal["keyring", "file"]


class SecretError(NbflowError):
    """A secret is unknown, misnamed, or its store cannot be used. `.name` names it."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


_revealed: set[str] = set()
"""Every secret value this process has held (see `revealed`)."""


# --- references and values ------------------------------------------------------------


class SecretRef:
    """A reference to the secret `name`, as job parameters hold it: `secret:NAME`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = check_name(name)

    @property
    def __nbflow_secret__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return f"{REFERENCE_PREFIX}{self.name}"

    def __repr__(self) -> str:
        return f"secret({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other.name == self.name

    def __hash__(self) -> int:
        return hash((SecretRef, self.name))

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretRef, (self.name,))


class Secret(str):
    """A secret's value: a `str` that remembers its name and never shows itself in a repr."""

    __nbflow_secret__: str

    def __new__(cls, value: str, name: str) -> Secret:
        self = super().__new__(cls, value)
        self.__nbflow_secret__ = name
        # Known to this process's masking wherever it arrives (a worker unpickles it here).
        _revealed.add(str(value))
        return self

    @property
    def name(self) -> str:
        return self.__nbflow_secret__

    def __repr__(self) -> str:
        return f"secret({self.__nbflow_secret__!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # To a worker process and back: the value travels (in memory), with its name.
        return (Secret, (str(self), self.__nbflow_secret__))


def parse_reference(text: str) -> SecretRef | None:
    """`secret:NAME` as a `SecretRef`; None for any other text."""
    if not text.startswith(REFERENCE_PREFIX):
        return None
    return SecretRef(text[len(REFERENCE_PREFIX) :])


def check_name(name: str) -> str:
    """`name` if it can name a secret (letters, digits, `_`, `.`, `-`; starting with a letter or `_`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SecretError(
            str(name),
            f"{name!r} is not a secret name: use letters, digits, `_`, `.` or `-`, starting with "
            "a letter or `_` (at most 100 characters), e.g. `db_password`",
        )
    return name


# --- masking ----------------------------------------------------------------------------


def revealed() -> frozenset[str]:
    """Every secret value `secret()` returned in this process."""
    return frozenset(_revealed)


def mask(text: str, values: Iterable[str]) -> str:
    """`text` with each of `values` replaced by `***` (longest first, so no value shows through a shorter one)."""
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask_revealed(text: str) -> str:
    """`text` masked with the values revealed in this process (cheap when there are none)."""
    return mask(text, _revealed) if _revealed else text


# --- the store -------------------------------------------------------------------------


def secret(name: str) -> Secret:
    """The value of the secret `name`, from the store of the home in use.

    Call it where the value is needed (in a notebook, a task), never store
    the result in a file: nbflow masks it in outputs and logs it captures.
    """
    check_name(name)
    home = home_dir()
    entry = _read_index(home).get(name)
    value = _get_value(home, name, entry) if entry is not None else None
    if value is None:
        raise SecretError(
            name,
            f"secret `{name}` is not set in home `{home}`; set it with "
            f"`nbflow secret set {name}` (it prompts for the value)",
        )
    _revealed.add(value)
    return Secret(value, name)


def set_secret(name: str, value: str) -> Backend:
    """Store `value` as the secret `name` (replacing an earlier one); return where it went."""
    check_name(name)
    if not isinstance(value, str) or not value:
        raise SecretError(name, f"secret `{name}` needs a non-empty value; nothing was stored")
    home = home_dir()
    index = _read_index(home)
    backend = backend_name()
    old = index.get(name)
    if backend == "keyring":
        _keyring_call(name, "set_password", _service(home), name, value)
        index[name] = {"backend": "keyring"}
    else:
        index[name] = {"backend": "file", "value": value}
    _write_index(home, index)
    if old is not None and old.get("backend") == "keyring" and backend == "file":
        _keyring_delete(home, name)
    return backend


def remove_secret(name: str) -> bool:
    """Forget the secret `name`; False when there was none."""
    check_name(name)
    home = home_dir()
    index = _read_index(home)
    entry = index.pop(name, None)
    if entry is None:
        return False
    if entry.get("backend") == "keyring":
        _keyring_delete(home, name)
    _write_index(home, index)
    return True


def secret_names() -> dict[str, str]:
    """Every stored secret's name -> the backend holding it (`keyring` or `file`); no values."""
    return {n: str(e.get("backend")) for n, e in sorted(_read_index(home_dir()).items())}


def secret_values(names: Iterable[str] | None = None) -> dict[str, str]:
    """Name -> value for `names` (default: every stored secret); for masking, never for display.

    A secret listed but missing from its keyring is left out (it cannot be printed either).
    """
    home = home_dir()
    index = _read_index(home)
    wanted = index if names is None else {n: index[n] for n in names if n in index}
    values = {n: _get_value(home, n, e) for n, e in wanted.items()}
    return {n: v for n, v in values.items() if v}


def backend_name() -> Backend:
    """Where `set_secret` stores a value now: `keyring` if a usable backend exists, else `file`."""
    choice = os.environ.get(BACKEND_ENV, "").strip().lower()
    if choice == "file":
        return "file"
    if choice not in ("", "keyring"):
        raise SecretError(
            "",
            f"{BACKEND_ENV} is {choice!r}; set it to `keyring` or `file` (or unset it: keyring "
            "when a usable backend exists, else the file)",
        )
    usable = _usable_keyring()
    if choice == "keyring" and not usable:
        raise SecretError(
            "",
            f"{BACKEND_ENV}=keyring, but keyring has no usable backend here (only its `fail` or "
            "`null` backend); install one (e.g. the Secret Service of a desktop session) or "
            f"unset {BACKEND_ENV} to use the home's 0600 file",
        )
    return "keyring" if usable else "file"


def _usable_keyring() -> bool:
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:
        return False
    ring = keyring.get_keyring()
    if isinstance(ring, fail.Keyring | null.Keyring):
        return False
    if isinstance(ring, chainer.ChainerBackend):
        return any(not isinstance(b, fail.Keyring | null.Keyring) for b in ring.backends)
    return True


def _service(home: Path) -> str:
    return f"nbflow:{home}"


def _keyring_call(name: str, method: str, *args: str) -> Any:
    import keyring
    from keyring.errors import KeyringError

    try:
        return getattr(keyring, method)(*args)
    except KeyringError as exc:
        raise SecretError(
            name,
            f"the keyring could not {method.replace('_', ' ')} for secret `{name}` "
            f"({type(exc).__name__}: {exc}); unlock it, or set {BACKEND_ENV}=file to keep "
            "secrets in the home's 0600 file",
        ) from exc


def _keyring_delete(home: Path, name: str) -> None:
    import keyring.errors

    try:
        _keyring_call(name, "delete_password", _service(home), name)
    except SecretError as exc:
        if not isinstance(exc.__cause__, keyring.errors.PasswordDeleteError):
            raise  # gone already is fine; a locked keyring is not


def _get_value(home: Path, name: str, entry: Mapping[str, Any]) -> str | None:
    if entry.get("backend") == "keyring":
        value = _keyring_call(name, "get_password", _service(home), name)
        return str(value) if value is not None else None
    value = entry.get("value")
    return str(value) if value is not None else None


def _read_index(home: Path) -> dict[str, dict[str, Any]]:
    """The store file's entries (name -> {"backend", "value"?}); empty when there is none."""
    path = home / STORE_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if os.path.islink(path):
            raise SecretError(
                "",
                f"the secret store `{path}` is a symbolic link (to `{os.readlink(path)}`); nbflow "
                "reads secrets only from a file of its own: remove the link and set them again",
            ) from exc
        raise
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise SecretError(
                "",
                f"the secret store `{path}` is not a regular file of yours; nbflow does not read "
                "secrets someone else could have written: remove it and set them again",
            )
        if info.st_mode & 0o077:
            raise SecretError(
                "",
                f"the secret store `{path}` has mode {stat.S_IMODE(info.st_mode):04o}, so others "
                f"may have read it: change the secrets it holds, then run `chmod 600 {path}`",
            )
        data = fh.read()
    try:
        parsed = json.loads(data.decode("utf-8"))
        entries = parsed["secrets"]
        if not isinstance(entries, dict):
            raise TypeError("`secrets` is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise SecretError(
            "",
            f"the secret store `{path}` is not nbflow's ({type(exc).__name__}: {exc}); "
            "move it away and set the secrets again",
        ) from exc
    return {str(k): dict(v) for k, v in entries.items()}


def _write_index(home: Path, index: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the store file atomically: a new 0600 file, then a rename over the old one."""
    ensure_private_dir(home, what=f"the nbflow home `{home}`")
    path = home / STORE_FILE
    tmp = home / f".{STORE_FILE}.{os.getpid()}.tmp"
    data = json.dumps({"version": 1, "secrets": index}, indent=1, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise

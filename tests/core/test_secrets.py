"""The secret store, secret values in keys and logs, and masking (nbflow.core.secrets)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.core.cache.hashing import digest_value
from nbflow.core.capture import capture_output
from nbflow.core.secrets import (
    MASK,
    Secret,
    SecretError,
    SecretRef,
    backend_name,
    mask,
    parse_reference,
    remove_secret,
    secret_names,
    set_secret,
)
from tests.keyring_backend import plugin_keyring  # noqa: F401  (a fixture)


@pytest.fixture(autouse=True)
def _file_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never the keyring of whoever runs the tests; the keyring test selects its own.
    monkeypatch.setenv("NBFLOW_SECRET_BACKEND", "file")


def test_the_file_store_is_0600_in_the_home_and_holds_names_for_list(home: Path) -> None:
    assert set_secret("db_password", "hunter2-value") == "file"
    path = home / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert secret_names() == {"db_password": "file"}
    value = nf.secret("db_password")
    assert value == "hunter2-value" and isinstance(value, str)
    assert repr(value) == "secret('db_password')"  # a repr never shows the value
    set_secret("db_password", "second")  # replaced, still 0600
    assert nf.secret("db_password") == "second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert remove_secret("db_password") and not remove_secret("db_password")
    assert secret_names() == {}


def test_an_unknown_secret_names_itself_and_the_command_to_set_it(home: Path) -> None:
    with pytest.raises(SecretError) as err:
        nf.secret("db_password")
    assert err.value.name == "db_password"
    assert "secret `db_password` is not set" in str(err.value)
    assert "`nbflow secret set db_password`" in str(err.value)
    with pytest.raises(SecretError, match="is not a secret name"):
        nf.secret("db password")


def test_a_store_file_others_can_read_or_a_link_is_refused(home: Path, tmp_path: Path) -> None:
    set_secret("token", "abc-123-xyz")
    path = home / "secrets.json"
    path.chmod(0o644)
    with pytest.raises(SecretError, match=r"mode 0644, so others may have read it.*chmod 600"):
        nf.secret("token")
    path.chmod(0o600)
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({"version": 1, "secrets": {}}))
    path.unlink()
    path.symlink_to(elsewhere)
    with pytest.raises(SecretError, match="is a symbolic link"):
        secret_names()


def test_keyring_holds_the_value_when_a_usable_backend_exists(
    home: Path, request: pytest.FixtureRequest
) -> None:
    keyring_file: Path = request.getfixturevalue("plugin_keyring")
    assert backend_name() == "keyring"
    assert set_secret("db_password", "in-the-keyring") == "keyring"
    # The home lists the name only; the value is in the keyring, under the home's service.
    assert b"in-the-keyring" not in (home / "secrets.json").read_bytes()
    assert json.loads(keyring_file.read_text()) == {
        f"nbflow:{home}": {"db_password": "in-the-keyring"}
    }
    assert secret_names() == {"db_password": "keyring"}
    assert nf.secret("db_password") == "in-the-keyring"
    assert remove_secret("db_password")
    assert json.loads(keyring_file.read_text()) == {f"nbflow:{home}": {}}


def test_keyring_fail_backend_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        monkeypatch.delenv("NBFLOW_SECRET_BACKEND")
        assert backend_name() == "file"
        monkeypatch.setenv("NBFLOW_SECRET_BACKEND", "keyring")
        with pytest.raises(SecretError, match="no usable backend"):
            backend_name()
    finally:
        keyring.set_keyring(previous)


def test_references_parse_and_render_as_their_name_only() -> None:
    ref = parse_reference("secret:db_password")
    assert ref == SecretRef("db_password") and str(ref) == "secret:db_password"
    assert parse_reference("no secret") is None
    with pytest.raises(SecretError):
        parse_reference("secret:")
    assert nf.NbflowError in type(SecretError("x", "m")).__mro__


def test_a_secret_keys_by_its_name_never_its_value() -> None:
    one, other = Secret("value-one", "db_password"), Secret("value-two", "db_password")
    assert digest_value(one) == digest_value(other) == digest_value(SecretRef("db_password"))
    assert digest_value(one) != digest_value(Secret("value-one", "api_token"))
    assert digest_value(one) != digest_value("value-one")


def test_mask_replaces_every_value_longest_first() -> None:
    assert mask("pw=abcdef and abc", ["abc", "abcdef"]) == f"pw={MASK} and {MASK}"
    assert mask("nothing here", ["", "zzz"]) == "nothing here"


def test_a_task_that_prints_its_secret_leaves_only_the_mask_in_its_log(pipe, home) -> None:
    set_secret("db_password", "Pa55-in-a-task")

    @pipe.task
    def connect(password: str) -> int:
        print("connecting with", password)
        print("half", password[:4], "then", password[4:])  # a transformed value: not masked
        return len(password)

    result = pipe.run(params={"password": nf.secret("db_password")})
    assert result["connect"] == len("Pa55-in-a-task")
    log = result.logs["connect"]
    assert f"connecting with {MASK}" in log and "Pa55-in-a-task" not in log
    # The cache key holds the reference: a new value of the same secret is still fresh,
    # and explain names the secret, never the value.
    set_secret("db_password", "changed-value")
    again = pipe.run(params={"password": nf.secret("db_password")})
    assert again.cached == ["connect"]
    set_secret("api_token", "another-one")
    explained = pipe.explain("connect", params={"password": nf.secret("api_token")})
    assert explained == (
        "stale: parameter `password` changed: secret `db_password` → secret `api_token`"
    )
    assert "another-one" not in explained and "changed-value" not in explained
    # The history keeps the reference too.
    assert nf.history(limit=1)[0].params == {"password": "secret:db_password"}


def test_capture_masks_a_value_split_across_writes() -> None:
    set_secret("split", "SPLIT-VALUE-42")
    secret = nf.secret("split")
    with capture_output() as captured:
        print(secret[:5], end="")
        print(secret[5:])
    assert captured.text == f"{MASK}\n"

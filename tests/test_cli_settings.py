"""`nbflow settings`: the SMTP server e-mail alerts use, stored in the home."""

from __future__ import annotations

from click.testing import CliRunner

from nbflow.cli import cli
from nbflow.core.secrets import secret, secret_names
from nbflow.jobs.runstore import RunStore


def nbflow(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_smtp_settings_are_typed_stored_and_masked():
    assert nbflow("settings", "set", "smtp.host", "mail.example.com").exit_code == 0
    assert nbflow("settings", "set", "smtp.port", "587").exit_code == 0
    assert nbflow("settings", "set", "smtp.starttls", "yes").exit_code == 0
    result = nbflow("settings", "set", "smtp.password", "s3cret")
    assert result.output.startswith("smtp.password = *** (kept as secret `smtp.password`")
    # The password is a secret, not a setting (issue 18).
    assert RunStore().get_setting("smtp") == {
        "host": "mail.example.com",
        "port": 587,
        "starttls": True,
    }
    assert secret("smtp.password") == "s3cret"
    shown = nbflow("settings", "show").output
    assert "smtp.port = 587" in shown and "smtp.password = '***'" in shown
    assert "s3cret" not in shown
    assert nbflow("settings", "unset", "smtp.password").exit_code == 0
    assert "password" not in RunStore().get_setting("smtp")
    assert "smtp.password" not in secret_names()


def test_bad_settings_are_refused_with_the_known_keys():
    result = nbflow("settings", "set", "smtp.hots", "x")
    assert result.exit_code == 2 and "did you mean `smtp.host`" in result.output
    result = nbflow("settings", "set", "smtp.port", "many")
    assert result.exit_code == 2 and "whole number" in result.output
    assert RunStore().get_setting("smtp") is None

"""Alerts sent when a scheduled notebook run fails, is retried, or succeeds.

A job lists its alert targets per event (`Schedule.on_failure`, `on_retry`,
`on_success`); `notify` sends one event to each of them. A target's form picks
how it is sent:

    https://hooks.example.com/x      webhook: POST the run as JSON
    python:pkg.module:function       call `function(payload)` in this process
    mailto:ops@example.com,b@x.org   e-mail through the `smtp` setting of the run store
    slack://T1/B2/C3, ntfy://...     any other `scheme://` URL: through apprise, which knows
                                     Slack, Teams, Discord, ntfy... (see `alert_apprise`)
                                     (its password in the secret store: `smtp.password`)
    anything else                    a shell command; the run is in NBFLOW_* variables

Why it is built this way:
- **An alert never fails a run.** The run already has its outcome; a dead
  webhook or a wrong SMTP password must not turn a success into a failure or
  stop the scheduler. `notify` never raises: each target's problem is logged on
  the `nbflow.alerts` logger (naming the target and the reason) and returned in
  its `AlertOutcome`, and the other targets are still tried.
- **Stdlib only** (urllib, smtplib, subprocess, importlib): alerting works on a
  bare install, with no client library per service. Chat tools want their own
  message formats, so apprise URLs are the one exception: apprise is an
  optional dependency (`nbflow-pipelines[alerts]`), imported only when such a
  target is checked or sent.
- Every network or process target is bounded by `timeout` seconds, so a hung
  endpoint delays the scheduler by at most that much per target.

`check_target` catches obviously malformed targets when a schedule is added.

The SMTP password is the secret `smtp.password` (`nbflow secret set
smtp.password`), not a setting: `smtp_settings` moves a clear-text one that an
older nbflow stored in the settings table into the secret store the first time
it reads the settings, and deletes it there.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import smtplib
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from nbflow.jobs import hooks
from nbflow.jobs.alert_apprise import (
    INSTALL_HINT,
    AlertFailed,
    add_alert_link,
    chat_webhook_as_apprise,
    check_apprise_target,
    is_apprise_url,
    mask_url,
    send_apprise,
)
from nbflow.jobs.errors import ScheduleError
from nbflow.jobs.processes import kill_group
from nbflow.jobs.times import logical_iso, utc_iso

if TYPE_CHECKING:
    from nbflow.jobs.runstore import RunRecord, RunStore

__all__ = ["EVENTS", "AlertOutcome", "check_target", "notify", "payload", "target_kind"]

logger = logging.getLogger("nbflow.alerts")

EVENTS: tuple[str, ...] = ("failure", "retry", "success")
TargetKind = Literal["webhook", "python", "email", "apprise", "command"]

_ERROR_ENV_LIMIT = 2_000
_DETAIL_LIMIT = 500
_PYTHON_TARGET = re.compile(
    r"python:(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<function>[A-Za-z_]\w*)"
)
# Printed as forms, not filled in: an error message must not echo the tokens.
_CHAT_FORMS = {
    "slack": ("Slack", "slack://T/B/C for https://hooks.slack.com/services/T/B/C"),
    "discord": ("Discord", "discord://ID/TOKEN for https://discord.com/api/webhooks/ID/TOKEN"),
}
_VERBS = {"failure": "failed", "retry": "failed, will retry", "success": "succeeded"}


@dataclass(frozen=True)
class AlertOutcome:
    """What happened to one target: `ok`, and a short `detail` (the reason when not ok)."""

    target: str
    kind: TargetKind
    ok: bool
    detail: str


def target_kind(target: str) -> TargetKind:
    """Which way `target` is sent, decided by its form alone."""
    lowered = target.strip().lower()
    if lowered.startswith(("http://", "https://")):
        return "webhook"
    if lowered.startswith("python:"):
        return "python"
    if lowered.startswith("mailto:") and not lowered.startswith("mailto://"):
        return "email"
    if is_apprise_url(lowered):
        return "apprise"
    return "command"


def check_target(target: str) -> None:
    """Raise `ScheduleError` for a target that can never work (checked at `schedule add`)."""
    if not isinstance(target, str) or not target.strip():
        raise ScheduleError(f"alert target {target!r} is empty", field="alerts")
    target = target.strip()
    kind = target_kind(target)
    if kind == "webhook":
        try:
            host = urlsplit(target).hostname
        except ValueError as exc:
            raise ScheduleError(f"alert URL `{target}` is not valid: {exc}", field="alerts")
        if not host:
            raise ScheduleError(
                f"alert URL `{target}` has no host; write e.g. https://hooks.example.com/path",
                field="alerts",
            )
        if (chat := chat_webhook_as_apprise(target)) is not None:
            # The webhook would answer every alert with HTTP 400: say so now, with the fix.
            service, form = _CHAT_FORMS[chat.split("://", 1)[0]]
            raise ScheduleError(
                f"alert URL `{mask_url(target)}` is a {service} incoming webhook, which refuses "
                f"nbflow's JSON; give it as the apprise URL {form}, with {INSTALL_HINT}",
                field="alerts",
            )
    elif kind == "apprise":
        check_apprise_target(target)
    elif kind == "python":
        if not _PYTHON_TARGET.fullmatch(target):
            raise ScheduleError(
                f"alert target `{target}` needs a module and a function: "
                "python:package.module:function",
                field="alerts",
            )
    elif kind == "email":
        addresses = _mail_addresses(target)
        bad = [a for a in addresses if "@" not in a or a.startswith("@") or a.endswith("@")]
        if not addresses or bad:
            raise ScheduleError(
                f"alert target `{target}` needs e-mail addresses: mailto:ops@example.com "
                "(several separated by commas)",
                field="alerts",
            )


def payload(event: str, job: str, run: RunRecord) -> dict[str, Any]:
    """The run as JSON-ready fields: what webhooks, `python:` callables and e-mails get."""
    return {
        "event": event,
        "job": job,
        "run_id": run.id,
        "run_type": run.run_type,
        "logical_date": logical_iso(run.logical_date),
        "state": run.state,
        "attempts": run.attempts,
        "started_at": utc_iso(run.started_at) if run.started_at else None,
        "ended_at": utc_iso(run.ended_at) if run.ended_at else None,
        "duration": run.duration,
        "output_path": run.output_path,
        "error": run.error,
        "parameters": dict(run.parameters),
    }


def notify(
    event: str,
    job: str,
    run: RunRecord,
    targets: Sequence[str],
    *,
    store: RunStore,
    timeout: float = 10.0,
) -> list[AlertOutcome]:
    """Send `event` ("failure", "retry" or "success") about `run` to each of `targets`.

    Never raises: a target that fails is logged on `nbflow.alerts` and reported
    with `ok=False`; the others are still sent. E-mail settings come from
    `store.get_setting("smtp")` (the run store of the home the run belongs to).
    """
    outcomes: list[AlertOutcome] = []
    try:
        if event not in EVENTS:
            logger.warning("alert event %r is not one of %s; sending it anyway", event, EVENTS)
        data = payload(event, job, run)
    except Exception as exc:  # a broken RunRecord must not break the caller either
        logger.warning("alerts for job %s not sent: %s", job, _describe(exc))
        return [
            AlertOutcome(str(t), _safe_kind(t), False, f"not sent: {_describe(exc)}")
            for t in targets
        ]
    _attach_report(data, run, store)
    for target in targets:
        kind = _safe_kind(target)
        try:
            detail = _SENDERS[kind](str(target).strip(), data, store, timeout)
        except Exception as exc:
            reason = _clip(_describe(exc))
            logger.warning(
                "%s alert for job %s run %s to %s (%s) failed: %s",
                event,
                job,
                data["run_id"],
                _display(str(target)),
                kind,
                reason,
            )
            outcomes.append(AlertOutcome(str(target), kind, False, reason))
        else:
            outcomes.append(AlertOutcome(str(target), kind, True, detail))
    return outcomes


def _attach_report(data: dict[str, Any], run: RunRecord, store: RunStore) -> None:
    """With the home's `alerts.report` setting on, write the report of this attempt of the
    run (`<home>/reports/job-<run>-<attempt>.html`) and name it in the alert as `report`.

    Off by default: a report renders the output notebook (about a second). Never raises: a
    report that cannot be made (history off, the run not recorded) is logged, and the alert
    goes without it.
    """
    history_id = f"job-{run.id}-{run.attempts}"  # the history's id of this attempt
    try:
        if not (store.get_setting("alerts", {}) or {}).get("report"):
            return
        # The report belongs to the presentation layer, which gives its writer as a hook.
        if hooks.report_writer is None:
            raise RuntimeError("no report writer is set (nbflow.ui is not installed)")
        path = hooks.report_writer(history_id, store.path.parent)
    except Exception as exc:
        logger.warning(
            "no report for the alert of job %s run %s: %s", data["job"], run.id, _describe(exc)
        )
        return
    data["report"] = str(path)


def _report_link(data: Mapping[str, Any]) -> Mapping[str, str]:
    """An apprise message names the run's report when the alert made one."""
    return {"report": data["report"]} if data.get("report") else {}


add_alert_link(_report_link)


# -- senders: each returns a short detail on success and raises on failure


class _AlertFailed(Exception):
    """A target answered, but not with success (its message is the detail)."""


def _send_webhook(target: str, data: dict[str, Any], store: Any, timeout: float) -> str:
    body = json.dumps(data, default=str).encode("utf-8")
    request = urllib.request.Request(
        target,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "nbflow"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _AlertFailed(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _AlertFailed(f"cannot reach {_display(target)}: {_describe(exc.reason)}") from None


def _send_python(target: str, data: dict[str, Any], store: Any, timeout: float) -> str:
    match = _PYTHON_TARGET.fullmatch(target)
    if not match:
        raise _AlertFailed("not of the form python:package.module:function")
    module = importlib.import_module(match["module"])
    function: Callable[[dict[str, Any]], Any] | None = getattr(module, match["function"], None)
    if not callable(function):
        raise _AlertFailed(f"module {match['module']} has no function {match['function']}")
    try:
        function(dict(data))
    except SystemExit as exc:  # an alert must not stop the scheduler
        raise _AlertFailed(f"callable called sys.exit({exc.code!r})") from None
    return f"called {match['module']}:{match['function']}"


def _send_email(target: str, data: dict[str, Any], store: Any, timeout: float) -> str:
    addresses = _mail_addresses(target)
    if not addresses:
        raise _AlertFailed("no e-mail address after mailto:")
    settings = smtp_settings(store)
    host = str(settings.get("host") or "localhost")
    port = int(settings.get("port") or 25)
    message = EmailMessage()
    message["From"] = str(settings.get("from") or "nbflow@localhost")
    message["To"] = ", ".join(addresses)
    message["Subject"] = _subject(data)
    message.set_content(_body(data))
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            if settings.get("starttls"):
                smtp.starttls()
            if settings.get("user"):
                smtp.login(str(settings["user"]), _smtp_password())
            smtp.send_message(message)
    except OSError as exc:  # smtplib.SMTPException is an OSError too
        raise _AlertFailed(f"SMTP server {host}:{port}: {_describe(exc)}") from None
    return f"sent to {', '.join(addresses)} via {host}:{port}"


SMTP_PASSWORD = "smtp.password"
"""The name of the secret that holds the SMTP password."""


def smtp_settings(store: Any) -> dict[str, Any]:
    """The `smtp` settings of `store`, without the password (the secret `smtp.password`).

    A password an older nbflow kept in the settings is migrated on this first read: stored
    as the secret, then removed from the settings row (in that order, so a crash between
    the two leaves it in both places, never in neither).
    """
    settings = dict(store.get_setting("smtp", {}) or {})
    if "password" in settings:
        password = settings.pop("password")
        if password:
            from nbflow.core.secrets import set_secret

            set_secret(SMTP_PASSWORD, str(password))
        store.erase_setting_field("smtp", "password")
        logger.warning(
            "moved the SMTP password from the settings of the run store to the secret store "
            "(secret `%s`); the settings no longer hold it",
            SMTP_PASSWORD,
        )
    return settings


def _smtp_password() -> str:
    from nbflow.core.secrets import secret_values

    return secret_values([SMTP_PASSWORD]).get(SMTP_PASSWORD, "")


def _send_command(target: str, data: dict[str, Any], store: Any, timeout: float) -> str:
    env = os.environ | {
        "NBFLOW_EVENT": data["event"],
        "NBFLOW_JOB": data["job"],
        "NBFLOW_RUN_ID": str(data["run_id"]),
        "NBFLOW_RUN_TYPE": data["run_type"],
        "NBFLOW_LOGICAL_DATE": data["logical_date"],
        "NBFLOW_STATE": data["state"],
        "NBFLOW_ATTEMPTS": str(data["attempts"]),
        "NBFLOW_OUTPUT": data["output_path"] or "",
        "NBFLOW_REPORT": data.get("report") or "",
        "NBFLOW_ERROR": (data["error"] or "")[:_ERROR_ENV_LIMIT],
        "NBFLOW_DURATION": "" if data["duration"] is None else str(data["duration"]),
    }
    # Own process group, so a timeout kills what the shell started too.
    with subprocess.Popen(
        target,
        shell=True,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    ) as process:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process, wait=5)
            raise _AlertFailed(f"command timed out after {timeout:g} s") from None
    if process.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] if stderr else []
        raise _AlertFailed(
            f"command exited with status {process.returncode}" + (f": {tail[0]}" if tail else "")
        )
    return "exit status 0"


def _send_apprise(target: str, data: dict[str, Any], store: Any, timeout: float) -> str:
    return send_apprise(target, data, timeout)


_SENDERS: dict[str, Callable[[str, dict[str, Any], Any, float], str]] = {
    "webhook": _send_webhook,
    "python": _send_python,
    "email": _send_email,
    "apprise": _send_apprise,
    "command": _send_command,
}


# -- helpers


def _safe_kind(target: object) -> TargetKind:
    return target_kind(target) if isinstance(target, str) else "command"


def _mail_addresses(target: str) -> list[str]:
    rest = target.strip()[len("mailto:") :].split("?", 1)[0]
    return [a.strip() for a in rest.split(",") if a.strip()]


def _subject(data: dict[str, Any]) -> str:
    verb = _VERBS.get(data["event"], data["event"])
    date = data["logical_date"]
    if date.endswith("T00:00:00+00:00"):
        date = date[:10]
    return f"[nbflow] job {data['job']} run {data['run_id']} {verb} ({date})"


def _body(data: dict[str, Any]) -> str:
    lines = [f"{_subject(data)[len('[nbflow] ') :]}", ""]
    for key, value in data.items():
        if key in ("error", "parameters"):
            continue
        lines.append(f"{key}: {'' if value is None else value}")
    lines.append(f"parameters: {json.dumps(data['parameters'], default=str, sort_keys=True)}")
    if data["error"]:
        lines += ["", "error:", str(data["error"])]
    return "\n".join(lines) + "\n"


def _describe(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    if isinstance(exc, _AlertFailed | AlertFailed):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def _display(target: str) -> str:
    """`target` for a log line, with what looks like a credential in a URL hidden (a
    password, a token in the path or the query: see `alert_apprise.mask_url`)."""
    if target_kind(target) in ("webhook", "apprise"):
        return mask_url(target)
    return target

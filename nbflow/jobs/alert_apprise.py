"""Alerts through apprise: one URL form for Slack, Teams, Discord, e-mail, ntfy and ~100 more.

A target written `scheme://...` (any scheme but http/https, which stay nbflow's own
JSON webhook) is an apprise URL: `slack://T1/B2/C3`, `msteams://...`,
`discord://ID/TOKEN`, `mailto://user:pass@example.com`, `ntfy://host/topic`,
`json://host:port/path`. apprise knows each service's API, so the message
arrives as the service expects it — which nbflow's JSON webhook cannot do for
chat tools.

Responsibilities:
- recognize an apprise URL by its form alone (`is_apprise_url`), so a job can be
  stored, shown and checked without apprise installed;
- check a URL when a schedule is added (`check_apprise_target`), and say which
  `pip install` a missing apprise needs;
- write the message a person reads (`message`): a title and a plain-text body
  with the job, logical date, state, attempt, error summary, duration, the
  output notebook and any links registered with `add_alert_link`;
- send it (`send_apprise`), bounded by the alert timeout; failures raise
  `AlertFailed` for `alerts.notify`, which logs them and never fails the run;
- mask what looks like a credential in any URL target (`mask_url`), for
  `schedule show` and log lines.

apprise is optional (`pip install 'nbflow-pipelines[alerts]'`) and imported
only when an apprise target is checked or sent. It runs with an in-memory
store (it writes nothing to the user's home) and with its own secure logging.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from nbflow.jobs.errors import ScheduleError

__all__ = [
    "INSTALL_HINT",
    "AlertFailed",
    "add_alert_link",
    "chat_webhook_as_apprise",
    "check_apprise_target",
    "is_apprise_url",
    "mask_url",
    "message",
    "remove_alert_link",
    "send_apprise",
]

logger = logging.getLogger("nbflow.alerts")

INSTALL_HINT = "pip install 'nbflow-pipelines[alerts]'"

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_ERROR_SUMMARY_LIMIT = 300
_SECRET_KEYS = re.compile(r"token|key|secret|pass|pw|auth|sig|code|cred", re.IGNORECASE)
_HEADLINES = {"failure": "failed", "retry": "failed, will retry", "success": "succeeded"}

LinkProvider = Callable[[Mapping[str, Any]], Mapping[str, str]]
"""Given the alert payload, {label: link} to list in the message ("report": path, ...)."""

_LINK_PROVIDERS: list[LinkProvider] = []


class AlertFailed(Exception):
    """A target answered, but not with success (its message is the detail)."""


# -- recognizing and checking


def is_apprise_url(target: str) -> bool:
    """True for `scheme://...` with a scheme other than http/https.

    `mailto:ops@x.org` (no `//`) stays nbflow's own e-mail target through the
    home's SMTP setting; `mailto://user:pass@x.org` is apprise's.
    """
    match = _URL.match(target.strip())
    return match is not None and match["scheme"].lower() not in ("http", "https")


def check_apprise_target(target: str) -> None:
    """Raise `ScheduleError` when apprise is missing or does not understand `target`."""
    try:
        _load_apprise()
    except AlertFailed as exc:
        raise ScheduleError(str(exc), field="alerts") from None
    service, why = _instantiate(target)
    if service is None:
        scheme = target.split("://", 1)[0].lower()
        known = _schemes()
        if scheme not in known:
            from nbflow.core.errors import did_you_mean

            raise ScheduleError(
                f"alert target `{mask_url(target)}`: apprise has no service `{scheme}://`"
                f"{did_you_mean(scheme, known)}; the URL of each service is listed at "
                "https://github.com/caronc/apprise/wiki",
                field="alerts",
            )
        raise ScheduleError(
            f"alert target `{mask_url(target)}` is not a valid `{scheme}://` URL for apprise"
            f" ({why.rstrip('.') or 'a token or a part is missing'}); see "
            "https://github.com/caronc/apprise/wiki for the form of its URL",
            field="alerts",
        )


def chat_webhook_as_apprise(url: str) -> str | None:
    """The apprise URL of a Slack or Discord incoming-webhook `https://` URL, else None.

    Those services refuse nbflow's own JSON (they want their own message
    fields), so `schedule add` refuses such a webhook and names this URL instead.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    segments = [s for s in parts.path.split("/") if s]
    if host == "hooks.slack.com" and segments[:1] == ["services"] and len(segments) == 4:
        return "slack://" + "/".join(segments[1:])
    if (
        host in ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")
        and segments[:2] == ["api", "webhooks"]
        and len(segments) == 4
    ):
        return "discord://" + "/".join(segments[2:])
    return None


# -- the message


def add_alert_link(provider: LinkProvider) -> None:
    """Register `provider`: each apprise alert lists the links it returns for the run.

    The hook for what knows where a run can be seen (the report of a run, the
    dashboard's page of it): `provider(payload)` returns {label: link}; an
    empty mapping adds nothing. A provider that raises is logged and skipped.
    """
    if provider not in _LINK_PROVIDERS:
        _LINK_PROVIDERS.append(provider)


def remove_alert_link(provider: LinkProvider) -> None:
    """Undo `add_alert_link(provider)` (nothing happens if it was not registered)."""
    if provider in _LINK_PROVIDERS:
        _LINK_PROVIDERS.remove(provider)


def message(data: Mapping[str, Any]) -> tuple[str, str]:
    """The (title, body) a person reads, from an alert payload (`alerts.payload`)."""
    verb = _HEADLINES.get(data["event"], data["event"])
    date = _short_date(data["logical_date"])
    title = f"nbflow: job {data['job']} {verb} ({date})"
    lines = [
        f"Job: {data['job']} (run {data['run_id']}, {data['run_type']})",
        f"Logical date: {date}",
        f"State: {data['state']}",
        f"Attempt: {data['attempts']}",
    ]
    if data.get("duration") is not None:
        lines.append(f"Duration: {_seconds(float(data['duration']))}")
    if data.get("error"):
        lines.append(f"Error: {error_summary(str(data['error']))}")
    if data.get("output_path"):
        lines.append(f"Output notebook: {data['output_path']}")
    for label, link in _links(data).items():
        lines.append(f"{label[:1].upper()}{label[1:]}: {link}")
    return title, "\n".join(lines)


def error_summary(error: str) -> str:
    """One line of an error: a traceback's last line (the exception), clipped."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback") or len(lines) > 1 else lines[0]
    if len(line) > _ERROR_SUMMARY_LIMIT:
        line = line[: _ERROR_SUMMARY_LIMIT - 1] + "…"
    return line


# -- sending


def send_apprise(target: str, data: Mapping[str, Any], timeout: float) -> str:
    """Send the run's message to the apprise URL `target`; raise `AlertFailed` if not sent."""
    apprise = _load_apprise()
    service, why = _instantiate(target)
    if service is None:
        reason = f": {why}" if why else ""
        raise AlertFailed(f"apprise cannot load `{mask_url(target)}`{reason}")
    # Each network step of the service is bounded by the alert timeout, unless the URL
    # sets its own (apprise's `cto=`/`rto=` parameters).
    query = dict(parse_qsl(urlsplit(target).query))
    if "cto" not in query:
        service.socket_connect_timeout = timeout
    if "rto" not in query:
        service.socket_read_timeout = timeout
    notifier = apprise.Apprise(asset=_asset())
    notifier.add(service)
    title, body = message(data)
    kind = apprise.NotifyType.FAILURE if data["event"] != "success" else apprise.NotifyType.SUCCESS
    with _apprise_said() as said:
        sent = notifier.notify(body=body, title=title, notify_type=kind)
    if not sent:
        reason = _scrub(said[-1], target) if said else "apprise reported a failure"
        raise AlertFailed(f"not delivered: {reason}")
    return f"sent via apprise ({service.service_name})"


# -- masking


def mask_url(target: str) -> str:
    """`target` with what looks like a credential replaced by `***`.

    For any `scheme://` target (webhooks too): the password of the user part,
    a host or path segment that looks like a token (8+ characters with a
    digit, or 20+ characters; `slack://T1/B2/C3` keeps none of them), and
    query values whose name says token/key/secret/password (or whose value
    looks like a token). A host name with a dot, `localhost`, an IP address
    and plain words (`/hooks/alerts`) stay readable. Other targets are
    returned as they are.
    """
    if not _URL.match(target.strip()):
        return target
    try:
        parts = urlsplit(target.strip())
        _ = parts.port  # a malformed port raises here, not later
    except ValueError:
        scheme = target.split("://", 1)[0]
        return f"{scheme}://***"
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    if userinfo:
        user, colon, _password = userinfo.partition(":")
        user = "***" if _secretish(user) and not colon else user
        userinfo = f"{user}:***" if colon else user
    host, colon, port = hostport.partition(":")
    if not port.isdigit():
        host, colon, port = hostport, "", ""
    if _secretish(host) and "." not in host and host.lower() != "localhost":
        host = "***"
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{port}" if colon else "")
    path = "/".join("***" if _secretish(seg) else seg for seg in parts.path.split("/"))
    query = "&".join(
        f"{quote(k, safe='-_.')}={'***' if _SECRET_KEYS.search(k) or _secretish(v) else quote(v, safe='-_.,')}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    fragment = "***" if _secretish(parts.fragment) else parts.fragment
    return (
        f"{parts.scheme}://{netloc}{path}"
        + (f"?{query}" if query else "")
        + (f"#{fragment}" if fragment else "")
    )


# -- helpers


def _scrub(text: str, target: str) -> str:
    """`text` (what apprise said) without the parts of `target` that `mask_url` hides:
    apprise names a token it finds invalid ("Token (abc123...) was specified")."""
    try:
        parts = urlsplit(target.strip())
        # From the netloc as written: `hostname` is lowercased, and apprise echoes the case.
        userinfo, _, hostport = parts.netloc.rpartition("@")
        secrets = [*userinfo.split(":", 1), hostport.split(":", 1)[0]]
    except ValueError:
        return _URL_IN_TEXT.sub(lambda m: mask_url(m[0]), text)
    secrets += parts.path.split("/") + [v for _, v in parse_qsl(parts.query)] + [parts.fragment]
    for secret in sorted(
        {x for x in secrets if x and (_secretish(x) or x == parts.password)}, key=len, reverse=True
    ):
        text = text.replace(secret, "***")
    return text


def _secretish(text: str) -> bool:
    """Looks like a token: 8+ characters with a digit, or 20+ characters."""
    text = text.strip()
    if _is_ip(text):
        return False
    return (len(text) >= 8 and any(c.isdigit() for c in text)) or len(text) >= 20


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _load_apprise() -> Any:
    try:
        with warnings.catch_warnings():  # its own imports' deprecations are not the user's
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise
    except ImportError:
        raise AlertFailed(f"apprise URL targets need the apprise package: {INSTALL_HINT}") from None
    return apprise


def _asset() -> Any:
    apprise = _load_apprise()
    # In memory: apprise would otherwise keep a persistent store under the user's home.
    return apprise.AppriseAsset(
        app_id="nbflow",
        app_desc="nbflow alerts",
        storage_mode=apprise.PersistentStoreMode.MEMORY,
        secure_logging=True,
    )


def _instantiate(target: str) -> tuple[Any, str]:
    """apprise's service object for `target` (None if it cannot load it), and why not."""
    apprise = _load_apprise()
    # apprise logs a URL it cannot load in full, token and all; and it loads its plugins
    # now, whose imports warn of deprecations that are not the user's to fix.
    with _apprise_said() as said, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        service = apprise.Apprise.instantiate(
            target.strip(), asset=_asset(), suppress_exceptions=True
        )
    # Its first word is the useful one ("An invalid Slack (second) Token ..."); the last
    # only repeats the URL.
    return service, (_scrub(said[0], target) if said else "")


class _Said(logging.Filter):
    """While nbflow talks to apprise, its log records are kept (masked) instead of logged.

    apprise logs from its own worker threads, so this is a process-wide switch
    (a count of the calls under way), not a per-thread one. What apprise said
    becomes the reason of the alert's outcome, logged once on `nbflow.alerts`
    with any URL in it masked — apprise itself would print some URLs in full.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.active = 0
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        with self.lock:
            if not self.active:
                return True
            if record.levelno >= logging.WARNING:
                self.lines.append(_URL_IN_TEXT.sub(lambda m: mask_url(m[0]), record.getMessage()))
            return False


_SAID = _Said()
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


@contextmanager
def _apprise_said() -> Iterator[list[str]]:
    """The (masked) warnings apprise logs during the block, in order."""
    log = logging.getLogger("apprise")
    if _SAID not in log.filters:
        log.addFilter(_SAID)
    with _SAID.lock:
        _SAID.active += 1
        start = len(_SAID.lines)
    said: list[str] = []
    try:
        yield said
    finally:
        with _SAID.lock:
            said.extend(_SAID.lines[start:])
            _SAID.active -= 1
            if not _SAID.active:
                _SAID.lines.clear()


def _schemes() -> list[str]:
    apprise = _load_apprise()
    details = apprise.Apprise(asset=_asset()).details(show_disabled=False)
    found: set[str] = set()
    for service in details.get("schemas", []):
        for key in ("protocols", "secure_protocols"):
            found.update(str(p).lower() for p in service.get(key) or ())
    return sorted(found)


def _links(data: Mapping[str, Any]) -> dict[str, str]:
    links: dict[str, str] = {}
    for provider in list(_LINK_PROVIDERS):
        try:
            links.update({str(k): str(v) for k, v in (provider(data) or {}).items() if v})
        except Exception as exc:  # a link is extra: the alert goes out without it
            logger.warning("alert link provider %r failed: %s", provider, exc)
    return links


def _short_date(iso: str) -> str:
    """A logical date as a person writes it: `2024-01-01`, or `2024-01-01 17:05:24 UTC` for
    a tick (or a manual run) that is not midnight UTC."""
    from datetime import datetime, timedelta

    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return str(iso)
    utc = moment.utcoffset() == timedelta(0)
    if utc and (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return f"{moment:%Y-%m-%d}"
    return f"{moment:%Y-%m-%d %H:%M:%S}" + (" UTC" if utc else f"{moment:%z}")


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"

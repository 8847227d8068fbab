"""Alerts against real local servers and processes: HTTP, SMTP, shell, python: targets."""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nbflow.jobs.alerts import AlertOutcome, check_target, notify
from nbflow.jobs.runstore import RunRecord, RunStore
from nbflow.jobs.schedules import ScheduleError

# -- fixtures


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def store(tmp_path) -> Iterator[RunStore]:
    store = RunStore(tmp_path / "nbflow.db")
    yield store
    store.close()


@pytest.fixture
def failed_run(store: RunStore) -> RunRecord:
    run, _ = store.create_run(
        "daily-etl", "scheduled", datetime(2024, 1, 1, tzinfo=UTC), parameters={"day": "1"}
    )
    assert store.claim_run(run.id, os.getpid())
    store.finish_run(run.id, "failed", error="ValueError: boom")
    return store.get_run(run.id)


class _Recorder(BaseHTTPRequestHandler):
    """POST / -> 200 and keep the request; POST /fail -> 500."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append(  # type: ignore[attr-defined]
            {"path": self.path, "headers": dict(self.headers), "body": body}
        )
        status = 500 if self.path == "/fail" else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serving(server: Any) -> Iterator[Any]:
    """Serve `server` on a thread for the test, then shut it down."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.received = []  # type: ignore[attr-defined]
    yield from _serving(server)


def _url(server: ThreadingHTTPServer, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: one or more messages, kept on the server."""

    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        mail: dict[str, Any] = {"rcpt": []}
        self._reply("220 localhost test SMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            command = line.decode().strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._reply("250 localhost")
            elif verb == "MAIL":
                mail = {"from": command[10:], "rcpt": []}
                self._reply("250 OK")
            elif verb == "RCPT":
                mail["rcpt"].append(command[8:].strip("<>"))
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 end with <CRLF>.<CRLF>")
                data = bytearray()
                while True:
                    chunk = self.rfile.readline()
                    if not chunk or chunk in (b".\r\n", b".\n"):
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                mail["data"] = bytes(data)
                self.server.messages.append(mail)  # type: ignore[attr-defined]
                self._reply("250 OK queued")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            elif verb in ("RSET", "NOOP"):
                self._reply("250 OK")
            else:
                self._reply("502 not implemented")


@pytest.fixture
def smtp_server() -> Iterator[socketserver.ThreadingTCPServer]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.daemon_threads = True
    server.messages = []  # type: ignore[attr-defined]
    yield from _serving(server)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- webhooks


def test_webhook_posts_the_run_as_json(failed_run, store, http_server):
    outcomes = notify("failure", "daily-etl", failed_run, [_url(http_server)], store=store)

    assert outcomes == [AlertOutcome(_url(http_server), "webhook", True, "HTTP 200")]
    [request] = http_server.received
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["User-Agent"] == "nbflow"
    body = json.loads(request["body"])
    assert body["event"] == "failure"
    assert body["job"] == "daily-etl"
    assert body["run_id"] == failed_run.id
    assert body["state"] == "failed"
    assert body["error"] == "ValueError: boom"
    assert body["run_type"] == "scheduled"
    assert body["logical_date"] == "2024-01-01T00:00:00+00:00"
    assert body["attempts"] == 1
    assert body["parameters"] == {"day": "1"}
    assert body["started_at"] and body["ended_at"]


def test_failed_webhooks_are_reported_and_the_next_target_still_runs(
    failed_run, store, http_server, tmp_path, caplog
):
    marker = tmp_path / "ran.txt"
    dead = f"http://127.0.0.1:{_closed_port()}/hook"
    targets = [_url(http_server, "/fail"), dead, f"echo ran > {shlex.quote(str(marker))}"]

    with caplog.at_level(logging.WARNING, logger="nbflow.alerts"):
        outcomes = notify("failure", "daily-etl", failed_run, targets, store=store, timeout=5)

    assert [(o.kind, o.ok) for o in outcomes] == [
        ("webhook", False),
        ("webhook", False),
        ("command", True),
    ]
    assert "HTTP 500" in outcomes[0].detail
    assert "connection refused" in outcomes[1].detail.lower()
    assert marker.read_text().strip() == "ran"
    warnings = [r.getMessage() for r in caplog.records if r.name == "nbflow.alerts"]
    assert any("/fail" in w and "HTTP 500" in w for w in warnings)
    assert any(dead in w for w in warnings)


# -- e-mail


def test_email_goes_through_the_configured_smtp_server(failed_run, store, smtp_server):
    store.set_setting("smtp", {"host": "127.0.0.1", "port": smtp_server.server_address[1]})

    [outcome] = notify(
        "failure",
        "daily-etl",
        failed_run,
        ["mailto:ops@example.com, oncall@example.com"],
        store=store,
    )

    assert outcome.ok and outcome.kind == "email", outcome
    [mail] = smtp_server.messages
    assert mail["rcpt"] == ["ops@example.com", "oncall@example.com"]
    message = message_from_bytes(mail["data"], policy=default_policy)
    assert message["Subject"] == f"[nbflow] job daily-etl run {failed_run.id} failed (2024-01-01)"
    assert message["From"] == "nbflow@localhost"
    body = message.get_content()
    assert "daily-etl" in body
    assert "ValueError: boom" in body


def test_email_to_a_dead_smtp_server_is_reported(failed_run, store):
    store.set_setting("smtp", {"host": "127.0.0.1", "port": _closed_port()})

    [outcome] = notify("failure", "daily-etl", failed_run, ["mailto:ops@example.com"], store=store)

    assert not outcome.ok and outcome.kind == "email"
    assert "SMTP server 127.0.0.1" in outcome.detail and "refused" in outcome.detail


# -- commands


def test_command_gets_the_run_in_its_environment(failed_run, store, tmp_path):
    out = tmp_path / "alert.txt"
    command = f'echo "$NBFLOW_JOB $NBFLOW_STATE $NBFLOW_RUN_ID" > {shlex.quote(str(out))}'

    [outcome] = notify("failure", "daily-etl", failed_run, [command], store=store)

    assert outcome.ok and outcome.kind == "command"
    assert out.read_text() == f"daily-etl failed {failed_run.id}\n"


def test_failing_and_slow_commands_are_reported(failed_run, store, caplog):
    with caplog.at_level(logging.WARNING, logger="nbflow.alerts"):
        failing, slow = notify(
            "failure",
            "daily-etl",
            failed_run,
            ["echo nope >&2; exit 3", "sleep 30"],
            store=store,
            timeout=0.3,
        )

    assert not failing.ok and failing.detail == "command exited with status 3: nope"
    assert not slow.ok and "timed out" in slow.detail
    assert len([r for r in caplog.records if r.name == "nbflow.alerts"]) == 2


# -- python: targets


def test_python_target_is_called_with_the_payload(failed_run, store, tmp_path, monkeypatch):
    (tmp_path / "alert_hooks_ok.py").write_text(
        "received = []\n\ndef on_alert(payload):\n    received.append(payload)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    [outcome] = notify(
        "retry", "daily-etl", failed_run, ["python:alert_hooks_ok:on_alert"], store=store
    )

    import alert_hooks_ok  # type: ignore[import-not-found]

    assert outcome.ok and outcome.kind == "python"
    [payload] = alert_hooks_ok.received
    assert payload["event"] == "retry"
    assert payload["job"] == "daily-etl"
    assert payload["run_id"] == failed_run.id
    assert payload["error"] == "ValueError: boom"


def test_python_target_that_raises_is_logged_not_raised(
    failed_run, store, tmp_path, monkeypatch, caplog
):
    (tmp_path / "alert_hooks_bad.py").write_text(
        "def on_alert(payload):\n    raise RuntimeError('pager is down')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    targets = ["python:alert_hooks_bad:on_alert", "python:alert_hooks_missing_xyz:on_alert"]

    with caplog.at_level(logging.WARNING, logger="nbflow.alerts"):
        raised, missing = notify("failure", "daily-etl", failed_run, targets, store=store)

    assert not raised.ok and raised.detail == "RuntimeError: pager is down"
    assert not missing.ok and "ModuleNotFoundError" in missing.detail
    warnings = [r.getMessage() for r in caplog.records if r.name == "nbflow.alerts"]
    assert any("python:alert_hooks_bad:on_alert" in w and "pager is down" in w for w in warnings)
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "nbflow.alerts")


# -- check_target


@pytest.mark.parametrize(
    "target",
    [
        "https://hooks.example.com/x",
        "http://127.0.0.1:8080",
        "python:pkg.module:function",
        "mailto:ops@example.com",
        "mailto:a@example.com,b@example.com",
        "notify-send 'run failed'",
    ],
)
def test_check_target_accepts_good_targets(target):
    check_target(target)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("http://", "no host"),
        ("https:///path", "no host"),
        ("python:", "module and a function"),
        ("python:pkg.module", "module and a function"),
        ("python:pkg.module:", "module and a function"),
        ("python::function", "module and a function"),
        ("mailto:", "e-mail addresses"),
        ("mailto:ops", "e-mail addresses"),
        ("mailto:ops@example.com,@", "e-mail addresses"),
    ],
)
def test_check_target_rejects_bad_targets(target, message):
    with pytest.raises(ScheduleError, match=message):
        check_target(target)

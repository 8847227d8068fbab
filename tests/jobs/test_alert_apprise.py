"""apprise URL alert targets: real runs of a real job, a real HTTP server on 127.0.0.1
reached through apprise's `json://` scheme, and what `schedule show` prints of a URL."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from nbflow.cli import cli
from nbflow.jobs.alert_apprise import (
    add_alert_link,
    error_summary,
    mask_url,
    message,
    remove_alert_link,
)
from nbflow.jobs.alerts import check_target, notify, target_kind
from nbflow.jobs.runstore import RunRecord, RunStore
from nbflow.jobs.schedules import ScheduleError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks"
ERROR = "RuntimeError: attempt 1 fails on purpose"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class _Receiver(BaseHTTPRequestHandler):
    """What apprise's json:// service posts: kept on the server, answered 200."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append({"path": self.path, "json": json.loads(body)})  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _json_url(server: ThreadingHTTPServer, path: str = "/alerts") -> str:
    return f"json://127.0.0.1:{server.server_address[1]}{path}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def notebook(home: Path) -> Path:
    path = Path.cwd() / "job.ipynb"
    path.write_bytes((FIXTURES / "scheduled_job.ipynb").read_bytes())
    return path


def nbflow(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _add(*extra: str) -> None:
    result = nbflow(
        "schedule", "add", "etl", "job.ipynb", "--cron", "0 2 * * *", "-p", "day", "{{ ds }}",
        *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


# -- real runs


def test_a_failing_triggered_run_sends_a_readable_message_through_apprise(notebook, receiver):
    _add("-p", "fail_times", "1", "--on-failure", _json_url(receiver))

    result = nbflow("trigger", "etl")

    assert result.exit_code != 0 and "failed" in result.output, result.output
    [run] = RunStore().list_runs("etl")
    assert run.state == "failed"
    [request] = receiver.received  # type: ignore[attr-defined]
    assert request["path"] == "/alerts"
    sent = request["json"]
    assert sent["type"] == "failure"
    assert sent["title"].startswith("nbflow: job etl failed (")
    body = sent["message"]
    assert f"Job: etl (run {run.id}, manual)" in body
    assert "State: failed" in body and "Attempt: 1" in body
    assert "Error: exception in cell 3 `if attempt == 1:`: " + ERROR in body
    assert f"Logical date: {run.logical_date:%Y-%m-%d %H:%M:%S} UTC" in body
    assert "Duration: " in body
    assert f"Output notebook: {run.output_path}" in body


def test_a_failing_apprise_target_is_logged_and_leaves_the_run_as_it_was(notebook, caplog):
    dead = f"json://127.0.0.1:{_closed_port()}/alerts"
    _add("--on-success", dead, "--on-failure", dead)

    with caplog.at_level(logging.WARNING, logger="nbflow.alerts"):
        result = nbflow("trigger", "etl")

    assert result.exit_code == 0, result.output
    [run] = RunStore().list_runs("etl")
    assert run.state == "success" and run.error is None
    [warning] = [r.getMessage() for r in caplog.records if r.name == "nbflow.alerts"]
    assert f"success alert for job etl run {run.id} to {dead} (apprise) failed" in warning
    assert "not delivered" in warning


def test_schedule_show_masks_the_credentials_of_alert_urls(notebook):
    slack = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general"
    ntfy = "ntfy://alerts:hunter2secret@ntfy.example.com/etl?token=tk_abcdefghijklmnop"
    hook = "https://hooks.example.com/services/T0123456/B0123456/XXXXXXXXXXXXXXXXXXXXXXXX"
    _add("--on-failure", slack, "--on-failure", ntfy, "--on-retry", hook)

    shown = nbflow("schedule", "show", "etl").output

    for secret in ("T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ", "hunter2secret"):
        assert secret not in shown
    assert "tk_abcdefghijklmnop" not in shown and "XXXXXXXXXXXXXXXX" not in shown
    assert "on failure: slack://***/***/***/#general" in shown
    assert "on failure: ntfy://alerts:***@ntfy.example.com/etl?token=***" in shown
    assert "on retry:   https://hooks.example.com/services/***/***/***" in shown
    # What runs is the URL as given.
    assert RunStore().get_job("etl").schedule.on_failure == (slack, ntfy)


# -- choosing and checking a target


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("slack://T1/B2/C3", "apprise"),
        ("msteams://team/a/b/c", "apprise"),
        ("discord://123/abc", "apprise"),
        ("ntfy://ntfy.sh/topic", "apprise"),
        ("json://127.0.0.1:8080/x", "apprise"),
        ("mailto://user:pass@example.com", "apprise"),
        ("mailto:ops@example.com", "email"),
        ("https://hooks.example.com/x", "webhook"),
        ("python:pkg.mod:fn", "python"),
        ("curl -d x https://hooks.example.com", "command"),
    ],
)
def test_an_apprise_url_is_recognized_by_its_scheme(target, kind):
    assert target_kind(target) == kind


def test_check_target_names_the_near_miss_and_what_is_missing():
    check_target("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    check_target("json://127.0.0.1:8080/alerts")
    with pytest.raises(
        ScheduleError, match=r"apprise has no service `slak://` \(did you mean `slack`"
    ):
        check_target("slak://T1/B2/C3")
    with pytest.raises(ScheduleError, match=r"not a valid `slack://` URL for apprise \(An invalid"):
        check_target("slack://T1JJ3T3L2")
    # apprise names the token it finds invalid; the message does not repeat it.
    with pytest.raises(ScheduleError) as info:
        check_target("slack://T1JJ3T3L2/bad!!tokenvalue123/xyz")
    assert "Token (***)" in str(info.value)
    assert "T1JJ3T3L2" not in str(info.value) and "tokenvalue123" not in str(info.value)


def test_without_apprise_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "apprise", None)  # `import apprise` raises ImportError
    expected = (
        "apprise URL targets need the apprise package: pip install 'nbflow-pipelines[alerts]'"
    )

    with pytest.raises(ScheduleError) as info:
        check_target("slack://T1/B2/C3")
    assert str(info.value) == expected

    store = RunStore(tmp_path / "nbflow.db")
    run, _ = store.create_run("etl", "scheduled", datetime(2024, 1, 1, tzinfo=UTC))
    [outcome] = notify("failure", "etl", store.get_run(run.id), ["slack://T1/B2/C3"], store=store)
    store.close()
    assert not outcome.ok and outcome.detail == expected


# -- the message


def _payload(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": "failure",
        "job": "daily-etl",
        "run_id": 7,
        "run_type": "scheduled",
        "logical_date": "2024-01-01T00:00:00+00:00",
        "state": "failed",
        "attempts": 2,
        "duration": 754.2,
        "output_path": "/home/me/.nbflow/runs/daily-etl/out.ipynb",
        "error": "Traceback (most recent call last):\n  File ...\nValueError: boom",
        "parameters": {},
    }
    return data | changes


def test_the_message_is_written_for_a_person():
    title, body = message(_payload())

    assert title == "nbflow: job daily-etl failed (2024-01-01)"
    assert body.splitlines() == [
        "Job: daily-etl (run 7, scheduled)",
        "Logical date: 2024-01-01",
        "State: failed",
        "Attempt: 2",
        "Duration: 12 min 34 s",
        "Error: ValueError: boom",
        "Output notebook: /home/me/.nbflow/runs/daily-etl/out.ipynb",
    ]
    title, body = message(_payload(event="success", state="success", error=None, duration=3.0))
    assert title == "nbflow: job daily-etl succeeded (2024-01-01)"
    assert "Error" not in body and "Duration: 3.0 s" in body
    assert (
        message(_payload(event="retry"))[0]
        == "nbflow: job daily-etl failed, will retry (2024-01-01)"
    )


def test_registered_links_are_listed_and_a_broken_provider_is_skipped(caplog):
    def report(data):
        return {"report": f"/reports/{data['run_id']}.html"}

    def broken(data):
        raise RuntimeError("no dashboard")

    add_alert_link(report)
    add_alert_link(broken)
    try:
        with caplog.at_level(logging.WARNING, logger="nbflow.alerts"):
            _, body = message(_payload())
    finally:
        remove_alert_link(report)
        remove_alert_link(broken)

    assert body.splitlines()[-1] == "Report: /reports/7.html"
    assert any("no dashboard" in r.getMessage() for r in caplog.records)
    assert "Report" not in message(_payload())[1]


def test_an_error_summary_is_one_line():
    assert error_summary("ValueError: boom") == "ValueError: boom"
    assert (
        error_summary("Traceback (most recent call last):\n  x\nKeyError: 'a'\n") == "KeyError: 'a'"
    )
    assert len(error_summary("E: " + "x" * 1000)) == 300


# -- masking


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json://127.0.0.1:8080/alerts", "json://127.0.0.1:8080/alerts"),
        ("json://user:pw@localhost:8080/alerts", "json://user:***@localhost:8080/alerts"),
        ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js", "discord://***/***"),
        ("mailto://me:app-password@gmail.com", "mailto://me:***@gmail.com"),
        ("ntfy://ntfy.sh/etl-alerts", "ntfy://ntfy.sh/etl-alerts"),
        (
            "json://host.example.com/x?-X-Token=abc&mode=a",
            "json://host.example.com/x?-X-Token=***&mode=a",
        ),
        ("echo $NBFLOW_JOB", "echo $NBFLOW_JOB"),
    ],
)
def test_mask_url_hides_what_looks_like_a_credential(url, shown):
    assert mask_url(url) == shown


def test_a_run_record_from_the_store_reaches_apprise(tmp_path, receiver):
    """`notify` itself, as the scheduler and the exported DAGs call it."""
    store = RunStore(tmp_path / "nbflow.db")
    run, _ = store.create_run("etl", "scheduled", datetime(2024, 1, 2, tzinfo=UTC))
    record: RunRecord = store.get_run(run.id)

    [outcome] = notify("success", "etl", record, [_json_url(receiver, "/ok")], store=store)
    store.close()

    assert outcome.ok and outcome.kind == "apprise" and outcome.detail == "sent via apprise (JSON)"
    [request] = receiver.received  # type: ignore[attr-defined]
    assert request["json"]["type"] == "success"
    assert request["json"]["title"] == "nbflow: job etl succeeded (2024-01-02)"


@pytest.mark.parametrize(
    ("webhook", "form"),
    [
        (
            "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            "slack://T/B/C for https://hooks.slack.com/services/T/B/C",
        ),
        (
            "https://discord.com/api/webhooks/4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
            "discord://ID/TOKEN for https://discord.com/api/webhooks/ID/TOKEN",
        ),
    ],
)
def test_a_chat_webhook_given_as_https_is_refused_with_its_apprise_form(webhook, form):
    """Slack and Discord answer nbflow's JSON with HTTP 400: every alert would be lost."""
    with pytest.raises(ScheduleError) as info:
        check_target(webhook)

    message = str(info.value)
    assert (
        f"give it as the apprise URL {form}, with pip install 'nbflow-pipelines[alerts]'" in message
    )
    assert (
        "TIiajkdnlazkcOXrIdevi7FQ" not in message and "JHMHI8qBe7bk2ZwO5U711o3dV_js" not in message
    )
    check_target("https://hooks.example.com/services/a/b/c")  # any other webhook is as before

"""Secrets in notebook runs and scheduled jobs: references in, values resolved in the kernel,
masked out — and, the issue's test, no file of the home nor any alert holding the value."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner, Result

from nbflow.cli import cli
from nbflow.core.errors import ParameterError
from nbflow.core.secrets import SecretError, SecretRef, secret, secret_names, set_secret
from nbflow.jobs.alerts import notify, smtp_settings
from nbflow.jobs.notebook import run_notebook
from nbflow.jobs.runstore import RunStore
from tests.jobs.notebooks import write_notebook
from tests.jobs.test_alerts import _Recorder, _serving, _url, smtp_server  # noqa: F401
from tests.keyring_backend import plugin_keyring  # noqa: F401  (a fixture)

VALUE = "Zq8-secret-VALUE-7731"
DIGEST = hashlib.sha256(VALUE.encode()).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy_file_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NBFLOW_SECRET_BACKEND", "file")  # never the keyring of the tester


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.received = []  # type: ignore[attr-defined]
    yield from _serving(server)


def nbflow(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


PRINTING = [
    'print("connecting with", password)',
    "import hashlib\nprint('sha256', hashlib.sha256(password.encode()).hexdigest())",
    'import nbflow as nf\nagain = nf.secret("db_password")\nprint("again", again)\nagain',
]


def _texts(nb: nbformat.NotebookNode) -> str:
    return json.dumps(nb)


def test_a_reference_is_resolved_in_the_kernel_and_masked_in_the_output(home: Path):
    set_secret("db_password", VALUE)
    path = write_notebook(Path("nb.ipynb"), 'password = ""', PRINTING)
    nr = run_notebook(path, {"password": SecretRef("db_password")}, output="out.ipynb")
    assert nr.ok, nr.error
    data = Path("out.ipynb").read_bytes()
    assert VALUE.encode() not in data
    nb = nbformat.reads(data.decode(), as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.tags)
    assert "password = _nbflow_secrets.secret('db_password')" in injected.source
    assert nb.metadata.papermill.parameters == {"password": "secret:db_password"}
    texts = _texts(nb)
    assert "connecting with ***" in texts and "again ***" in texts
    assert "secret('db_password')" in texts  # the cell's value: its repr is the reference
    assert f"sha256 {DIGEST}" in texts  # the kernel had the real value


def test_papermill_autosave_during_a_long_cell_never_writes_the_value(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """papermill saves the notebook while a cell still runs (every 30 s by default; every
    50 ms here): each of those files is read as it was written."""
    import papermill.engines as engines

    set_secret("db_password", VALUE)
    original_init, original_write = engines.NotebookExecutionManager.__init__, engines.write_ipynb
    written: list[bytes] = []

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **{**kwargs, "autosave_cell_every": 0.05})
        self.max_autosave_pct = 10_000  # never back off

    def write(nb: Any, path: str) -> None:
        original_write(nb, path)
        written.append(Path(path).read_bytes())

    monkeypatch.setattr(engines.NotebookExecutionManager, "__init__", init)
    monkeypatch.setattr(engines, "write_ipynb", write)
    path = write_notebook(
        Path("nb.ipynb"),
        'password = ""',
        ["import time\nfor i in range(6):\n    print('tick', i, password, flush=True)\n"
         "    time.sleep(0.5)\nprint('done')"],
    )  # fmt: skip
    nr = run_notebook(path, {"password": SecretRef("db_password")}, output="out.ipynb")
    assert nr.ok, nr.error
    # Saved with some ticks printed and the cell not finished ("done" is its last output);
    # the first tick is the one any save made mid-cell holds, whatever the machine's pace.
    mid_cell = [w for w in written if b"tick 0 ***" in w and b'"done\\n"' not in w]
    assert mid_cell, "papermill saved nothing while the cell ran"
    assert all(VALUE.encode() not in w for w in written)


def test_an_exception_carrying_the_value_is_masked_in_the_failure(home: Path):
    set_secret("db_password", VALUE)
    path = write_notebook(
        Path("nb.ipynb"), 'password = ""', ['raise ValueError("bad " + password)']
    )
    nr = run_notebook(path, {"password": SecretRef("db_password")}, output="out.ipynb")
    assert not nr.ok and nr.error is not None
    assert nr.error.evalue == "bad ***" and VALUE not in nr.error.traceback
    assert VALUE.encode() not in Path("out.ipynb").read_bytes()


def test_a_missing_secret_or_a_non_text_parameter_is_refused_before_the_kernel_starts(home):
    set_secret("db_password", VALUE)
    path = write_notebook(Path("nb.ipynb"), 'password = ""\nretries = 3', ["pass"])
    with pytest.raises(SecretError, match=r"secret `db_pasword` \(did you mean `db_password`"):
        run_notebook(path, {"password": SecretRef("db_pasword")}, output="out.ipynb")
    with pytest.raises(ParameterError, match="declared as int, but was given secret"):
        run_notebook(path, {"retries": SecretRef("db_password")}, output="out.ipynb")
    assert not Path("out.ipynb").exists()


def test_a_template_with_text_around_a_secret_is_refused_at_schedule_add(home: Path):
    write_notebook(Path("job.ipynb"), 'password = ""', ["pass"])
    result = nbflow(
        "schedule", "add", "j", "job.ipynb", "--cron", "0 2 * * *",
        "-p", "password", "x{{ secret('db_password') }}",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "puts text around a secret reference" in result.output


JOB = [
    *PRINTING,
    # A pipeline inside the notebook: a task that takes the secret and prints it.
    "pipe = nf.Pipeline('secret-etl')\n"
    "@pipe.task\n"
    "def fetch(password):\n"
    "    print('task sees', password)\n"
    "    return len(password)\n"
    "r = pipe.run(params={'password': password})",
    # Fails on its first run (the marker is outside the home), with the value in the error.
    "import os\n"
    "if not os.path.exists(marker):\n"
    "    open(marker, 'w').close()\n"
    "    raise RuntimeError('cannot connect with ' + password)",
]


@pytest.mark.parametrize("backend", ["file", "keyring"])
def test_a_scheduled_job_with_a_secret_leaves_it_in_no_file_of_the_home_and_no_alert(
    backend: str, home: Path, http_server: ThreadingHTTPServer, request: pytest.FixtureRequest
) -> None:
    """Issue 18, "Done when"."""
    if backend == "keyring":
        keyring_file = request.getfixturevalue("plugin_keyring")
    stored = nbflow("secret", "set", "db_password", input=VALUE + "\n")
    assert stored.exit_code == 0 and VALUE not in stored.output
    write_notebook(Path("job.ipynb"), 'password = ""\nmarker = ""', JOB)
    marker = Path.cwd() / "failed-once"
    added = nbflow(
        "schedule", "add", "secret-etl", "job.ipynb", "--cron", "0 2 * * *",
        "-p", "password", "{{ secret('db_password') }}", "-p", "marker", str(marker),
        "--on-failure", _url(http_server, "/failure"),
        "--on-success", _url(http_server, "/success"),
    )  # fmt: skip
    assert added.exit_code == 0, added.output

    failed = nbflow("trigger", "secret-etl")
    assert failed.exit_code == 1 and "cannot connect with ***" in failed.output
    succeeded = nbflow("trigger", "secret-etl")
    assert succeeded.exit_code == 0, succeeded.output

    # It really ran with the value, and everything shows the reference or the mask.
    runs = RunStore().list_runs("secret-etl", oldest_first=True)
    assert [r.state for r in runs] == ["failed", "success"]
    assert runs[0].parameters["password"] == "secret:db_password"
    assert "cannot connect with ***" in runs[0].error
    output = Path(runs[0].output_path).read_text()
    assert f"sha256 {DIGEST}" in output and "connecting with ***" in output
    assert "task sees ***" in output
    paths = [r["path"] for r in http_server.received]  # type: ignore[attr-defined]
    assert paths == ["/failure", "/success"]
    failure = json.loads(http_server.received[0]["body"])  # type: ignore[attr-defined]
    assert failure["parameters"]["password"] == "secret:db_password"
    assert "***" in failure["error"]
    import nbflow as nf

    inner = nf.history("secret-etl", kind="pipeline", limit=5)
    assert inner and all(r.params == {"password": "secret:db_password"} for r in inner)
    task_log = nbflow("logs", inner[-1].id, "fetch").output
    assert "task sees ***" in task_log  # the history's captured log of the task, masked

    # The search: every file the home holds, byte for byte, and every alert sent.
    store_file = home / "secrets.json"
    searched = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if path == store_file and backend == "file":
            continue  # the store itself (0600 in a 0700 home): where the value lives
        assert VALUE.encode() not in path.read_bytes(), f"the secret's value is in {path}"
        searched.append(path.relative_to(home).as_posix())
    assert "nbflow.db" in searched and any(p.startswith("runs/secret-etl/") for p in searched)
    assert any(p.startswith("cache/") for p in searched)
    for request_seen in http_server.received:  # type: ignore[attr-defined]
        assert VALUE.encode() not in request_seen["body"]
        assert VALUE not in json.dumps(request_seen["headers"])
    for path in Path.cwd().rglob("*"):  # the notebook's folder, where the kernel ran
        if path.is_file():
            assert VALUE.encode() not in path.read_bytes(), path
    if backend == "file":
        assert stat.S_IMODE(store_file.stat().st_mode) == 0o600
        assert VALUE.encode() in store_file.read_bytes()
    else:
        assert VALUE.encode() not in store_file.read_bytes()  # names only
        assert VALUE in keyring_file.read_text()


def test_a_clear_text_smtp_password_moves_to_the_secret_store_on_first_use(
    home: Path, request: pytest.FixtureRequest
) -> None:
    mail: Any = request.getfixturevalue("smtp_server")
    store = RunStore()
    old = "old-clear-text-smtp-pw"
    port = mail.server_address[1]
    store.set_setting("smtp", {"host": "127.0.0.1", "port": port, "password": old})
    run, _ = store.create_run("j", "manual", datetime(2024, 1, 1, tzinfo=UTC))
    # First use: an e-mail alert reads the settings.
    [outcome] = notify("failure", "j", run, ["mailto:ops@example.com"], store=store)
    assert outcome.ok and len(mail.messages) == 1
    assert store.get_setting("smtp") == {"host": "127.0.0.1", "port": port}
    assert secret("smtp.password") == old and "smtp.password" in secret_names()
    # Gone from the database file and its write-ahead log, not only from the row.
    for path in home.glob("nbflow.db*"):
        assert old.encode() not in path.read_bytes(), path
    assert smtp_settings(store) == {"host": "127.0.0.1", "port": port}  # nothing left to move
    shown = nbflow("settings", "show").output
    assert "smtp.password = '***'" in shown and old not in shown

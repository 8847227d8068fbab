"""The standalone dashboard (`nbflow ui`) over HTTP: a real server on 127.0.0.1, real
job runs (a kernel per run), and each security rule tried from outside."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from nbflow.jobs.runstore import RunStore
from tests.ui.conftest import JOB, TWO_TASKS, Dashboard, env_for, wait_for_run


def session(d: Dashboard, page: str = f"jobs/{JOB}") -> tuple[requests.Session, str]:
    """A browser-like session: logged in by the token once, then by cookie only; and the
    XSRF value of one of our pages."""
    s = requests.Session()
    r = s.get(d.url(page), timeout=10)
    assert r.status_code == 200, r.text[:500]
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
    assert xsrf, "the page carries no XSRF value"
    return s, xsrf.group(1)


def runs(d: Dashboard) -> list[object]:
    return list(RunStore(d.home / "nbflow.db").list_runs(JOB))


def test_every_page_needs_the_token_or_the_session(dashboard: Dashboard):
    for path in ("", f"jobs/{JOB}", "pipelines/sales", "pipelines/sales/cache", "api/overview"):
        r = requests.get(dashboard.url(path, token=False), allow_redirects=False, timeout=10)
        assert r.status_code in (302, 403), (path, r.status_code)
        if r.status_code == 302:
            assert "/login" in r.headers["Location"]
        assert JOB not in r.text and "sales" not in r.text
        wrong = requests.get(
            f"{dashboard.base}/nbflow/{path}?token=not-the-token", allow_redirects=False, timeout=10
        )
        assert wrong.status_code in (302, 403), (path, wrong.status_code)
    r = requests.post(dashboard.url(f"jobs/{JOB}/pause", token=False), timeout=10)
    assert r.status_code == 403
    assert not RunStore(dashboard.home / "nbflow.db").get_job(JOB).paused


def test_the_overview_shows_jobs_with_their_schedule_and_the_pipelines(dashboard: Dashboard):
    r = requests.get(dashboard.url(), timeout=10)
    assert r.status_code == 200
    page = r.text
    assert f'data-job="{JOB}"' in page
    assert "cron &#39;0 2 * * *&#39; in Europe/Berlin" in page
    assert 'data-pipeline="sales"' in page
    assert page.count('class="cell ok"') >= 2  # the two runs of `sales`


def test_a_post_without_the_xsrf_value_is_refused_even_with_the_token(dashboard: Dashboard):
    store = RunStore(dashboard.home / "nbflow.db")
    r = requests.post(dashboard.url(f"jobs/{JOB}/pause"), timeout=10)
    assert r.status_code == 403
    s, xsrf = session(dashboard)
    r = s.post(dashboard.url(f"jobs/{JOB}/pause", token=False), timeout=10)
    assert r.status_code == 403  # the session cookie alone is what a forged form would send
    assert not store.get_job(JOB).paused
    r = s.post(
        dashboard.url(f"jobs/{JOB}/pause", token=False),
        data={"_xsrf": xsrf},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 303, r.text[:300]
    assert store.get_job(JOB).paused
    page = s.get(dashboard.url(f"jobs/{JOB}", token=False), timeout=10).text
    assert "paused" in page and ">Resume<" in page
    s.post(dashboard.url(f"jobs/{JOB}/resume", token=False), data={"_xsrf": xsrf}, timeout=10)
    assert not store.get_job(JOB).paused


def test_jupyters_own_apis_are_refused_by_the_standalone_server(dashboard: Dashboard):
    assert (
        requests.post(
            f"{dashboard.base}/api/kernels?token={dashboard.token}", timeout=10
        ).status_code
        == 403
    )
    assert (
        requests.get(
            f"{dashboard.base}/api/contents?token={dashboard.token}", timeout=10
        ).status_code
        == 403
    )
    r = requests.post(f"{dashboard.base}/api/sessions?token={dashboard.token}", json={}, timeout=10)
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "count",
            "__import__('os').system('touch PWNED')",
            "is declared as int but was given a str",
        ),
        ("count", "many", "is declared as int but was given a str"),
        ("evil", "1", "has no parameter `evil`"),
        ("greeting", "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}", "greeting"),
    ],
)
def test_bad_parameters_are_refused_with_the_clis_message_and_nothing_runs(
    dashboard: Dashboard, field: str, value: str, message: str
):
    before = len(runs(dashboard))
    s, xsrf = session(dashboard)
    r = s.post(
        dashboard.url(f"jobs/{JOB}/trigger", token=False),
        data={"_xsrf": xsrf, f"p:{field}": value, f"orig:{field}": "x"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 400, r.text[:500]
    error = re.search(r'<div class="error" id="form-error">(.*?)</div>', r.text, re.S)
    assert error and message.replace("`", "`") in error.group(1).replace("&#96;", "`"), r.text[
        -2000:
    ]
    assert len(runs(dashboard)) == before  # nothing stored, nothing started
    assert not (dashboard.work / "PWNED").exists() and not Path("PWNED").exists()


def test_trigger_runs_the_job_with_the_parameter_and_its_pages_show_it(dashboard: Dashboard):
    s, xsrf = session(dashboard)
    r = s.post(
        dashboard.url(f"jobs/{JOB}/trigger", token=False),
        data={
            "_xsrf": xsrf,
            "p:count": "5",
            "orig:count": "3",
            "p:greeting": "<script>alert(1)</script>",
            "orig:greeting": "hello",
        },
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text[:500]
    run_path = r.headers["Location"].split("/nbflow/", 1)[1]
    run_id = int(run_path.rsplit("/", 1)[1])
    state = wait_for_run(dashboard, run_path)
    assert state["state"] == "success", state
    run = RunStore(dashboard.home / "nbflow.db").get_run(run_id)
    assert run.run_type == "manual" and run.parameters["count"] == "5"

    page = s.get(dashboard.url(run_path, token=False), timeout=10).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "message = &lt;script&gt;alert(1)&lt;/script&gt; x5" in page  # nf.record, escaped
    assert 'sandbox="allow-scripts"' in page and "allow-same-origin" not in page
    assert 'data-pipeline-run="' in page and 'data-task="rows"' in page  # the inner pipeline
    assert "<svg" in page  # its DAG

    nb = s.get(dashboard.url(f"{run_path}/notebook", token=False), timeout=30)
    assert nb.status_code == 200
    csp = nb.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox allow-scripts;") and "default-src 'none'" in csp
    assert "allow-same-origin" not in csp
    assert 'id="probe"' in nb.text

    inner = re.search(r'data-pipeline-run="([^"]+)"', page).group(1)
    log = s.get(dashboard.url(f"runs/{inner}/logs/rows", token=False), timeout=10)
    assert log.status_code == 200 and log.text.strip() == "making 5 rows"
    assert log.headers["Content-Type"].startswith("text/plain")
    assert log.headers["X-Content-Type-Options"] == "nosniff"


def test_backfill_shows_the_count_before_it_creates_runs(dashboard: Dashboard):
    before = len(runs(dashboard))
    s, xsrf = session(dashboard)
    form = {"_xsrf": xsrf, "start": "2024-01-01", "end": "2024-01-03", "reprocess": "none"}
    r = s.post(dashboard.url(f"jobs/{JOB}/backfill", token=False), data=form, timeout=30)
    assert r.status_code == 200
    assert re.search(r"<b>3</b> tick\(s\); this makes <b>3</b> new run\(s\)", r.text), r.text[
        -1500:
    ]
    assert len(runs(dashboard)) == before  # counted, not created
    r = s.post(
        dashboard.url(f"jobs/{JOB}/backfill", token=False),
        data={**form, "confirm": "yes"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303
    made = [run for run in runs(dashboard) if run.run_type == "backfill"]  # type: ignore[attr-defined]
    assert len(made) == 3
    for run in made:
        wait_for_run(dashboard, f"jobs/{JOB}/runs/{run.id}")  # type: ignore[attr-defined]
    states = {run.state for run in runs(dashboard) if run.run_type == "backfill"}  # type: ignore[attr-defined]
    assert states == {"success"}
    job = s.get(
        dashboard.url(f"jobs/{JOB}?state=success&since=2024-01-02&until=2024-01-02", token=False),
        timeout=10,
    )
    rows = re.findall(r'<tr data-run="(\d+)">', job.text)
    assert len(rows) == 1  # the filters: one success on 2 January


def test_the_pipeline_and_cache_pages_read_the_history_and_the_cache(dashboard: Dashboard):
    page = requests.get(dashboard.url("pipelines/sales"), timeout=10).text
    assert 'data-task="raw"' in page and 'data-task="total"' in page
    assert 'class="chart"' in page  # the duration chart per task
    assert "last ran because: parameter" in page
    cache = requests.get(dashboard.url("pipelines/sales/cache?preview=raw"), timeout=30).text
    assert "<code>pandas.DataFrame</code>" in cache and "<code>int</code>" in cache
    assert "raw: 5 x 2" in cache
    assert "&lt;b&gt;north&lt;/b&gt;" in cache and "<b>north</b>" not in cache


def test_the_pipeline_page_shows_a_code_edit_a_status_elsewhere_saw(dashboard: Dashboard):
    """A script runs `snapweb`; another process edits `load` and calls `pipe.status()`; the
    server (a third process) shows the planner's reason, and fresh again after a run."""
    env = env_for(dashboard.home, dashboard.work.parent)
    work = dashboard.work
    for name, value, then in (
        ("snap_run.py", 1, "pipe.run()"),
        ("snap_edit.py", 2, "pipe.status()"),
    ):
        (work / name).write_text(TWO_TASKS.format(name="snapweb", value=value) + f"\n{then}\n")
        subprocess.run([sys.executable, name], cwd=work, env=env, check=True)
    page = html.unescape(requests.get(dashboard.url("pipelines/snapweb"), timeout=10).text)
    assert "stale: code of `load` changed" in page
    assert "stale: upstream `load` is stale: code of `load` changed" in page
    assert re.search(r"as of [^<]+, from \S+ pid \d+ \(" + re.escape(str(work)), page)
    assert "snap_edit.py)" in page
    (work / "snap_rerun.py").write_text(
        TWO_TASKS.format(name="snapweb", value=2) + "\npipe.run()\n"
    )
    subprocess.run([sys.executable, "snap_rerun.py"], cwd=work, env=env, check=True)
    page = html.unescape(requests.get(dashboard.url("pipelines/snapweb"), timeout=10).text)
    assert "code of `load` changed</td>" not in page
    assert page.count("fresh: unchanged since it last ran; its result is cached") == 2


def test_a_failed_run_is_rerun_from_its_page_with_its_parameters(dashboard: Dashboard):
    flag = dashboard.work / "fail-now"
    flag.write_text("")
    s, xsrf = session(dashboard)
    r = s.post(
        dashboard.url(f"jobs/{JOB}/trigger", token=False),
        data={"_xsrf": xsrf, "p:fail_if": str(flag), "orig:fail_if": ""},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text[:500]
    run_path = r.headers["Location"].split("/nbflow/", 1)[1]
    assert wait_for_run(dashboard, run_path)["state"] == "failed"
    page = s.get(dashboard.url(run_path, token=False), timeout=10).text
    assert "failing on purpose" in page and ">Rerun<" in page
    failed_id = int(run_path.rsplit("/", 1)[1])

    flag.unlink()  # the cause is fixed; rerun it
    r = s.post(
        dashboard.url(f"jobs/{JOB}/rerun", token=False),
        data={"_xsrf": xsrf, "run": str(failed_id)},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text[:500]
    again = r.headers["Location"].split("/nbflow/", 1)[1]
    assert again != run_path
    assert wait_for_run(dashboard, again)["state"] == "success"
    store = RunStore(dashboard.home / "nbflow.db")
    new = store.get_run(int(again.rsplit("/", 1)[1]))
    assert new.run_type == "manual" and new.parameters["fail_if"] == str(flag)
    # A run that did not fail is not rerun.
    r = s.post(
        dashboard.url(f"jobs/{JOB}/rerun", token=False),
        data={"_xsrf": xsrf, "run": str(new.id)},
        timeout=30,
    )
    assert r.status_code == 400 and "not failed; nothing to rerun" in r.text


def test_listening_elsewhere_with_ip_still_needs_the_token(tmp_path):
    import subprocess
    import sys
    import time

    from tests.ui.conftest import env_for

    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "nbflow", "ui", "--port", "0", "--ip", "0.0.0.0",
             "--home", str(tmp_path / "home")],
            env=env_for(tmp_path / "home", tmp_path), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            pattern = re.compile(
                r"^nbflow dashboard: http://0\.0\.0\.0:(\d+)/nbflow/\?token=(\S+)\n", re.M
            )
            while (found := pattern.search(log.read_text(errors="replace"))) is None:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            token = found.group(2)
            port = int(found.group(1))
            bare = requests.get(
                f"http://127.0.0.1:{port}/nbflow/", allow_redirects=False, timeout=10
            )
            assert bare.status_code == 302 and "/login" in bare.headers["Location"]
            ok = requests.get(f"http://127.0.0.1:{port}/nbflow/?token={token}", timeout=10)
            assert ok.status_code == 200 and "No jobs in this home" in ok.text
        finally:
            server.terminate()
            server.wait(20)


def test_a_history_run_has_a_page_and_a_live_state(dashboard: Dashboard):
    page = requests.get(dashboard.url("pipelines/sales"), timeout=10).text
    run_id = re.search(r'href="/nbflow/runs/([0-9a-f]+)"', page).group(1)
    state = requests.get(dashboard.url(f"api/runs/{run_id}"), timeout=10).json()
    assert state == {
        "state": "ok",
        "active": False,
        "tasks": {run_id: {"raw": "done", "total": "done"}},
    }
    run = requests.get(dashboard.url(f"runs/{run_id}"), timeout=10).text
    assert "Pipeline run" in run and 'data-task="raw"' in run
    assert requests.get(dashboard.url("runs/nosuchrun"), timeout=10).status_code == 404
    unknown = requests.get(dashboard.url("jobs/greeet"), timeout=10)
    assert unknown.status_code == 404 and "did you mean" in unknown.text and "greet" in unknown.text
    bare = requests.get(
        dashboard.url(f"api/runs/{run_id}", token=False), allow_redirects=False, timeout=10
    )
    assert bare.status_code in (302, 403)

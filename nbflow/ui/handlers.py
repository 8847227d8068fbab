"""The dashboard's pages, JSON endpoints and actions (tornado handlers under `/nbflow/`).

Every handler is `@web.authenticated` (Jupyter's login: the token or the Jupyter session
cookie; a page without it redirects to the login page, anything else gets 403) and
`@authorized` on the `nbflow` resource. Actions are POSTs that always need the XSRF
value of a page of ours, even with a token in the URL (Jupyter skips that check for
token requests; a dashboard button is always pressed on one of our pages, so there is
no reason to). Output notebooks are served apart, sandboxed (`nbflow.ui.notebooks`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join
from tornado import web

from nbflow.core.errors import NbflowError
from nbflow.jobs.runstore import UnknownJobError
from nbflow.ui import actions, cached, queries
from nbflow.ui.notebooks import IFRAME_SANDBOX, NOTEBOOK_CSP, render_notebook

RESOURCE = "nbflow"
JOB = r"(?P<name>[^/]+)"


class BaseHandler(ExtensionHandlerMixin, JupyterHandler):
    """Shared by every dashboard handler: the home's stores and the page renderer."""

    auth_resource = RESOURCE

    @property
    def sources(self) -> queries.Sources:
        return self.settings["nbflow_sources"]

    @property
    def root(self) -> str:
        """The dashboard's URL prefix (`/nbflow/`, under Jupyter's base URL)."""
        return str(url_path_join(self.settings.get("base_url", "/"), "nbflow/"))

    def page(self, template: str, status: int = 200, **context: Any) -> None:
        env = self.settings["nbflow_templates"]
        html = env.get_template(template).render(
            root=self.root,
            xsrf=self.xsrf_token.decode()
            if isinstance(self.xsrf_token, bytes)
            else self.xsrf_token,
            home=str(self.sources.home),
            sandbox=IFRAME_SANDBOX,
            **context,
        )
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(html)

    def failure(self, exc: Exception, status: int = 404) -> None:
        self.page("error.html", status=status, message=str(exc))

    def require_xsrf(self) -> None:
        """Tornado's own XSRF check, also for token-authenticated requests."""
        web.RequestHandler.check_xsrf_cookie(self)

    def form(self, name: str, default: str = "") -> str:
        return self.get_body_argument(name, default).strip()


class OverviewHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        self.page("overview.html", **queries.overview(self.sources))


class OverviewJSONHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(queries.overview(self.sources)))


def _date_arg(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError as exc:
        raise NbflowError(f"`{text}` is not a date: give it as YYYY-MM-DD") from exc
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


class JobHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self, name: str) -> None:
        self.show(name)

    def show(self, name: str, status: int = 200, **extra: Any) -> None:
        state = self.get_query_argument("state", "") or None
        since_text = self.get_query_argument("since", "")
        until_text = self.get_query_argument("until", "")
        try:
            since = _date_arg(since_text)
            until = _date_arg(until_text)
            if until is not None:
                until += dt.timedelta(days=1, microseconds=-1)
            view = queries.job_page(self.sources, name, state=state, since=since, until=until)
        except NbflowError as exc:
            self.failure(exc, 404 if isinstance(exc, UnknownJobError) else 400)
            return
        from nbflow.jobs.runstore import RUN_STATES

        self.page(
            "job.html",
            status=status,
            job=view,
            states=RUN_STATES,
            filters={"state": state or "", "since": since_text, "until": until_text},
            error=extra.get("error", ""),
            given=extra.get("given", {}),
            notice=self.get_query_argument("notice", ""),
        )


class TriggerHandler(JobHandler):
    @web.authenticated
    @authorized
    def post(self, name: str) -> None:
        self.require_xsrf()
        given: dict[str, str] = {}
        overrides: dict[str, str] = {}
        for key in self.request.body_arguments:
            if key.startswith("p:"):
                pname = key[2:]
                value = self.form(key)
                given[pname] = value
                # Only what the person changed is an override: an untouched field keeps
                # the job's own parameter text (a template such as {{ ds }}) or the default.
                if value != self.form("orig:" + pname):
                    overrides[pname] = value
        try:
            run = actions.trigger(self.sources.jobs, self.sources.home, name, overrides)
        except NbflowError as exc:
            self.show(name, status=400, error=str(exc), given=given)
            return
        self.redirect(f"{self.root}jobs/{web.escape.url_escape(name)}/runs/{run.id}", status=303)


class PauseHandler(BaseHandler):
    @web.authenticated
    @authorized
    def post(self, name: str, verb: str) -> None:
        self.require_xsrf()
        try:
            (actions.pause if verb == "pause" else actions.resume)(self.sources.jobs, name)
        except NbflowError as exc:
            self.failure(exc)
            return
        self.redirect(f"{self.root}jobs/{web.escape.url_escape(name)}?notice={verb}d", status=303)


class BackfillHandler(JobHandler):
    @web.authenticated
    @authorized
    def post(self, name: str) -> None:
        self.require_xsrf()
        start, end = self.form("start"), self.form("end")
        reprocess = self.form("reprocess", "none")
        try:
            if self.form("confirm") != "yes":
                preview = actions.preview_backfill(self.sources.jobs, name, start, end, reprocess)
                self.page(
                    "backfill.html",
                    name=name,
                    start=start,
                    end=end,
                    reprocess=reprocess,
                    preview=preview,
                )
                return
            ids = actions.backfill(
                self.sources.jobs, self.sources.home, name, start, end, reprocess
            )
        except NbflowError as exc:
            self.show(name, status=400, error=str(exc))
            return
        notice = f"backfill started: {len(ids)} run(s)"
        self.redirect(
            f"{self.root}jobs/{web.escape.url_escape(name)}?notice={web.escape.url_escape(notice)}",
            status=303,
        )


class RerunHandler(JobHandler):
    @web.authenticated
    @authorized
    def post(self, name: str) -> None:
        self.require_xsrf()
        run_id = self.form("run")
        try:
            if run_id:
                ids = actions.rerun(self.sources.jobs, self.sources.home, int(run_id))
            else:
                ids = actions.rerun_failed(self.sources.jobs, self.sources.home, name)
        except (NbflowError, ValueError) as exc:
            self.show(name, status=400, error=str(exc))
            return
        if run_id and len(ids) == 1:
            self.redirect(
                f"{self.root}jobs/{web.escape.url_escape(name)}/runs/{ids[0]}", status=303
            )
            return
        notice = web.escape.url_escape(f"rerun started: {len(ids)} run(s)")
        self.redirect(f"{self.root}jobs/{web.escape.url_escape(name)}?notice={notice}", status=303)


class JobRunHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self, name: str, run_id: str) -> None:
        try:
            view = queries.job_run(self.sources, name, int(run_id))
        except NbflowError as exc:
            self.failure(exc)
            return
        self.page("job_run.html", view=view)


class JobRunJSONHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self, name: str, run_id: str) -> None:
        try:
            state = queries.live_state(self.sources, name, int(run_id))
        except NbflowError as exc:
            raise web.HTTPError(404, str(exc)) from exc
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(state))


class NotebookHandler(BaseHandler):
    """An output notebook as HTML, sandboxed by its own CSP (see `nbflow.ui.notebooks`)."""

    def serve(self, path: str | None) -> None:
        from pathlib import Path

        if not path or not Path(path).is_file():
            raise web.HTTPError(404, "this run has no output notebook (yet)")
        body = render_notebook(path)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", NOTEBOOK_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(body)

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # Jupyter's own CSP would be merged after ours; ours is the one that matters.
        self.clear_header("Content-Security-Policy")


class JobRunNotebookHandler(NotebookHandler):
    @web.authenticated
    @authorized
    def get(self, name: str, run_id: str) -> None:
        try:
            run = self.sources.jobs.get_run(int(run_id))
        except NbflowError as exc:
            raise web.HTTPError(404, str(exc)) from exc
        if run.job != name:
            raise web.HTTPError(404)
        self.serve(run.output_path)


class RunNotebookHandler(NotebookHandler):
    @web.authenticated
    @authorized
    def get(self, run_id: str) -> None:
        row = self.sources.history.run(run_id)
        if row is None or row["kind"] != "notebook":
            raise web.HTTPError(404, "no notebook run with this id")
        self.serve(row.get("output"))


class RunHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self, run_id: str) -> None:
        try:
            view = queries.history_run(self.sources, run_id)
        except NbflowError as exc:
            self.failure(exc)
            return
        self.page("run.html", view=view)


class RunJSONHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self, run_id: str) -> None:
        try:
            state = queries.history_live_state(self.sources, run_id)
        except NbflowError as exc:
            raise web.HTTPError(404, str(exc)) from exc
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(state))


class LogHandler(BaseHandler):
    """A task's captured output as plain text (never HTML: nothing in it can run)."""

    @web.authenticated
    @authorized
    def get(self, run_id: str, task: str) -> None:
        try:
            text = queries.task_log(self.sources, run_id, task)
        except (KeyError, NbflowError) as exc:
            raise web.HTTPError(404, f"no log of task `{task}` in run `{run_id}`") from exc
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
        self.finish(text)


class PipelineHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self, name: str) -> None:
        try:
            view = queries.pipeline_page(self.sources, name)
        except NbflowError as exc:
            self.failure(exc)
            return
        self.page("pipeline.html", view=view)


class CacheHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self, name: str) -> None:
        preview = None
        task = self.get_query_argument("preview", "")
        error = ""
        if task:
            try:
                preview = cached.cached_value_preview(self.sources, name, task)
            except NbflowError as exc:
                error = str(exc)
        self.page(
            "cache.html",
            view=cached.cached_results(self.sources, name),
            preview=preview,
            preview_task=task,
            error=error,
        )


def routes() -> list[tuple[str, type[BaseHandler]]]:
    """URL patterns under Jupyter's base URL."""
    return [
        (r"/nbflow/?", OverviewHandler),
        (r"/nbflow/api/overview", OverviewJSONHandler),
        (rf"/nbflow/jobs/{JOB}/?", JobHandler),
        (rf"/nbflow/jobs/{JOB}/trigger", TriggerHandler),
        (rf"/nbflow/jobs/{JOB}/(?P<verb>pause|resume)", PauseHandler),
        (rf"/nbflow/jobs/{JOB}/backfill", BackfillHandler),
        (rf"/nbflow/jobs/{JOB}/rerun", RerunHandler),
        (rf"/nbflow/jobs/{JOB}/runs/(?P<run_id>\d+)/?", JobRunHandler),
        (rf"/nbflow/jobs/{JOB}/runs/(?P<run_id>\d+)/notebook", JobRunNotebookHandler),
        (rf"/nbflow/api/jobs/{JOB}/runs/(?P<run_id>\d+)", JobRunJSONHandler),
        (r"/nbflow/api/runs/(?P<run_id>[\w.-]+)", RunJSONHandler),
        (r"/nbflow/runs/(?P<run_id>[\w.-]+)/?", RunHandler),
        (r"/nbflow/runs/(?P<run_id>[\w.-]+)/notebook", RunNotebookHandler),
        (r"/nbflow/runs/(?P<run_id>[\w.-]+)/logs/(?P<task>.+)", LogHandler),
        (r"/nbflow/pipelines/(?P<name>[^/]+)/?", PipelineHandler),
        (r"/nbflow/pipelines/(?P<name>[^/]+)/cache", CacheHandler),
    ]

"""Templated parameter values: `-p date "{{ ds }}"` becomes the run's date.

Policy:
- A value is a template when it contains `{{` or `{%`; anything else is left
  exactly as given (no Jinja escaping surprises for plain text).
- Rendering uses Jinja2's `SandboxedEnvironment` with `StrictUndefined`. The
  sandbox refuses what a template has no business doing (underscore
  attributes such as `cycler.__init__.__globals__` or `__subclasses__()`,
  huge ranges): the text of a `-p` value is the user's, but it is evaluated
  by the scheduler, so it gets the documented names and filters, not Python.
  A refused access is a `TemplateError` naming the parameter, at `schedule
  add` (which renders every template once). A misspelt name is an error
  (`TemplateError`, naming the parameter, the name and the near miss), never
  an empty string that would run the notebook for the wrong day. Autoescape is
  off: the values are notebook parameters, not HTML.
- The context of a run, built by `run_context`:

      ds                   the logical date's day in the job's zone, 2024-03-31
      ds_nodash            the same, 20240331
      logical_date         the run's tick, ISO 8601 in UTC
      data_interval_start  the previous tick (ISO, UTC): the data this run covers
      data_interval_end    this run's tick (ISO, UTC)
      params.X             the job's parameter X (itself rendered if templated),
                           else the notebook's declared default for X

  The three times are datetimes that print as ISO text, so
  `{{ logical_date.strftime("%H") }}` works as well.
- `{{ secret('NAME') }}` is a reference to a secret, never its value: it
  renders to `secret:NAME`, which the parameter parser reads as a
  `SecretRef` resolved inside the kernel (`nbflow.core.secrets`). It must be
  the whole value: text around it would turn the reference into a plain
  string, so that is an error.
- `params.X` may refer to another templated parameter; it is rendered on
  demand, and a cycle (`a` uses `b`, `b` uses `a`) is an error naming it.
- **Only the job's own `-p` texts are templates.** Data that reaches a run
  from elsewhere — a file sensor's path, the notebook's declared defaults —
  is passed in `literals` and is never rendered, whatever it contains: a file
  named `x{{ 7 * 7 }}.csv` arrives as itself, and a file name can never run
  code inside the scheduler.
- Templates are checked when a schedule is added (`check_templates`), by
  rendering them once against the next tick, so a typo fails at `add`, not
  at 2 AM.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from nbflow.core.errors import JobsError, did_you_mean
from nbflow.core.secrets import SecretError, SecretRef

__all__ = [
    "CONTEXT_NAMES",
    "TemplateError",
    "is_template",
    "render_parameters",
    "render_value",
    "run_context",
]

CONTEXT_NAMES = ("ds", "ds_nodash", "logical_date", "data_interval_start", "data_interval_end")

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)


class TemplateError(JobsError):
    """A parameter's template does not render: bad syntax or an undefined name."""

    def __init__(self, param: str, value: str, detail: str) -> None:
        self.param = param
        self.value = value
        super().__init__(f"the template of parameter `{param}` ({value!r}) {detail}")


class IsoDatetime(datetime):
    """A datetime that prints as ISO 8601 (`str()` of a plain one uses a space)."""

    def __str__(self) -> str:
        return self.isoformat()


def _iso(moment: datetime) -> IsoDatetime:
    moment = moment.astimezone(UTC)
    return IsoDatetime(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=UTC,
    )


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def run_context(
    logical_date: datetime,
    tz: str,
    *,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
) -> dict[str, Any]:
    """The template names of a run whose tick is `logical_date` (aware) in a job in zone `tz`.

    `data_interval_start` defaults to `logical_date` (no previous tick known);
    `data_interval_end` to `logical_date`.
    """
    local_day: date = logical_date.astimezone(ZoneInfo(tz)).date()
    return {
        "ds": local_day.isoformat(),
        "ds_nodash": local_day.strftime("%Y%m%d"),
        "logical_date": _iso(logical_date),
        "data_interval_start": _iso(data_interval_start or logical_date),
        "data_interval_end": _iso(data_interval_end or logical_date),
    }


class _Params(Mapping[str, Any]):
    """`params` in a template: the job's values, templated ones rendered on first use."""

    def __init__(
        self,
        raw: Mapping[str, Any],
        context: Mapping[str, Any],
        literals: frozenset[str] = frozenset(),
    ) -> None:
        self._raw = raw
        self._context = context
        self._literals = literals
        self._done: dict[str, Any] = {}
        self._stack: list[str] = []

    def __getitem__(self, name: str) -> Any:
        if name in self._done:
            return self._done[name]
        if name not in self._raw:
            raise KeyError(name)
        value = self._raw[name]
        if name not in self._literals and is_template(value):
            if name in self._stack:
                cycle = " -> ".join(
                    f"`{n}`" for n in [*self._stack[self._stack.index(name) :], name]
                )
                raise TemplateError(
                    self._stack[0],
                    str(self._raw[self._stack[0]]),
                    f"refers to itself through params: {cycle}; break the cycle",
                )
            self._stack.append(name)
            try:
                value = _render_one(name, value, self._context, self)
            finally:
                self._stack.pop()
        self._done[name] = value
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _render_one(name: str, value: str, context: Mapping[str, Any], params: _Params) -> str:
    try:
        template = _ENV.from_string(value)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(name, value, f"is not valid Jinja2 ({exc.message}); fix it") from exc
    referenced: list[SecretRef] = []

    def secret(secret_name: str) -> str:
        try:
            ref = SecretRef(secret_name)
        except SecretError as exc:
            raise TemplateError(name, value, f"names no valid secret: {exc}") from None
        referenced.append(ref)
        return str(ref)

    try:
        rendered = template.render({**context, "params": params, "secret": secret})
        if referenced and rendered != str(referenced[0]):
            raise TemplateError(
                name,
                value,
                "puts text around a secret reference; `{{ secret('NAME') }}` must be the whole "
                "value (the secret is fetched inside the kernel: compose it there)",
            )
        return rendered
    except SecurityError as exc:
        raise TemplateError(
            name,
            value,
            f"does something templates may not do ({str(exc).rstrip('.')}); templates see only "
            f"{', '.join(f'`{n}`' for n in CONTEXT_NAMES)}, `params` and Jinja2's filters",
        ) from exc
    except jinja2.UndefinedError as exc:
        missing = _undefined_name(str(exc))
        known = [*context, "params", "secret"]
        if missing and exc.message and "has no attribute" in exc.message:
            # params.X with an unknown X
            hint = did_you_mean(missing, params) or (
                f"; the job's parameters are {', '.join(f'`{p}`' for p in params)}"
            )
            detail = f"uses `params.{missing}`, which the job does not define{hint}"
        else:
            hint = did_you_mean(missing or "", known) or (
                f"; available: {', '.join(f'`{k}`' for k in known)}"
            )
            detail = f"uses `{missing}`, which is not defined{hint}"
        raise TemplateError(name, value, detail) from exc
    except TemplateError:
        raise
    except (TypeError, ValueError, AttributeError, ArithmeticError, LookupError) as exc:
        raise TemplateError(name, value, f"failed to render: {type(exc).__name__}: {exc}") from exc


def _undefined_name(message: str) -> str | None:
    # Jinja's messages: "'dss' is undefined" / "'..._Params object' has no attribute 'x'"
    parts = message.split("'")
    if "has no attribute" in message and len(parts) >= 4:
        return parts[-2]
    return parts[1] if len(parts) >= 2 else None


def render_value(
    name: str, value: Any, context: Mapping[str, Any], params: Mapping[str, Any] | None = None
) -> Any:
    """One parameter value rendered against `context` (non-templates come back unchanged)."""
    if not is_template(value):
        return value
    return _render_one(name, value, context, _Params(params or {name: value}, context))


def render_parameters(
    parameters: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    literals: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every value of `parameters` rendered; templates become text, the rest is unchanged.

    `defaults` (the notebook's declared defaults) are visible as `params.X`
    when the job does not set X, but are not rendered into the result.
    `literals` are values that come from data, not from the user's `-p` text
    (a sensed file's path): they are in the result, override `parameters` of
    the same name, and are never rendered, not even when another template
    reads them as `params.X`. Neither are `defaults`.
    """
    raw = {**(defaults or {}), **parameters, **(literals or {})}
    fixed = frozenset((defaults or {}).keys() - parameters.keys()) | frozenset(literals or {})
    params = _Params(raw, context, fixed)
    return {name: params[name] for name in {**parameters, **(literals or {})}}

"""Parameter templates: the names a run sees, strictness, and params.X."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nbflow.jobs.templates import TemplateError, is_template, render_parameters, run_context


def berlin_context() -> dict:
    # 23:30 UTC on 31 March is 01:30 on 1 April in Berlin: ds follows the job's zone.
    return run_context(
        datetime(2024, 3, 31, 23, 30, tzinfo=UTC),
        "Europe/Berlin",
        data_interval_start=datetime(2024, 3, 30, 23, 30, tzinfo=UTC),
        data_interval_end=datetime(2024, 3, 31, 23, 30, tzinfo=UTC),
    )


def test_ds_is_the_date_in_the_job_zone_not_in_utc():
    out = render_parameters({"d": "{{ ds }}", "n": "{{ ds_nodash }}"}, berlin_context())
    assert out == {"d": "2024-04-01", "n": "20240401"}


def test_times_render_as_iso_utc_and_stay_datetimes():
    out = render_parameters(
        {
            "l": "{{ logical_date }}",
            "s": "{{ data_interval_start }}",
            "e": "{{ data_interval_end }}",
            "h": "{{ logical_date.strftime('%H:%M') }}",
        },
        berlin_context(),
    )
    assert out == {
        "l": "2024-03-31T23:30:00+00:00",
        "s": "2024-03-30T23:30:00+00:00",
        "e": "2024-03-31T23:30:00+00:00",
        "h": "23:30",
    }


def test_params_refer_to_other_parameters_rendered_on_demand():
    out = render_parameters(
        {
            "path": "data/{{ params.region }}/{{ params.day }}.csv",
            "region": "eu",
            "day": "{{ ds }}",
        },
        berlin_context(),
    )
    assert out["path"] == "data/eu/2024-04-01.csv"


def test_plain_values_are_left_exactly_as_given():
    values = {"a": "{ not a template }", "b": "50%", "c": 3}
    assert render_parameters(values, berlin_context()) == values
    assert (
        not is_template("{ x }") and is_template("{{ x }}") and is_template("{% if 1 %}{% endif %}")
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"d": "{{ dss }}"}, r"uses `dss`, which is not defined \(did you mean `ds`\?\)"),
        ({"d": "{{ params.regoin }}", "region": "eu"}, "did you mean `region`?"),
        ({"a": "{{ params.b }}", "b": "{{ params.a }}"}, "`a` -> `b` -> `a`"),
        ({"d": "{{ ds "}, "not valid Jinja2"),
    ],
)
def test_mistakes_are_errors_naming_the_parameter(values, message):
    with pytest.raises(TemplateError, match=message) as info:
        render_parameters(values, berlin_context())
    assert info.value.param in values


@pytest.mark.parametrize(
    "template",
    [
        "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ params.__class__ }}",
    ],
)
def test_templates_render_in_a_sandbox_that_refuses_python_internals(template):
    """Issue 22 item 4: a `-p` template gets the documented names and filters, not Python."""
    with pytest.raises(TemplateError, match="may not do") as caught:
        render_parameters({"x": template}, berlin_context())
    assert "parameter `x`" in str(caught.value)
    assert not Path("PWNED").exists()


def test_the_sandbox_keeps_documented_names_methods_and_filters():
    out = render_parameters(
        {
            "h": "{{ logical_date.strftime('%H') }}",
            "u": "{{ ds | replace('-', '/') | upper }}",
            "p": "{{ params.region | title }}-{{ ds_nodash }}",
            "region": "south",
        },
        berlin_context(),
    )
    assert out == {"h": "23", "u": "2024/04/01", "p": "South-20240401", "region": "south"}


def test_literals_and_notebook_defaults_are_never_rendered():
    out = render_parameters(
        {"both": "{{ params.path }}|{{ params.default }}"},
        berlin_context(),
        defaults={"default": "{{ 6 * 7 }}"},
        literals={"path": "/in/sum_{{ 7 * 7 }}.csv"},
    )
    assert out == {"both": "/in/sum_{{ 7 * 7 }}.csv|{{ 6 * 7 }}", "path": "/in/sum_{{ 7 * 7 }}.csv"}

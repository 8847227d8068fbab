"""Declared parameters, type checks, faithful rendering and command-line values (no kernel needed)."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from nbflow.core.errors import ParameterError
from nbflow.jobs.notebook import NotebookReadError
from nbflow.jobs.parameters import (
    NOT_A_LITERAL,
    ParameterTypeError,
    UnknownParameterError,
    check_parameters,
    notebook_parameters,
    parse_cli_value,
    render_parameters,
)
from tests.conftest import FIXTURES

TYPED = FIXTURES / "notebooks" / "typed_parameters.ipynb"


def run_cell(source: str) -> dict[str, Any]:
    """Execute an injected cell the way a kernel would, in a fresh namespace."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<injected-parameters>", "exec"), namespace)
    namespace.pop("__builtins__")
    return namespace


# --- reading declared parameters -----------------------------------------------------


def test_declared_parameters_come_back_as_values_with_types_and_comments() -> None:
    params = notebook_parameters(TYPED)
    assert list(params)[:4] == ["title", "rows", "ratio", "verbose"]
    assert params["rows"].default == 10 and params["rows"].type == "int"
    assert params["rows"].comment == "how many rows to keep"
    assert params["ratio"].default == 0.5 and params["ratio"].comment == ""
    assert params["tags"].default == ["a", "b"]
    assert params["span"].default == (1, 2) and params["codes"].default == {1, 2}
    assert params["day"].default == dt.date(2024, 1, 1) and params["day"].type == "date"
    assert params["stamp"].default == dt.datetime(2024, 1, 1, 2, 30)
    assert params["price"].default == Decimal("1.10")
    assert params["folder"].default == Path("data")
    assert params["region"].default is None and params["region"].type is None
    # computed defaults are never executed, and say so
    assert params["computed"].default is NOT_A_LITERAL
    assert params["computed"].source == 'len("abc")'
    # imports in the parameters cell are not parameters
    assert "datetime" not in params and "Decimal" not in params


def test_annotations_name_the_type(tmp_path: Path) -> None:
    from tests.jobs.notebooks import write_notebook

    nb = write_notebook(
        tmp_path / "annotated.ipynb",
        parameters="limit: int = None  # optional cap\na = b = 'x'\n",
    )
    params = notebook_parameters(nb)
    assert params["limit"].type == "int" and params["limit"].comment == "optional cap"
    assert params["a"].default == params["b"].default == "x"


QUOTED = FIXTURES / "notebooks" / "quoted_annotations.ipynb"


def test_a_quoted_annotation_means_the_same_as_the_unquoted_one() -> None:
    params = notebook_parameters(QUOTED)
    assert params["limit"].type == params["cap"].type == "int"
    assert params["nothing"].type == "NoneType"  # not "'NoneType'", with its quotes
    assert params["day"].type == "datetime.date"
    for name in ("limit", "cap"):
        check_parameters({name: 5}, params, "quoted.ipynb")
        with pytest.raises(
            ParameterTypeError, match=f"`{name}` .* declared as int but was given a str"
        ):
            check_parameters({name: "ten"}, params, "quoted.ipynb")
    with pytest.raises(ParameterTypeError, match="declared as date"):
        check_parameters({"day": "2024-01-01"}, params, "quoted.ipynb")
    assert parse_cli_value("2024-01-01", params["day"]) == dt.date(2024, 1, 1)


def test_a_notebook_without_a_parameters_cell_declares_none(tmp_path: Path) -> None:
    from tests.jobs.notebooks import write_notebook

    assert notebook_parameters(write_notebook(tmp_path / "plain.ipynb", parameters=None)) == {}


def test_malformed_notebook_names_the_file() -> None:
    with pytest.raises(NotebookReadError, match=r"malformed\.ipynb.*not a valid notebook"):
        notebook_parameters(FIXTURES / "notebooks" / "malformed.ipynb")


def test_missing_notebook_suggests_a_near_name() -> None:
    with pytest.raises(NotebookReadError, match=r"no such file \(did you mean `typed_parameters"):
        notebook_parameters(FIXTURES / "notebooks" / "typed_parameter.ipynb")


# --- checking ------------------------------------------------------------------------


def test_unknown_parameter_lists_declared_ones_and_the_near_miss() -> None:
    declared = notebook_parameters(TYPED)
    with pytest.raises(UnknownParameterError) as info:
        check_parameters({"rowz": 3}, declared, "typed_parameters.ipynb")
    message = str(info.value)
    assert "no parameter `rowz`" in message and "did you mean `rows`" in message
    assert "`title`" in message and "`folder`" in message
    assert info.value.param == "rowz"


def test_parameters_for_a_notebook_without_a_parameters_cell_say_how_to_declare_them() -> None:
    with pytest.raises(
        UnknownParameterError, match="has no cell tagged `parameters`: tag the cell"
    ):
        check_parameters({"day": "2024-01-01"}, {}, "plain.ipynb")


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("ratio", 3, True),  # int into float is fine
        ("ratio", "0.5", False),
        ("rows", 2.5, False),
        ("rows", True, False),  # a flag is not a count
        ("rows", None, False),  # a typed default rejects None
        ("region", {"any": "thing"}, True),  # a None default accepts anything
        ("computed", object(), True),  # a computed default accepts anything
        ("day", dt.date(2024, 2, 1), True),
        ("day", dt.datetime(2024, 2, 1), False),
        ("stamp", dt.datetime(2024, 2, 1, tzinfo=dt.UTC), True),
        ("folder", PurePosixPath("x"), True),
        ("folder", "x", False),
        ("tags", ("a",), False),
        ("price", Decimal("2"), True),
    ],
)
def test_values_must_fit_the_declared_type(name: str, value: Any, ok: bool) -> None:
    declared = notebook_parameters(TYPED)
    if ok:
        check_parameters({name: value}, declared, "nb.ipynb")
    else:
        with pytest.raises(ParameterTypeError, match=f"parameter `{name}` of notebook `nb.ipynb`"):
            check_parameters({name: value}, declared, "nb.ipynb")


# --- rendering -----------------------------------------------------------------------

HOSTILE = [
    'x"); import os; os.system("echo pwned")  #',
    "'''\nraise SystemExit\n'''",
    '"""',
    "line one\nline two\r\n\ttab",
    "back\\slash\\",
    "\x00nul and \x1b[31mansi",
    "ünïcødé ✓ 𝔘",
    "lone surrogate \ud800",
    "{date} %s {{x}}",
    "",
]

VALUES = [
    "plain",
    *HOSTILE,
    0,
    -17,
    10**40,
    0.1,
    -0.0,
    1e-300,
    math.inf,
    -math.inf,
    True,
    False,
    None,
    [],
    [1, "two", [3.0, None]],
    (),
    (1,),
    (1, (2, 3)),
    set(),
    {3, 1, 2},
    frozenset({"a"}),
    frozenset(),
    {},
    {"k": [1, 2], 2: "int key", (1, 2): {"nested": True}, None: 0},
    dt.date(2024, 2, 29),
    dt.datetime(2024, 1, 1, 2, 30, 15, 123456),
    dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2), "CEST")),
    dt.datetime(2024, 10, 27, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"), fold=1),
    dt.time(12, 0, 1, 5),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    Decimal("1.10"),
    Decimal("-1E+3"),
    Path("data/in put's.csv"),
    PurePosixPath("/tmp/x"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}:{v!r}"[:40])
def test_every_supported_value_renders_back_equal_and_of_the_same_type(value: Any) -> None:
    namespace = run_cell(render_parameters({"p": value}))
    assert list(namespace) == ["p"]  # helper imports are deleted again
    got = namespace["p"]
    assert type(got) is type(value)
    assert repr(got) == repr(value)  # repr also tells -0.0 from 0.0 and nested types apart
    if isinstance(value, dt.datetime | dt.time):
        assert got.tzinfo == value.tzinfo and got.fold == value.fold
        assert got.tzname() == value.tzname()


def test_hostile_strings_stay_data() -> None:
    params = {f"s{i}": s for i, s in enumerate(HOSTILE)}
    source = render_parameters(params)
    assert run_cell(source) == params
    # one statement per parameter, plus the comment line: nothing leaked into code
    assert len(source.splitlines()) == len(HOSTILE) + 1


def test_nan_renders_as_nan() -> None:
    assert math.isnan(run_cell(render_parameters({"x": math.nan}))["x"])


def test_the_cell_does_not_shadow_the_notebooks_own_names() -> None:
    source = render_parameters({"day": dt.date(2024, 1, 1), "price": Decimal("1")})
    namespace: dict[str, Any] = {"datetime": "the notebook's own", "Decimal": "its own too"}
    exec(source, namespace)
    assert namespace["datetime"] == "the notebook's own" and namespace["Decimal"] == "its own too"
    assert not [k for k in namespace if k.startswith("_nbflow")]


class Custom:
    pass


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"obj": Custom()}, r"parameter `obj` is a `tests\.jobs\.test_parameters\.Custom`"),
        ({"cfg": {"k": [1, Custom()]}}, r"parameter `cfg` \(at cfg\['k'\]\[1\]\) is a `.*Custom`"),
        ({"b": b"bytes"}, r"parameter `b` is a `builtins\.bytes`"),
        ({"n": __import__("collections").OrderedDict()}, r"`collections\.OrderedDict`"),
        ({"t": dt.datetime(2024, 1, 1, tzinfo=dt.tzinfo())}, r"time zone of type"),
        ({"not valid": 1}, r"'not valid' is not a Python identifier"),
        ({"class": 1}, r"'class' is not a Python identifier"),
    ],
)
def test_unsupported_values_raise_naming_the_parameter_and_type(
    params: dict[str, Any], match: str
) -> None:
    with pytest.raises(ParameterError, match=match):
        render_parameters(params)


def test_numpy_scalars_are_refused_with_a_conversion_hint() -> None:
    import numpy as np

    with pytest.raises(ParameterError, match=r"`numpy\.int64`.*convert with int\(\)"):
        render_parameters({"n": np.int64(3)})


def test_a_value_containing_itself_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ParameterError, match="contains itself"):
        render_parameters({"loop": loop})


# --- command-line values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("2.5", 2.5),
        ("[1, 2]", [1, 2]),
        ("{'a': (1, 2)}", {"a": (1, 2)}),
        ("None", None),
        ("True", True),
        ("'quoted'", "quoted"),
        ("hello world", "hello world"),
        ("2024-01-01", "2024-01-01"),
        ("os.system('x')", "os.system('x')"),
        ("[1, 2", "[1, 2"),
    ],
)
def test_cli_values_are_literals_or_else_strings(text: str, value: Any) -> None:
    got = parse_cli_value(text)
    assert got == value and type(got) is type(value)


def test_cli_values_follow_the_declared_type() -> None:
    declared = notebook_parameters(TYPED)
    assert parse_cli_value("42", declared["title"]) == "42"  # declared str: the raw text
    assert parse_cli_value("2024-03-01", declared["day"]) == dt.date(2024, 3, 1)
    assert parse_cli_value("2024-03-01T04:05", declared["stamp"]) == dt.datetime(2024, 3, 1, 4, 5)
    assert parse_cli_value("out", declared["folder"]) == Path("out")
    assert parse_cli_value("2.50", declared["price"]) == Decimal("2.50")
    assert parse_cli_value("7", declared["rows"]) == 7

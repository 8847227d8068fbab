"""What a `%%task` cell defines and reads, decided from its code."""

from __future__ import annotations

import pytest

from nbflow.jupyter.cells import CellError, analyze


def test_outputs_cover_every_kind_of_top_level_definition():
    a = analyze(
        "import pandas as pd\n"
        "from os import path as p\n"
        "x = 1\n"
        "y: int = 2\n"
        "a, (b, *c) = 1, (2, 3)\n"
        "x += 1\n"
        "for i in range(3):\n    total = i\n"
        "with open(__file__) as fh:\n    text = 1\n"
        "def helper():\n    return inner_only\n"
        "class Model:\n    pass\n"
        "if True:\n    flag = (w := 5)\n"
        "try:\n    z = 1\nexcept Exception as err:\n    pass\n"
        "_private = 3\n"
    )
    assert a.outputs == (
        "pd", "p", "x", "y", "a", "b", "c", "i", "total", "fh", "text", "helper", "Model",
        "flag", "w", "z", "err",
    )  # fmt: skip


def test_reads_are_free_names_in_source_order_without_builtins():
    a = analyze(
        "df = raw.dropna()\n"
        "n = len(df) + offset\n"
        "def f():\n    return helper_global + df.size\n"
        "vals = [v * scale for v in df]\n"
    )
    assert a.reads == ("raw", "offset", "helper_global", "scale")
    assert a.rebinds == ()


def test_reading_a_name_before_assigning_it_is_a_rebind():
    assert analyze("df = df.dropna()\n").rebinds == ("df",)
    assert analyze("count += 1\n").rebinds == ("count",)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = (\n", "does not parse"),
        ("from os import *\n", "import *"),
        ("global g\ng = 1\n", "global"),
    ],
)
def test_cells_that_cannot_be_tasks_say_why(source, message):
    with pytest.raises(CellError, match=message.replace("*", r"\*")):
        analyze(source)


def test_a_trailing_expression_is_captured_keeping_its_own_line_breaks():
    from nbflow.jupyter.cells import _capture_trailing_expression

    source = "x = [1, 2]\nlen(\n    x  # how many\n)  # done\n"
    captured, shows = _capture_trailing_expression(source)
    assert shows
    namespace: dict = {}
    exec(captured, namespace)
    assert namespace["__nbflow_shown__"] == 2
    assert _capture_trailing_expression("x = 1\nx;\n") == ("x = 1\nx;\n", False)
    assert _capture_trailing_expression("x = 1\n") == ("x = 1\n", False)
    # Columns count characters, not UTF-8 bytes.
    captured, _ = _capture_trailing_expression("é = 'ü'; é + 'x'\n")
    namespace = {}
    exec(captured, namespace)
    assert namespace["__nbflow_shown__"] == "üx"


def test_a_value_shown_in_a_worker_process_has_its_display_without_a_shell():
    import json
    import subprocess
    import sys

    code = (
        "import json\n"
        "from nbflow.jupyter.cells import display_bundle\n"
        "print(json.dumps(display_bundle({'rows': 3})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["data"]["text/plain"] == "{'rows': 3}"

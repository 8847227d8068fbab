"""Trigger rules decide from the final upstream states alone, with Airflow's meanings."""

from __future__ import annotations

import pytest

from nbflow.core.patterns.trigger_rules import RUN, evaluate

OK, FAIL, SKIP = "done", "failed", "skipped"


@pytest.mark.parametrize(
    ("rule", "states", "expected"),
    [
        ("all_success", [OK, "cached"], RUN),
        ("all_success", [OK, FAIL], "upstream_failed"),
        ("all_success", [OK, SKIP], "skipped"),
        ("all_failed", [FAIL, "upstream_failed"], RUN),
        ("all_failed", [FAIL, OK], "skipped"),
        ("all_done", [FAIL, SKIP], RUN),
        ("one_success", [FAIL, OK], RUN),
        ("one_success", [SKIP, SKIP], "skipped"),
        ("one_success", [SKIP, FAIL], "upstream_failed"),
        ("one_failed", [OK, FAIL], RUN),
        ("one_failed", [OK, SKIP], "skipped"),
        ("none_failed", [OK, SKIP], RUN),
        ("none_failed", [OK, "upstream_failed"], "upstream_failed"),
        ("none_failed_min_one_success", [SKIP, OK], RUN),
        ("none_failed_min_one_success", [SKIP, SKIP], "skipped"),
        ("none_failed_min_one_success", [OK, FAIL], "upstream_failed"),
        ("none_skipped", [OK, FAIL], RUN),
        ("none_skipped", [OK, SKIP], "skipped"),
        ("always", [FAIL, SKIP], RUN),
    ],
)
def test_each_rule_as_airflow_defines_it(rule: str, states: list[str], expected: str) -> None:
    assert evaluate(rule, states) == expected


def test_a_task_without_upstream_always_runs() -> None:
    assert evaluate("all_failed", []) == RUN


def test_an_unknown_rule_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown trigger rule 'all_sucess'"):
        evaluate("all_sucess", [OK])

"""The parts both exports share: the job as Python text, and how its options and templates map.

Responsibilities:
- `python_literal`: the job's spec as a readable Python dict literal (it is
  embedded in the generated file and read back by `Schedule.from_dict`).
- `template_names`: which of nbflow's template names a parameter uses, so the
  generated file can say what each means and what the orchestrator calls it.
- `format_seconds`: a duration as a person reads it in a comment.
"""

from __future__ import annotations

import pprint
import re
from collections.abc import Mapping
from typing import Any

from nbflow.jobs.templates import CONTEXT_NAMES, is_template

__all__ = ["comment_block", "format_seconds", "python_literal", "template_names"]


def python_literal(value: Any) -> str:
    """`value` (JSON-ready: dicts, lists, text, numbers, None) as Python source, one key per line."""
    return pprint.pformat(value, indent=1, width=88, sort_dicts=False)


def template_names(text: str) -> list[str]:
    """The run-context names (`ds`, `logical_date`, ...) and `params.X` a template uses, in order."""
    if not is_template(text):
        return []
    found: list[str] = []
    for match in re.finditer(r"\bparams\.([A-Za-z_]\w*)|\b([A-Za-z_]\w*)\b", text):
        name = f"params.{match.group(1)}" if match.group(1) else match.group(2)
        if (name in CONTEXT_NAMES or name.startswith("params.")) and name not in found:
            found.append(name)
    return found


def format_seconds(seconds: float) -> str:
    """`90.0` -> `90 s (1.5 min)`; whole numbers without a decimal point."""
    text = f"{seconds:g} s"
    if seconds >= 3600:
        text += f" ({seconds / 3600:g} h)"
    elif seconds >= 60:
        text += f" ({seconds / 60:g} min)"
    return text


def comment_block(lines: list[str], indent: str = "") -> str:
    """Lines as `# ` comments (blank lines stay bare `#`)."""
    return "\n".join(f"{indent}# {line}".rstrip() for line in lines)


def parameter_notes(
    parameters: Mapping[str, str], tz: str, meaning: Mapping[str, str]
) -> list[str]:
    """One note per job parameter: its nbflow value, and per template name used, `meaning[name]`
    (what the orchestrator calls it), so a person sees how each was mapped."""
    notes: list[str] = []
    for name, text in parameters.items():
        notes.append(f"{name} = {text!r}")
        names = template_names(text)
        if not names:
            notes.append("    plain text, parsed against the notebook's declared type")
        for used in names:
            key = "params" if used.startswith("params.") else used
            notes.append(f"    {used}: {meaning[key].format(tz=tz, name=used[7:])}")
    return notes

"""Start-up of nbflow's own command-line processes (the CLI and the scheduler's runners).

`nbformat` imports `jsonschema`, which, when the optional `rfc3987_syntax`
package is installed (JupyterLab's dependencies bring it), builds a Lark
grammar at import time for its "iri" format check: about one second of every
process start. Notebook schemas never use that format, so nbflow's processes
skip it. This is only ever called in processes nbflow itself starts, never in
a user's kernel or an importing program.
"""

from __future__ import annotations

import sys


def skip_unused_imports() -> None:
    """Make `import rfc3987_syntax` fail fast (jsonschema treats it as absent)."""
    if "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]

"""An executed output notebook as one HTML document that needs nothing from the network.

Policy:

- **nbconvert's `lab` template, with every remote script removed.** Its page
  loads require.js, MathJax, Mermaid and the widget manager from a CDN; our
  template (`_TEMPLATE`) empties those blocks, so the document loads nothing
  from elsewhere and works offline. What that costs: TeX in Markdown cells
  shows as its source, and saved widget state is not rendered (the outputs'
  plain-text or image forms are shown).
- **Images travel inside the document** (`embed_images`: a Markdown image
  next to the notebook becomes a `data:` URI).
- **The result is untrusted.** An output notebook holds whatever its cells
  printed: HTML and JavaScript of any origin. This module does not clean it
  (that would break honest outputs, such as plots); the caller must show it
  where it cannot reach anything — `nbflow.ui.report` puts it in a sandboxed
  iframe (`srcdoc`, `sandbox` without `allow-same-origin`), under a content
  policy that forbids loading anything from the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbflow.core.errors import NbflowError

_TEMPLATE_NAME = "nbflow_offline.html.j2"
_TEMPLATE = """\
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def notebook_html(source: str | Path | Any) -> str:
    """The notebook at `source` (a path, or an `nbformat` notebook node) as one HTML document
    with no remote assets. Untrusted: show it only inside a sandboxed frame.

    Raises `NbflowError` naming the file when it is missing or not a notebook, and naming
    the package to install when nbconvert is not there.
    """
    try:
        import nbformat
        from jinja2 import DictLoader
        from nbconvert import HTMLExporter
    except ImportError as exc:  # nbconvert is a dependency; a trimmed environment may lack it
        raise NbflowError(
            f"rendering a notebook needs nbconvert ({exc}); install it: pip install 'nbconvert>=7'"
        ) from exc
    resources: dict[str, Any] = {}
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            nb = nbformat.read(path, as_version=4)
        except FileNotFoundError:
            raise NbflowError(f"the notebook {path} is not there (moved, or pruned)") from None
        except Exception as exc:  # nbformat raises several kinds for a file that is not JSON
            raise NbflowError(f"{path} cannot be read as a notebook: {exc}") from exc
        # Relative image paths in Markdown cells are read next to the notebook.
        resources = {"metadata": {"path": str(path.parent), "name": path.stem}}
    else:
        nb = source
    exporter = HTMLExporter(
        template_name="lab",
        template_file=_TEMPLATE_NAME,
        extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
        embed_images=True,
    )
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return str(body)


__all__ = ["notebook_html"]

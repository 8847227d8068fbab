"""`%load_ext nbflow`: registers the `%%task` and `%nbflow` magics.

The decorator API (`@nf.task`, `nf.run`, `nf.show`) needs no extension; the
extension adds the cell workflow. It also remembers the id of the cell being
executed (Jupyter sends one), so an unnamed `%%task` cell keeps its task name
when its first output is renamed.
"""

from __future__ import annotations

from typing import Any

_MAGICS: Any = None


def _remember_cell_id(info: Any) -> None:
    if _MAGICS is not None:
        _MAGICS.current_cell_id = getattr(info, "cell_id", None)


def load_ipython_extension(ipython: Any) -> None:
    """Called by `%load_ext nbflow`."""
    global _MAGICS
    from nbflow.jupyter.magics import NbflowMagics

    if _MAGICS is not None and _MAGICS.shell is ipython:
        return
    from nbflow.jupyter.widget import set_run_binder

    _MAGICS = NbflowMagics(ipython)
    ipython.register_magics(_MAGICS)
    set_run_binder(_MAGICS.bind_run)
    ipython.events.register("pre_run_cell", _remember_cell_id)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by `%unload_ext nbflow`: the magics go away; registered tasks stay."""
    global _MAGICS
    try:
        ipython.events.unregister("pre_run_cell", _remember_cell_id)
    except ValueError:
        pass
    if _MAGICS is not None:
        ipython.magics_manager.magics["cell"].pop("task", None)
        ipython.magics_manager.magics["line"].pop("nbflow", None)
        from nbflow.jupyter.widget import set_run_binder

        set_run_binder(None)
    _MAGICS = None

"""Named pools: at most `slots` tasks of a pool run at once, across a run (like Airflow pools)."""

from __future__ import annotations

from nbflow.core.errors import NbflowError, did_you_mean

_POOLS: dict[str, int] = {}


def pool(name: str, slots: int) -> str:
    """Declare (or resize) pool `name` with `slots` concurrent tasks; returns the name."""
    if slots < 1:
        raise NbflowError(f"pool `{name}` needs at least one slot, not {slots}")
    _POOLS[name] = int(slots)
    return name


def pool_slots(name: str) -> int:
    try:
        return _POOLS[name]
    except KeyError:
        raise NbflowError(
            f"unknown pool `{name}`{did_you_mean(name, _POOLS)}; declare it first with "
            f"nf.pool({name!r}, slots=N)"
        ) from None

"""Times as the jobs layer stores and shows them: aware UTC datetimes, ISO text."""

from __future__ import annotations

from datetime import UTC, datetime

from nbflow.core.errors import JobsError

__all__ = ["logical_iso", "parse_utc", "utc_iso", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_iso(moment: datetime, timespec: str = "microseconds") -> str:
    """`moment` (aware) as UTC ISO text; naive datetimes are refused, never guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise JobsError(
            f"time {moment.isoformat()} has no time zone; nbflow stores UTC and needs an "
            "aware datetime (e.g. datetime.now(UTC))"
        )
    return moment.astimezone(UTC).isoformat(timespec=timespec)


def logical_iso(moment: datetime) -> str:
    """The stored form of a logical date: seconds, or microseconds when it has them."""
    return utc_iso(moment, "seconds" if moment.microsecond == 0 else "microseconds")


def parse_utc(text: str) -> datetime:
    """Inverse of `utc_iso`: an aware UTC datetime."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)

"""Pure: metav1.Time stamps (RFC 3339, as the API server and the status write them) to and from the clock's values,
the one parser the operator, the twin and the tests share."""

from __future__ import annotations

import datetime


def text(now: datetime.datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes metav1.Time: 2026-01-01T00:00:00Z."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(stamp: str) -> datetime.datetime:
    """An aware datetime from an RFC 3339 stamp ("...Z", "...+02:00", microseconds as metav1.MicroTime has them).

    A stamp without an offset is read as UTC, as Kubernetes means it, never in the machine's local time zone
    (that would make the core's answer depend on where it runs). ValueError, naming the stamp, if it is none."""
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        raise ValueError(f"not an RFC 3339 timestamp: {stamp!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def seconds(stamp: str | None) -> float | None:
    """Seconds since the Unix epoch of a stamp, or None where there is none (an absent or empty field)."""
    return parse(stamp).timestamp() if stamp else None

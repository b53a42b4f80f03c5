"""ESI's compatibility date, as the local server checks it.

A client states the API behaviour it was written for with ``X-Compatibility-Date: YYYY-MM-DD``
(no header: the oldest behaviour). ESI refuses a date it cannot know yet: one after the API's
own date, which turns at 11:00 UTC (so until 11:00 UTC the API's date is still yesterday's).
"""

from __future__ import annotations

import datetime as dt

HEADER = "X-Compatibility-Date"


def api_date(now: dt.datetime | None = None) -> dt.date:
    now = now or dt.datetime.now(dt.UTC)
    return (now - dt.timedelta(hours=11)).date()


def compat_error(value: str | None, now: dt.datetime | None = None) -> str | None:
    """Why ``value`` (the header, or None) is refused, or None if it is acceptable."""
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        return f"Invalid {HEADER} {value!r}: expected YYYY-MM-DD"
    if day > api_date(now):
        return f"{HEADER} {day.isoformat()} is in the future (the API's date is {api_date(now).isoformat()})"
    return None

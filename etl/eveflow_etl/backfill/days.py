"""The backfill's date range: parsed and checked in one line each, before anything starts."""

from __future__ import annotations

import datetime as dt

from eveflow_etl.errors import ConfigError


def parse_day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise ConfigError(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None


def yesterday(today: dt.date | None = None) -> dt.date:
    return (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)


def day_range(start: dt.date, end: dt.date, *, today: dt.date | None = None) -> list[dt.date]:
    """Every day from ``start`` to ``end`` inclusive; refuses an empty or future range."""
    last = yesterday(today)
    if end > last:
        raise ConfigError(f"--to {end.isoformat()} is not published yet: EVE Ref's last day is yesterday "
                          f"({last.isoformat()} UTC); use --to {last.isoformat()} or earlier")
    if start > end:
        raise ConfigError(f"--from {start.isoformat()} is after --to {end.isoformat()}: swap them")
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]

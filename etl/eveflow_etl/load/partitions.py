"""Monthly partitions of the history table, created as rows for a new month arrive.

Why: the table's key is (region_id, type_id, date), so a day's ~50k rows land all over one big
primary-key index — at a year of all regions (~20M rows, ~600 MB of index) every new day dirties
tens of thousands of index pages outside shared buffers, and loading a day gets slower as the
table grows. With one partition per month, a day only touches its month's index (≤ ~1.5M
rows), so a load costs about the same into a year of history as into an empty table; queries by
(region, type, date range) prune to the months asked and stay index scans on each.

Rows are upserted into their month's partition directly, not through the parent: PostgreSQL
cannot return ``xmax`` (how the upsert tells an insert from an update) through a partitioned
table, and routing is then done once per chunk, not per row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd
from psycopg import Connection, sql

from eveflow_etl.load.ddl import TableSpec, Target


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month + dt.timedelta(days=32)).replace(day=1)


def partition_name(target: Target, month: dt.date) -> sql.Identifier:
    # ``_p`` + YYYYMM: 8 characters; Target reserves room for longer suffixes already.
    return target.ident(f"{target.table}_p{month:%Y%m}")


def is_partitioned(conn: Connection, target: Target) -> bool:
    """True for a history table created partitioned (tables created before stay as they are)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)",
        (target.schema, target.table)).fetchone()
    return bool(row[0])


class Partitions:
    """Creates a month's partition the first time this connection loads rows of that month."""

    def __init__(self, conn: Connection, target: Target, spec: TableSpec) -> None:
        self.conn = conn
        self.target = target
        self.spec = spec
        self._enabled: bool | None = None  # asked on first use, inside the caller's transaction
        self._known: set[dt.date] = set()

    @property
    def enabled(self) -> bool:
        if self._enabled is None:
            self._enabled = self.spec.partition_by is not None and is_partitioned(self.conn, self.target)
        return self._enabled

    def ensure(self, month: dt.date) -> sql.Identifier:
        name = partition_name(self.target, month)
        if month in self._known:
            return name
        exists = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                   (f'"{self.target.schema}"."{self.target.table}_p{month:%Y%m}"',)).fetchone()[0]
        if not exists:
            # Concurrent runs meeting a new month take turns; held until the caller commits.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('eveflow-ddl'))")
            self.conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({}) WITH (fillfactor = {})"
            ).format(name, self.target.ident(), sql.Literal(month), sql.Literal(next_month(month)),
                     sql.Literal(self.spec.fillfactor)))
        self._known.add(month)
        return name

    def forget(self) -> None:
        """The caller's transaction rolled back: partitions it created are gone again."""
        self._known.clear()

    def months(self, frame: pd.DataFrame) -> list[dt.date]:
        """The first day of each month ``frame``'s rows fall in, in order."""
        days = pd.to_datetime(frame[self.spec.partition_by]).to_numpy(dtype="datetime64[M]")
        return [_to_date(m) for m in np.unique(days)]

    def split(self, frame: pd.DataFrame) -> Iterator[tuple[sql.Identifier, pd.DataFrame]]:
        """(partition, its rows) for each month in ``frame`` (the whole frame when not partitioned)."""
        if not self.enabled or frame.empty:
            yield self.target.ident(), frame
            return
        days = pd.to_datetime(frame[self.spec.partition_by]).to_numpy(dtype="datetime64[M]")
        months = np.unique(days)
        if len(months) == 1:
            yield self.ensure(_to_date(months[0])), frame
            return
        for month in months:
            yield self.ensure(_to_date(month)), frame[days == month]


def _to_date(month: np.datetime64) -> dt.date:
    return month.astype("datetime64[D]").astype(dt.date)

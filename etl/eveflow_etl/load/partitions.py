"""Daily partitions of the history table, created as rows for a new day arrive.

Why daily: the table's key is (region_id, type_id, date), so a day's ~50k rows land between the
rows of every (region, type) already in their partition: the day touches every leaf page of the
partition's primary key. The first touch of a page after a checkpoint writes the whole 8 kB page
to the WAL, and a daily refresh comes hours after the last checkpoint, so loading a day into a
month-sized partition wrote 48 MB of WAL instead of 9 MB and ran at 0.43x the speed of the same
day into an empty table (a week-sized one: 18 MB, 0.74x; ``bench/scale_layout.py``). A day of its
own is a new partition: new pages only, so a day costs the same into years of history as into
an empty table (``bench/backfill.py``, ``scale_ratio``). A query by (region, type, date range)
prunes to the days asked at plan time and reads one index entry of each day's primary key
(index-only); the date-first key that would also avoid the page images cannot serve that query
without reading the whole range (no skip scan before PostgreSQL 18).

Partitions made before (by month, by an earlier eveflow) are kept and used for their days: a day
goes to whichever partition covers it, and only a day no partition covers gets a daily one, so a
table created by the monthly layout keeps loading, with daily partitions from its first new day on.

Rows are upserted into their day's partition directly, not through the parent: PostgreSQL cannot
return ``xmax`` (how the upsert tells an insert from an update) through a partitioned table.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re

import numpy as np
import pandas as pd
from psycopg import Connection, sql

from eveflow_etl.load.ddl import TableSpec, Target

_BOUND = re.compile(r"FOR VALUES FROM \('(\d{4}-\d{2}-\d{2})'\) TO \('(\d{4}-\d{2}-\d{2})'\)")


def partition_name(target: Target, day: dt.date) -> str:
    # ``_d`` + YYYYMMDD: 10 characters; Target reserves 11 (``_quarantine``) already.
    return f"{target.table}_d{day:%Y%m%d}"


def is_partitioned(conn: Connection, target: Target) -> bool:
    """True for a history table created partitioned (tables created before stay as they are)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)",
        (target.schema, target.table)).fetchone()
    return bool(row[0])


class Partitions:
    """Finds the partition covering a day, creating a daily one the first time a day has none."""

    def __init__(self, conn: Connection, target: Target, spec: TableSpec) -> None:
        self.conn = conn
        self.target = target
        self.spec = spec
        self._enabled: bool | None = None  # asked on first use, inside the caller's transaction
        self._starts: list[dt.date] = []  # the known partitions' ranges [start, end), by start
        self._ranges: list[tuple[dt.date, dt.date, str]] = []
        self._loaded = False

    @property
    def enabled(self) -> bool:
        if self._enabled is None:
            self._enabled = self.spec.partition_by is not None and is_partitioned(self.conn, self.target)
        return self._enabled

    def _load(self) -> None:
        rows = self.conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            (f'"{self.target.schema}"."{self.target.table}"',)).fetchall()
        ranges = []
        for name, bound in rows:
            found = _BOUND.search(bound or "")
            if found:  # a DEFAULT or MINVALUE partition of the user's: PostgreSQL refuses overlaps
                ranges.append((dt.date.fromisoformat(found[1]), dt.date.fromisoformat(found[2]), name))
        self._ranges = sorted(ranges)
        self._starts = [r[0] for r in self._ranges]
        self._loaded = True

    def _covering(self, day: dt.date) -> str | None:
        i = bisect.bisect_right(self._starts, day) - 1
        if i >= 0 and self._ranges[i][0] <= day < self._ranges[i][1]:
            return self._ranges[i][2]
        return None

    def ensure(self, day: dt.date) -> sql.Identifier:
        """The partition ``day``'s rows go to; a new daily partition if none covers it."""
        if not self._loaded:
            self._load()
        name = self._covering(day)
        if name is None:
            name = partition_name(self.target, day)
            # Concurrent runs meeting a new day take turns (held until the caller commits); the
            # other may have just made it, hence IF NOT EXISTS. Bounds are not read again: that
            # is a catalog scan of every partition, once per new day of a backfill.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('eveflow-ddl'))")
            self.conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({}) WITH (fillfactor = {})"
            ).format(self.target.ident(name), self.target.ident(), sql.Literal(day),
                     sql.Literal(day + dt.timedelta(days=1)), sql.Literal(self.spec.fillfactor)))
            i = bisect.bisect_right(self._starts, day)
            self._starts.insert(i, day)
            self._ranges.insert(i, (day, day + dt.timedelta(days=1), name))
        return self.target.ident(name)

    def forget(self) -> None:
        """The caller's transaction rolled back: partitions it created are gone again."""
        self._loaded = False

    def tables(self, frame: pd.DataFrame) -> list[sql.Identifier]:
        """The partitions ``frame``'s rows go to (created if missing), each once."""
        days = np.unique(pd.to_datetime(frame[self.spec.partition_by]).to_numpy(dtype="datetime64[D]"))
        seen: dict[str, sql.Identifier] = {}
        for day in days:
            table = self.ensure(day.astype(dt.date))
            seen.setdefault(repr(table), table)
        return list(seen.values())

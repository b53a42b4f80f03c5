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

Partitions made before (by month, ``<table>_pYYYYMM``, by an earlier eveflow) are kept and used
for their days: a day goes to its month's partition if there is one, else to its own, created
the first time, so a table created by the monthly layout keeps loading, with daily partitions
from its first new day on. Both are found by name, one catalog lookup per new day: reading every
partition's bounds instead cost 10 ms at a year of partitions and 37 ms at four, inside each
day's transaction (a day's COPY takes ~70 ms). A partition of other bounds someone made by hand
makes the new day's CREATE fail, naming the overlapping partition.

Rows are upserted into their day's partition directly, not through the parent: PostgreSQL cannot
return ``xmax`` (how the upsert tells an insert from an update) through a partitioned table.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from psycopg import Connection, sql

from eveflow_etl.load.ddl import TableSpec, Target


def partition_name(target: Target, day: dt.date) -> str:
    # ``_d`` + YYYYMMDD: 10 characters; Target reserves 11 (``_quarantine``) already.
    return f"{target.table}_d{day:%Y%m%d}"


def month_partition_name(target: Target, day: dt.date) -> str:
    """The partition of ``day``'s month, as the monthly layout named it."""
    return f"{target.table}_p{day:%Y%m}"


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
        self._known: dict[dt.date, str] = {}  # day -> the partition its rows go to

    @property
    def enabled(self) -> bool:
        if self._enabled is None:
            self._enabled = self.spec.partition_by is not None and is_partitioned(self.conn, self.target)
        return self._enabled

    def ensure(self, day: dt.date) -> sql.Identifier:
        """The partition ``day``'s rows go to: its month's (the monthly layout's), else its own,
        created if missing."""
        return self._ensure([day])[0]

    def tables(self, frame: pd.DataFrame) -> list[sql.Identifier]:
        """The partitions ``frame``'s rows go to (created if missing), each once."""
        days = np.unique(pd.to_datetime(frame[self.spec.partition_by]).to_numpy(dtype="datetime64[D]"))
        seen: dict[str, sql.Identifier] = {}
        for table in self._ensure([d.astype(dt.date) for d in days]):
            seen.setdefault(repr(table), table)
        return list(seen.values())

    def _ensure(self, days: list[dt.date]) -> list[sql.Identifier]:
        unknown = [d for d in days if d not in self._known]
        if unknown:
            own = [partition_name(self.target, d) for d in unknown]
            month = [month_partition_name(self.target, d) for d in unknown]
            schema = self.target.schema
            found = self.conn.execute(
                "SELECT to_regclass(format('%%I.%%I', %s::text, o)) IS NOT NULL, "
                "to_regclass(format('%%I.%%I', %s::text, m)) IS NOT NULL FROM unnest(%s::text[], %s::text[]) "
                "WITH ORDINALITY AS u(o, m, n) ORDER BY n", (schema, schema, own, month)).fetchall()
            names, missing = {}, []
            for day, o, m, (has_own, has_month) in zip(unknown, own, month, found):
                names[day] = m if has_month and not has_own else o
                if not has_own and not has_month:
                    missing.append(day)
            if missing:
                # Concurrent runs meeting a new day take turns (held until the caller commits);
                # the other may have just made it, hence IF NOT EXISTS.
                self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('eveflow-ddl'))")
                for day in missing:
                    self.conn.execute(sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({}) "
                        "WITH (fillfactor = {})"
                    ).format(self.target.ident(names[day]), self.target.ident(), sql.Literal(day),
                             sql.Literal(day + dt.timedelta(days=1)), sql.Literal(self.spec.fillfactor)))
            self._known.update(names)
        return [self.target.ident(self._known[d]) for d in days]

    def forget(self) -> None:
        """The caller's transaction rolled back: partitions it created are gone again."""
        self._known.clear()

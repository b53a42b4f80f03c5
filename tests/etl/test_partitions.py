"""The history table partitioned by day, against a real PostgreSQL: chunks spanning many days
keep exact inserted/updated/unchanged counts, a query by region, type and date range reads only
the days asked, through each day's primary key, and a table partitioned by month (the layout
before) keeps loading: its months stay, new days get partitions of their own."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import psycopg
import pytest

from eveflow_etl.load.ddl import HISTORY, Target, ensure_tables
from eveflow_etl.load.upsert import ChunkUpserter

pytestmark = pytest.mark.postgres


def history(days: int, start: str = "2026-01-20", types: int = 40) -> pd.DataFrame:
    dates = pd.date_range(start, periods=days, freq="D")
    frame = pd.DataFrame([(10000002, t, d) for t in range(1, types + 1) for d in dates],
                         columns=["region_id", "type_id", "date"])
    n = len(frame)
    frame["average"] = np.arange(n) + 1.5
    frame["highest"] = frame["average"] + 1
    frame["lowest"] = frame["average"] - 1
    frame["order_count"] = np.arange(n) % 50 + 1
    frame["volume"] = np.arange(n) + 100
    frame["http_last_modified"] = pd.Timestamp("2026-04-01T11:05:00Z")
    return frame


def test_chunks_over_many_days_keep_exact_counts(pg_dsn):
    target = Target("eve", "market_history")
    frame = history(60)  # 20 Jan … 20 Mar: three months
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ensure_tables(conn, target, "history")
    with psycopg.connect(pg_dsn) as conn:
        with conn.transaction():
            first = ChunkUpserter(conn, target, HISTORY).upsert(frame)
        assert (first.inserted, first.updated, first.unchanged) == (len(frame), 0, 0)
        again = frame.copy()
        changed = again["date"] >= pd.Timestamp("2026-03-01")
        again.loc[changed, "volume"] += 1
        new = history(5, start="2026-03-21")  # into a fourth month
        with conn.transaction():
            second = ChunkUpserter(conn, target, HISTORY).upsert(pd.concat([again, new], ignore_index=True))
        assert (second.inserted, second.updated, second.unchanged) == (len(new), int(changed.sum()),
                                                                         int((~changed).sum()))
        assert partitions(conn) == [f"market_history_d{d:%Y%m%d}" for d in pd.date_range("2026-01-20", "2026-03-25")]
        assert conn.execute("SELECT count(*) FROM eve.market_history").fetchone()[0] == len(frame) + len(new)


def partitions(conn) -> list[str]:
    return [p for (p,) in conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                       "WHERE i.inhparent = 'eve.market_history'::regclass ORDER BY 1").fetchall()]


def test_a_query_by_region_type_and_range_reads_only_its_days_primary_keys(pg_dsn):
    target = Target("eve", "market_history")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ensure_tables(conn, target, "history")
        with conn.transaction():
            ChunkUpserter(conn, target, HISTORY).upsert(history(90))
        conn.execute("VACUUM ANALYZE eve.market_history")
        conn.execute("SET enable_seqscan = off")  # a tiny table: ask what the plan is when it matters
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT date FROM eve.market_history WHERE region_id = 10000002 AND type_id = 7 "
            "AND date BETWEEN '2026-02-03' AND '2026-02-20'").fetchall())
    scanned = sorted(set(re.findall(r"market_history_d\d{8}_pkey", plan)))
    assert scanned == [f"market_history_d{d:%Y%m%d}_pkey" for d in pd.date_range("2026-02-03", "2026-02-20")], plan
    # Each day's primary key answers it (index-only, or a bitmap over that index when the
    # planner prefers it for a handful of rows), never a scan of a table.
    assert "Seq Scan" not in plan, plan


def test_a_table_partitioned_by_month_keeps_its_months_and_gets_days(pg_dsn):
    """A table made by the monthly layout: rows of a month it has go to that month's partition;
    a day no partition covers gets a partition of its own; the counts stay exact."""
    target = Target("eve", "market_history")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ensure_tables(conn, target, "history")
        conn.execute("CREATE TABLE eve.market_history_p202602 PARTITION OF eve.market_history "
                     "FOR VALUES FROM ('2026-02-01') TO ('2026-03-01') WITH (fillfactor = 50)")
    frame = history(10, start="2026-02-24")  # 24 Feb … 5 Mar
    with psycopg.connect(pg_dsn) as conn:
        with conn.transaction():
            first = ChunkUpserter(conn, target, HISTORY).upsert(frame)
        assert (first.inserted, first.updated, first.unchanged) == (len(frame), 0, 0)
        with conn.transaction():  # one day of the month: straight into the month's partition
            again = ChunkUpserter(conn, target, HISTORY).upsert(frame[frame["date"] == "2026-02-25"])
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 40)
        assert partitions(conn) == ["market_history_d20260301", "market_history_d20260302", "market_history_d20260303",
                                    "market_history_d20260304", "market_history_d20260305", "market_history_p202602"]
        by_partition = dict(conn.execute("SELECT tableoid::regclass::text, count(*) FROM eve.market_history "
                                         "GROUP BY 1").fetchall())
        assert by_partition["eve.market_history_p202602"] == 5 * 40


@pytest.mark.parametrize("probe_says_empty", [False, True], ids=["probed", "probe-raced"])
def test_a_chunk_around_stored_keys_is_upserted_with_exact_counts(pg_dsn, monkeypatch, probe_says_empty):
    """A first load of a key range goes in as a plain INSERT; a chunk whose range holds stored
    keys is upserted. ``probe-raced``: another writer stored a key after the range was found
    empty (the probe forced to say so) -- the failed plain INSERT is undone by its savepoint and
    the chunk is upserted in the same transaction, counts exact, nothing lost or doubled."""
    target = Target("eve", "market_history")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ensure_tables(conn, target, "history")
        conn.execute("TRUNCATE eve.market_history")
    stored = history(10, types=3)  # types 1-3
    with psycopg.connect(pg_dsn) as conn:
        with conn.transaction():
            first = ChunkUpserter(conn, target, HISTORY).upsert(stored[stored["type_id"] == 2])
        assert (first.inserted, first.updated, first.unchanged) == (10, 0, 0)
        if probe_says_empty:
            monkeypatch.setattr(ChunkUpserter, "_range_is_empty", lambda self, table, keys: True)
        changed = stored.copy()
        changed.loc[changed["type_id"] == 2, "volume"] += 1
        with conn.transaction():
            second = ChunkUpserter(conn, target, HISTORY).upsert(changed)
        assert (second.inserted, second.updated, second.unchanged) == (20, 10, 0)
        rows = conn.execute("SELECT count(*), sum(volume) FROM eve.market_history").fetchone()
        assert rows == (30, int(changed["volume"].sum()))

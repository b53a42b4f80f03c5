"""Why a day loaded into a month that already holds 29 days is slower than into an empty one:
the cost of one day (50k rows, all regions) by how many days its partition already holds.

Each case: a history partition (the loader's columns, fillfactor 50, primary key as given)
already holding K days of 50k (region, type) pairs, VACUUM ANALYZE; then CHECKPOINT (a daily
load comes minutes to hours after the last checkpoint, so its first touch of every page writes
a full-page image, as in production) and the next day inserted in one transaction, key order.
Each case loads the day alternately into an empty table (K = 0: also a new partition per day)
and into the K-day one, best of ``--repeat`` each: rows/s, WAL bytes, index pages; 6 is the
worst day of a weekly partition,
9 of a 10-day one, 29 of a monthly one. ``date-first`` puts date first in the key (the new day
appends at the right edge of the index) and then shows what a (region, type, 30 days) query
costs on it. Run: ``python bench/scale_layout.py``; prints ``RESULT`` with each case's ratio to K = 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "etl"))

from eveflow_etl.localpg import start_local_postgres  # noqa: E402

DAY = dt.date(2026, 11, 30)
COLUMNS = ("region_id int4, type_id int4, date date, average float8, highest float8, lowest float8, "
           "order_count int8, volume int8, http_last_modified timestamptz")


def build(conn, name: str, before: int, key: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} ({COLUMNS}, PRIMARY KEY ({key})) WITH (fillfactor = 50)")
    if before:
        conn.execute(f"INSERT INTO {name} SELECT region_id, type_id, d::date, 1, 2, 0, 3, 4, now() FROM "
                     "generate_series(%s::date, %s::date, '1 day') d CROSS JOIN pairs ORDER BY d, region_id, type_id",
                     (DAY - dt.timedelta(days=before), DAY - dt.timedelta(days=1)))
    conn.execute(f"VACUUM ANALYZE {name}")


def load_day(conn, name: str, checkpoint: bool) -> tuple[float, float]:
    """rows/s and WAL bytes of one day into ``name``; the day is removed again afterwards."""
    if checkpoint:
        conn.execute("CHECKPOINT")
    lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    t0 = time.perf_counter()
    with conn.transaction():
        conn.execute(f"INSERT INTO {name} SELECT region_id, type_id, %s, 1.5, 2, 1, 3, 4, now() FROM pairs "
                     "ORDER BY region_id, type_id", (DAY,))
    seconds = time.perf_counter() - t0
    wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)).fetchone()[0]
    conn.execute(f"DELETE FROM {name} WHERE date = %s", (DAY,))
    conn.execute(f"VACUUM {name}")
    return conn.execute("SELECT count(*) FROM pairs").fetchone()[0] / seconds, float(wal)


def case(conn, before: int, key: str, repeat: int, checkpoint: bool) -> tuple[float, float, float, float, int]:
    """The day into an empty table and into one holding ``before`` days, alternately (the shared
    machine's load drifts; alternating keeps both sides under the same drift). Best of ``repeat``."""
    build(conn, "h0", 0, key)
    build(conn, "hk", before, key)
    empty, full = (0.0, 0.0), (0.0, 0.0)
    for _ in range(repeat):
        empty = max(empty, load_day(conn, "h0", checkpoint))
        full = max(full, load_day(conn, "hk", checkpoint))
    leaves = conn.execute("SELECT relpages FROM pg_class WHERE relname = 'hk_pkey'").fetchone()[0]
    return empty[0], full[0], empty[1], full[1], leaves


def plan_costs(conn, layout: str, days: int, pairs: str, repeat: int) -> dict[str, tuple[float, float, int, int]]:
    """A table over ``days`` days partitioned by ``layout`` (day | week | month), filled with the
    ``pairs`` table's (region, type) pairs each day; for a (region, type) query over 30 days, 365
    days and no date range: (median planning ms, median execution ms, partitions scanned, buffers)."""
    conn.execute("DROP TABLE IF EXISTS hp")
    conn.execute(f"CREATE TABLE hp ({COLUMNS}, PRIMARY KEY (region_id, type_id, date)) PARTITION BY RANGE (date)")
    first = DAY - dt.timedelta(days=days - 1)
    start, n = first, 0
    while start <= DAY:
        end = {"day": start + dt.timedelta(days=1), "week": start + dt.timedelta(days=7),
               "month": (start.replace(day=1) + dt.timedelta(days=32)).replace(day=1)}[layout]
        conn.execute(f"CREATE TABLE hp_{n} PARTITION OF hp FOR VALUES FROM ('{start}') TO ('{end}') "
                     "WITH (fillfactor = 50)")
        start, n = end, n + 1
    conn.execute(f"INSERT INTO hp SELECT region_id, type_id, d::date, 1, 2, 0, 3, 4, now() FROM generate_series("
                 f"%s::date, %s::date, '1 day') d CROSS JOIN {pairs}", (first, DAY))
    conn.execute("VACUUM ANALYZE hp")
    region, type_id = conn.execute(f"SELECT region_id, type_id FROM {pairs} LIMIT 1").fetchone()
    out = {}
    for label, lo in (("30 days", DAY - dt.timedelta(days=29)), ("365 days", DAY - dt.timedelta(days=364)),
                      ("no range", None)):
        where = "" if lo is None else f" AND date BETWEEN '{lo}' AND '{DAY}'"
        query = f"SELECT date FROM hp WHERE region_id = {region} AND type_id = {type_id}{where}"
        planning, execution = [], []
        for _ in range(repeat):
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query).fetchall())
            planning.append(float(re.search(r"Planning Time: ([0-9.]+)", plan)[1]))
            execution.append(float(re.search(r"Execution Time: ([0-9.]+)", plan)[1]))
        scanned = plan.count("Index Only Scan") + plan.count("Index Scan") + plan.count("Seq Scan")
        buffers = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", plan)
        out[label] = (statistics.median(planning), statistics.median(execution), scanned,
                      int(buffers[1]) + int(buffers[2] or 0) if buffers else 0)
    conn.execute("DROP TABLE hp")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=68)
    parser.add_argument("--types", type=int, default=735, help="pairs = regions x types (~50k, one day)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only-plans", action="store_true", help="only the planning cost by partition size")
    parser.add_argument("--plan-days", type=int, default=730, help="days of history for the planning cost")
    args = parser.parse_args()
    pg = start_local_postgres(None)
    ratios: dict[str, float] = {}
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            print(conn.execute("SHOW server_version").fetchone()[0], "shared_buffers",
                  conn.execute("SHOW shared_buffers").fetchone()[0], flush=True)
            conn.execute("CREATE TEMP TABLE pairs AS SELECT 10000000 + r AS region_id, t AS type_id "
                         "FROM generate_series(1, %s) r, generate_series(1, %s) t", (args.regions, args.types))
            key = "region_id, type_id, date"
            # What a partition per day costs a query: planning and reading N partitions.
            conn.execute("CREATE TEMP TABLE plan_pairs AS SELECT 10000000 + r AS region_id, t AS type_id "
                         "FROM generate_series(1, 10) r, generate_series(1, 30) t")
            for layout in ("month", "week", "day"):
                for label, (planning, execution, scanned, buffers) in plan_costs(
                        conn, layout, args.plan_days, "plan_pairs", 15).items():
                    print(f"plan, {args.plan_days} days by {layout:5s} (region, type, {label:8s}): {scanned:4d} "
                          f"partitions, planning {planning:6.2f} ms, execution {execution:6.2f} ms, "
                          f"{buffers} buffers", flush=True)
            if args.only_plans:
                return
            for label, before, k, ckpt in (("K=6 (weekly, worst day)", 6, key, True),
                                           ("K=9 (10-day, worst day)", 9, key, True),
                                           ("K=29 (monthly, worst day)", 29, key, True),
                                           ("K=29, no checkpoint before", 29, key, False),
                                           ("K=29, key (date, region, type)", 29, "date, region_id, type_id", True)):
                empty, full, wal0, walk, leaves = case(conn, before, k, args.repeat, ckpt)
                ratios[label] = full / empty
                print(f"{label:32s} empty {empty:>8,.0f} rows/s (WAL {wal0 / 2**20:4.1f} MB), with K days "
                      f"{full:>8,.0f} rows/s (WAL {walk / 2**20:4.1f} MB, pkey {leaves:,} pages): ratio {full / empty:4.2f}",
                      flush=True)
            # What date-first costs a (region, type, 30 days) query (PostgreSQL < 18 has no skip scan).
            for k in (key, "date, region_id, type_id"):
                conn.execute("DROP TABLE IF EXISTS h")
                conn.execute(f"CREATE TABLE h ({COLUMNS}, PRIMARY KEY ({k})) WITH (fillfactor = 50)")
                conn.execute("INSERT INTO h SELECT region_id, type_id, d::date, 1, 2, 0, 3, 4, now() FROM "
                             "generate_series(%s::date, %s::date, '1 day') d CROSS JOIN pairs",
                             (DAY - dt.timedelta(days=29), DAY))
                conn.execute("VACUUM ANALYZE h")
                plan = [r[0] for r in conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT date FROM h WHERE region_id = 10000002 "
                    "AND type_id = 7 AND date BETWEEN %s AND %s", (DAY - dt.timedelta(days=29), DAY)).fetchall()]
                buffers = next((p.strip() for p in plan if "Buffers" in p), "?")
                print(f"query (region, type, 30 days), key ({k}): {plan[0].strip()[:60]} | {buffers}", flush=True)
    finally:
        pg.stop()
    names = {"K=6 (weekly, worst day)": "weekly", "K=9 (10-day, worst day)": "tenday",
             "K=29 (monthly, worst day)": "monthly", "K=29, no checkpoint before": "monthly_no_checkpoint",
             "K=29, key (date, region, type)": "monthly_date_first"}
    print("RESULT " + " ".join(f"ratio_{names[label]}={r:.2f}" for label, r in ratios.items()))


if __name__ == "__main__":
    main()

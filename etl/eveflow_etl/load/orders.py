"""Order book snapshots: upsert, close what vanished, refresh the daily per-type summary.

One snapshot = every order of one region (optionally restricted to some types) at one moment.
All three steps run in the caller's transaction, so readers never see half a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
from psycopg import Connection, sql

from eveflow_etl.load.ddl import ORDERS, Target
from eveflow_etl.load.upsert import UpsertCounts, copy_frame, create_stage, upsert_sql


@dataclass
class SnapshotCounts(UpsertCounts):
    closed: int = 0


def load_snapshot(
    conn: Connection,
    target: Target,
    frame: pd.DataFrame,
    region_id: int,
    types: Sequence[int] | None,
    *,
    chunk_rows: int,
) -> SnapshotCounts:
    """Apply one region's snapshot to the book ``target`` and its ``<table>_daily`` summary."""
    stage = create_stage(conn, ORDERS)
    for start in range(0, len(frame), chunk_rows):
        copy_frame(conn, stage, frame.iloc[start : start + chunk_rows], ORDERS.columns)
    conn.execute(sql.SQL("ANALYZE {}").format(stage))

    # A changed order gets changed_at; a closed order seen again is reopened.
    upsert = upsert_sql(
        target.ident(), stage, ORDERS.names, ORDERS.key,
        extra_set=sql.SQL("changed_at = now(), closed_at = NULL"),
        extra_changed=sql.SQL("t.closed_at IS NOT NULL"),
    )
    inserted, updated = conn.execute(upsert).fetchone()
    type_filter = sql.SQL("")
    params: list = [region_id]
    if types:
        type_filter = sql.SQL(" AND b.type_id = ANY(%s)")
        params.append(list(types))
    closed = conn.execute(
        sql.SQL(
            "UPDATE {book} b SET closed_at = now() WHERE b.region_id = %s AND b.closed_at IS NULL{types} "
            "AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.region_id = b.region_id AND s.order_id = b.order_id)"
        ).format(book=target.ident(), types=type_filter, stage=stage),
        params,
    ).rowcount
    _refresh_daily(conn, target, stage)
    return SnapshotCounts(inserted, updated, len(frame) - inserted - updated, closed)


def _refresh_daily(conn: Connection, target: Target, stage: sql.Identifier) -> None:
    """Per (region, type, UTC day): best prices, 5th-percentile prices, volumes, order counts.

    The 5th percentile follows the usual market convention: for buy orders it is taken from the
    top (the price 5 % of buy orders bid above), for sell orders from the bottom. The latest
    snapshot of the day wins.
    """
    conn.execute(
        sql.SQL(
            """INSERT INTO {daily} AS d (region_id, type_id, date, best_buy, best_sell, buy_p5, sell_p5,
                   buy_volume, sell_volume, buy_orders, sell_orders, snapshot_at)
            SELECT region_id, type_id, (now() AT TIME ZONE 'UTC')::date,
                   max(price) FILTER (WHERE is_buy_order),
                   min(price) FILTER (WHERE NOT is_buy_order),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY price) FILTER (WHERE is_buy_order),
                   percentile_cont(0.05) WITHIN GROUP (ORDER BY price) FILTER (WHERE NOT is_buy_order),
                   coalesce(sum(volume_remain) FILTER (WHERE is_buy_order), 0),
                   coalesce(sum(volume_remain) FILTER (WHERE NOT is_buy_order), 0),
                   count(*) FILTER (WHERE is_buy_order), count(*) FILTER (WHERE NOT is_buy_order),
                   now()
            FROM {stage} GROUP BY region_id, type_id
            ON CONFLICT (region_id, type_id, date) DO UPDATE SET
                best_buy = EXCLUDED.best_buy, best_sell = EXCLUDED.best_sell,
                buy_p5 = EXCLUDED.buy_p5, sell_p5 = EXCLUDED.sell_p5,
                buy_volume = EXCLUDED.buy_volume, sell_volume = EXCLUDED.sell_volume,
                buy_orders = EXCLUDED.buy_orders, sell_orders = EXCLUDED.sell_orders,
                snapshot_at = EXCLUDED.snapshot_at"""
        ).format(daily=target.daily, stage=stage)
    )

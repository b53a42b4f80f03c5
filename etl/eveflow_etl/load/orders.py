"""Order book snapshots: upsert, close what vanished, refresh the daily per-type summary.

One snapshot = every order of one region (optionally restricted to some types) at one moment.
All three steps run in the caller's transaction, so readers never see half a snapshot.

An open order is closed only when its id is absent from the whole snapshot, valid rows and
quarantined rows alike (a row that failed validation is still an order on the market). A
snapshot that would close more than ``max_close_share`` of the open book is refused
(:class:`CloseGuardError`) before anything is written: that is a bad pull (schema drift, a
truncated book), not a market.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from psycopg import Connection, sql

from eveflow_etl.errors import SourceError
from eveflow_etl.load.ddl import ORDERS, Target
from eveflow_etl.load.upsert import UpsertCounts, copy_frame, create_stage, upsert_sql

_SEEN = sql.Identifier("eveflow_seen_orders")
_BIGINT_MAX = 2**63 - 1


class CloseGuardError(SourceError):
    """A snapshot would close more of the open book than ``EVEFLOW_ORDERS_MAX_CLOSE_SHARE`` allows."""


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
    seen_ids: Sequence[int] = (),
    max_close_share: float = 0.5,
) -> SnapshotCounts:
    """Apply one region's snapshot to the book ``target`` and its ``<table>_daily`` summary.

    ``frame``: the valid rows; ``seen_ids``: every order id of the snapshot (valid or
    quarantined), see :func:`snapshot_ids`. Raises :class:`CloseGuardError` (nothing written)
    when more than ``max_close_share`` of the open orders in scope would close.
    """
    stage_seen_ids(conn, seen_ids)
    check_close_share(conn, target, region_id, types, max_close_share)
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
    where, params = _vanished(region_id, types)
    closed = conn.execute(
        sql.SQL("UPDATE {book} b SET closed_at = now() WHERE {where}").format(book=target.ident(), where=where),
        params,
    ).rowcount
    _refresh_daily(conn, target, stage)
    return SnapshotCounts(inserted, updated, len(frame) - inserted - updated, closed)


def snapshot_ids(frame: pd.DataFrame) -> list[int]:
    """Every order id a raw snapshot frame holds, valid or not (ids that are not whole numbers
    in bigint range cannot name a stored order and are left out)."""
    if "order_id" not in frame.columns or frame.empty:
        return []
    column = frame["order_id"]
    if pd.api.types.is_integer_dtype(column):
        return sorted({int(i) for i in column[(column >= 0) & (column <= _BIGINT_MAX)]})
    # Mixed values: one by one, since pd.to_numeric would turn the column into float64 and round
    # an id near 2**63 up out of bigint range (found by the property tests).
    return sorted({i for i in map(_whole_bigint, column) if i is not None})


def _whole_bigint(value: object) -> int | None:
    """``value`` as an order id: a whole number in bigint range, else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if 0 <= number <= _BIGINT_MAX else None


def stage_seen_ids(conn: Connection, ids: Sequence[int]) -> None:
    """The snapshot's order ids in a temp table (dropped at the end of the transaction)."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_SEEN))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (order_id bigint PRIMARY KEY) ON COMMIT DROP").format(_SEEN))
    with conn.cursor().copy(sql.SQL("COPY {} (order_id) FROM STDIN").format(_SEEN)) as copy:
        for order_id in ids:
            copy.write_row((order_id,))
    conn.execute(sql.SQL("ANALYZE {}").format(_SEEN))


def check_close_share(conn: Connection, target: Target, region_id: int, types: Sequence[int] | None,
                      max_close_share: float) -> tuple[int, int]:
    """(open orders in scope, how many the staged snapshot would close); raises
    :class:`CloseGuardError` past ``max_close_share``. Needs :func:`stage_seen_ids` first."""
    where, params = _vanished(region_id, types)
    scope, scope_params = _scope(region_id, types)
    open_count, closing = conn.execute(
        sql.SQL("SELECT (SELECT count(*) FROM {book} b WHERE {scope}), (SELECT count(*) FROM {book} b WHERE {where})"
                ).format(book=target.ident(), scope=scope, where=where),
        [*scope_params, *params],
    ).fetchone()
    if open_count and closing > max_close_share * open_count:
        raise CloseGuardError(
            f"ESI orders of region {region_id}: this snapshot would close {closing} of {open_count} open orders "
            f"({closing / open_count:.0%}, more than the {max_close_share:.0%} allowed); nothing of this region was "
            f"changed. A bad pull is the likely cause; if the market really emptied, raise "
            f"EVEFLOW_ORDERS_MAX_CLOSE_SHARE for one run")
    return open_count, closing


def _scope(region_id: int, types: Sequence[int] | None) -> tuple[sql.Composable, list]:
    if types:
        return sql.SQL("b.region_id = %s AND b.closed_at IS NULL AND b.type_id = ANY(%s)"), [region_id, list(types)]
    return sql.SQL("b.region_id = %s AND b.closed_at IS NULL"), [region_id]


def _vanished(region_id: int, types: Sequence[int] | None) -> tuple[sql.Composable, list]:
    """Open orders in scope whose id the snapshot does not hold."""
    scope, params = _scope(region_id, types)
    return sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {} s WHERE s.order_id = b.order_id)").format(scope, _SEEN), params


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

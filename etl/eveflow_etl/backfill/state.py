"""The per-day ledger of a backfill (``<schema>.everef_days``).

One row per (target table, day), written in the same transaction as the day's rows, so a crash
loses at most the day in flight. It records the published total (``totals.json``) the day was
checked against: a day is skipped only if it was loaded, verified against that total, and the
total is still the same (EVE Ref rewrites past days and then their totals).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from psycopg import Connection, sql

from eveflow_etl.load.ddl import Target

TABLE = "everef_days"


@dataclass(frozen=True)
class DayState:
    day: dt.date
    scope: str
    published_total: int | None
    rows_read: int
    verified: bool


def ident(target: Target) -> sql.Identifier:
    return sql.Identifier(target.schema, TABLE)


def ensure_state_table(conn: Connection, target: Target) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('eveflow-ddl'))")
        conn.execute(sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
            target_table text NOT NULL, day date NOT NULL, scope text NOT NULL,
            published_total int8, rows_read int8 NOT NULL, loaded int8 NOT NULL,
            verified bool NOT NULL, run_id uuid NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (target_table, day))""").format(ident(target)))


def read_states(conn: Connection, target: Target, start: dt.date, end: dt.date) -> dict[dt.date, DayState]:
    rows = conn.execute(
        sql.SQL("SELECT day, scope, published_total, rows_read, verified FROM {} "
                "WHERE target_table = %s AND day BETWEEN %s AND %s").format(ident(target)),
        [str(target), start, end]).fetchall()
    return {r[0]: DayState(*r) for r in rows}


def record_day(conn: Connection, target: Target, *, day: dt.date, scope: str, published_total: int | None,
               rows_read: int, loaded: int, verified: bool, run_id: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} AS s (target_table, day, scope, published_total, rows_read, loaded, verified, run_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (target_table, day) DO UPDATE SET "
                "scope = EXCLUDED.scope, published_total = EXCLUDED.published_total, rows_read = EXCLUDED.rows_read, "
                "loaded = EXCLUDED.loaded, verified = EXCLUDED.verified, run_id = EXCLUDED.run_id, "
                "loaded_at = clock_timestamp()").format(ident(target)),
        [str(target), day, scope, published_total, rows_read, loaded, verified, run_id])


def is_current(state: DayState | None, scope: str, published_total: int | None) -> bool:
    """True if the day needs no load: loaded and verified against the total published now, for
    every row (scope ``all``) or for the same regions and types as this backfill."""
    return (state is not None and state.verified and published_total is not None
            and state.published_total == published_total and state.scope in ("all", scope))

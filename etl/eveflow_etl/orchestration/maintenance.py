"""Housekeeping behind the ``eve-maintenance`` flow: prune, ANALYZE, trim the ESI cache.

Plain functions (no Prefect) so they can be tested directly against a database and a directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from psycopg import sql

from eveflow_etl.datasets import SourceKind
from eveflow_etl.destinations import connect, describe, one_line, resolve_dsn
from eveflow_etl.errors import DestinationError
from eveflow_etl.esi.cache import evict
from eveflow_etl.load.ddl import LEDGER_TABLE, QUARANTINE_SUFFIX
from eveflow_etl.settings import load_settings


def prune_and_analyze(dsn: str, schema: str, table: str, retention_days: int,
                      closed_order_retention_days: int = 90) -> dict[str, int]:
    """Delete quarantine and ledger rows older than ``retention_days`` (and, in an order book,
    orders closed more than ``closed_order_retention_days`` ago) and ANALYZE the tables.

    Tables that do not exist yet (no run has created them) are skipped. The connection has a
    connect timeout and the session bounds of every ETL connection; a failure is one
    :class:`~eveflow_etl.errors.DestinationError` line without the password.
    """
    try:
        return _prune_and_analyze(connect(dsn, autocommit=True), schema, table, retention_days,
                                  closed_order_retention_days)
    except psycopg.Error as exc:
        raise DestinationError(f"maintenance of {schema}.{table} at {describe(dsn)} failed: "
                               f"{one_line(exc, dsn)}") from None


def _prune_and_analyze(conn, schema: str, table: str, retention_days: int,
                       closed_order_retention_days: int) -> dict[str, int]:
    quarantine = table + QUARANTINE_SUFFIX
    result = {"quarantine_pruned": 0, "ledger_pruned": 0, "closed_orders_pruned": 0, "analyzed": 0}
    with conn:
        existing = {
            row[0] for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            )
        }
        interval = f"{int(retention_days)} days"
        if quarantine in existing:
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE quarantined_at < now() - %s::interval").format(
                    sql.Identifier(schema, quarantine)), (interval,))
            result["quarantine_pruned"] = cur.rowcount
        if LEDGER_TABLE in existing:
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE coalesce(finished_at, started_at) < now() - %s::interval "
                        "AND target_table = %s").format(sql.Identifier(schema, LEDGER_TABLE)),
                (interval, f"{schema}.{table}"),
            )
            result["ledger_pruned"] = cur.rowcount
        has_closed_at = table in existing and conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "AND column_name = 'closed_at'", (schema, table)).fetchone() is not None
        if has_closed_at:  # an order book: closed orders would otherwise pile up forever
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE closed_at < now() - %s::interval").format(sql.Identifier(schema, table)),
                (f"{int(closed_order_retention_days)} days",))
            result["closed_orders_pruned"] = cur.rowcount
        for name in (table, quarantine, LEDGER_TABLE):
            if name in existing:
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
                result["analyzed"] += 1
    return result


def trim_cache(cache_dir: Path, max_age_days: int) -> int:
    """Remove cache entries not used for ``max_age_days``, then empty directories; returns files removed.

    An entry (an ESI body and its metadata, an EVE Ref file and its metadata) goes as a whole,
    judged by its newest file: a body revalidated by a 304 yesterday is old on disk but in use.
    """
    return evict(cache_dir, older_than=time.time() - max_age_days * 86_400, remove_empty_dirs=True).files_removed


def run_maintenance(*, destination: str, schema: str, table: str | None, source: str, retention_days: int,
                    cache_max_age_days: int, pipeline_name: str,
                    closed_order_retention_days: int = 90) -> dict[str, int]:
    settings = load_settings()
    table = table or SourceKind(source).default_table
    result = prune_and_analyze(resolve_dsn(destination, None, settings), schema, table, retention_days,
                               closed_order_retention_days)
    result["cache_files_removed"] = trim_cache(settings.cache_dir, cache_max_age_days)
    return result

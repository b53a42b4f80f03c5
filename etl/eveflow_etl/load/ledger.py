"""The run ledger (``<schema>.etl_runs``): one row per run, written on success and on failure."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from psycopg import Connection, sql

from eveflow_etl.load.ddl import Target


def start_run(conn: Connection, target: Target, *, run_id: str, pipeline_name: str, source: str,
              regions: Sequence[int], types_count: int | None) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (run_id, pipeline_name, source, target_table, regions, types_count, started_at, status) "
            "VALUES (%s, %s, %s, %s, %s, %s, now(), 'running')"
        ).format(target.ledger),
        [run_id, pipeline_name, source, str(target), list(regions), types_count],
    )


def finish_run(conn: Connection, target: Target, *, run_id: str, status: str, counts: dict[str, int],
               error: str | None = None, notes: Sequence[str] = ()) -> None:
    """``notes``: what a user should know about a run's data (e.g. an unverified EVE Ref day),
    one per line in the ``notes`` column."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET finished_at = clock_timestamp(), status = %s, error = %s, fetched = %s, inserted = %s, "
            "updated = %s, unchanged = %s, quarantined = %s, closed = %s, notes = %s WHERE run_id = %s"
        ).format(target.ledger),
        [status, error, counts.get("fetched", 0), counts.get("inserted", 0), counts.get("updated", 0),
         counts.get("unchanged", 0), counts.get("quarantined", 0), counts.get("closed", 0),
         "\n".join(notes) or None, run_id],
    )


def write_quarantine(conn: Connection, target: Target, frame) -> None:
    """Append quarantine rows (``run_id, region_id, reason, raw``)."""
    if frame is None or len(frame) == 0:
        return
    stmt = sql.SQL("COPY {} (run_id, region_id, reason, raw) FROM STDIN").format(target.quarantine)
    with conn.cursor().copy(stmt) as copy:
        for run_id, region_id, reason, raw in frame[["run_id", "region_id", "reason", "raw"]].itertuples(
            index=False, name=None
        ):
            copy.write_row((run_id, None if pd.isna(region_id) else int(region_id), reason, raw))

"""One day into the history table: one transaction holding its rows, its quarantine, its
``etl_runs`` row and its ``everef_days`` row, so a crash loses at most the day in flight."""

from __future__ import annotations

import psycopg
from psycopg import Connection, sql

from eveflow_etl.backfill.prepare import PreparedDay
from eveflow_etl.backfill.state import record_day
from eveflow_etl.load.binary import HEADER, TRAILER
from eveflow_etl.load.ddl import HISTORY, Target
from eveflow_etl.load.partitions import Partitions
from eveflow_etl.load.ledger import finish_run, start_run, write_quarantine
from eveflow_etl.load.upsert import UpsertCounts, create_stage, upsert_sql

_WRITE_BYTES = 1 << 20


class DayLoader:
    def __init__(self, conn: Connection, target: Target, *, pipeline_name: str, scope: str,
                 regions: tuple[int, ...] | None, types: tuple[int, ...] | None) -> None:
        self.conn = conn
        self.target = target
        self.pipeline_name = pipeline_name
        self.scope = scope
        self.regions = list(regions or ())
        self.types_count = len(types) if types else None
        self._stage = sql.Identifier("eveflow_backfill_stage")
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self._stage, sql.SQL(", ").join(sql.Identifier(c) for c in HISTORY.names))
        self._partitions = Partitions(conn, target, HISTORY)
        self._statements: dict[str, sql.Composed] = {}  # by repr(): Identifiers are unhashable
        self._copies: dict[str, sql.Composed] = {}

    def _upsert(self, day) -> sql.Composed:
        table = self._table(day)
        key = repr(table)
        if key not in self._statements:
            self._statements[key] = upsert_sql(table, self._stage, HISTORY.names, HISTORY.key)
        return self._statements[key]

    def load(self, day: PreparedDay, published_total: int | None) -> tuple[UpsertCounts, int]:
        """Upsert the day's rows; returns (counts, rows quarantined)."""
        quarantined = 0 if day.quarantine is None else len(day.quarantine)
        try:
            return self._load(day, published_total, quarantined)
        except BaseException:
            self._partitions.forget()  # a partition created in the rolled-back transaction is gone
            raise

    def _load(self, day: PreparedDay, published_total: int | None, quarantined: int) -> tuple[UpsertCounts, int]:
        conn = self.conn
        with conn.transaction():
            # Two backfills of the same table must not interleave one day's ledger rows.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"eveflow-backfill {self.target} {day.day}"])
            start_run(conn, self.target, run_id=day.run_id, pipeline_name=self.pipeline_name, source="everef",
                      regions=self.regions, types_count=self.types_count)
            write_quarantine(conn, self.target, day.quarantine)
            counts = UpsertCounts()
            if day.valid_rows:
                counts = self._copy_new(day) or self._upsert_day(day)
            finish_run(conn, self.target, run_id=day.run_id, status="succeeded",
                       counts={"fetched": day.valid_rows + quarantined, "inserted": counts.inserted,
                               "updated": counts.updated, "unchanged": counts.unchanged, "quarantined": quarantined},
                       notes=[day.note] if day.note else [])
            record_day(conn, self.target, day=day.day, scope=self.scope, published_total=published_total,
                       rows_read=day.rows_read, loaded=day.valid_rows, verified=day.note is None, run_id=day.run_id)
        return counts, quarantined

    def _table(self, day) -> sql.Composable:
        # Straight into the day's partition (see load/partitions.py).
        return self._partitions.ensure(day) if self._partitions.enabled else self.target.ident()

    def _write(self, stmt: sql.Composable, payload: bytes) -> None:
        with self.conn.cursor().copy(stmt) as copy:
            copy.write(HEADER)
            view = memoryview(payload)
            for start in range(0, len(view), _WRITE_BYTES):
                copy.write(view[start : start + _WRITE_BYTES])
            copy.write(TRAILER)

    def _copy_new(self, day: PreparedDay) -> UpsertCounts | None:
        """A day none of whose keys exist yet (every first load) is a plain binary COPY into its
        partition: no staging, no speculative insertion, and the counts are exact (all inserted).
        The first key that exists aborts it (a unique violation, rolled back to the savepoint
        after at most a batch of rows) and the day goes through the upsert instead."""
        table = self._table(day.day)
        key = repr(table)
        if key not in self._copies:
            self._copies[key] = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                table, sql.SQL(", ").join(sql.Identifier(c) for c in HISTORY.names))
        try:
            with self.conn.transaction():  # a savepoint inside the day's transaction
                self._write(self._copies[key], day.payload)
        except psycopg.errors.UniqueViolation:
            return None
        return UpsertCounts(inserted=day.valid_rows)

    def _upsert_day(self, day: PreparedDay) -> UpsertCounts:
        create_stage(self.conn, HISTORY, self._stage)
        self._write(self._copy, day.payload)
        inserted, updated = self.conn.execute(self._upsert(day.day)).fetchone()
        return UpsertCounts(inserted, updated, day.valid_rows - inserted - updated)

    def record_failure(self, day: PreparedDay) -> None:
        """A failed day leaves a ``failed`` ledger row and nothing else (autocommit)."""
        conn = self.conn
        with conn.transaction():
            start_run(conn, self.target, run_id=day.run_id, pipeline_name=self.pipeline_name, source="everef",
                      regions=self.regions, types_count=self.types_count)
            finish_run(conn, self.target, run_id=day.run_id, status="failed", counts={"fetched": day.rows_read},
                       error=day.message)

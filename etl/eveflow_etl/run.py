"""One ETL run: source → validate → load, with a ledger row whatever happens.

``run_etl`` is what the CLI and the Prefect flow call (the flow once per region). A run is one
database transaction: either every row of the run is loaded (and the ledger says ``succeeded``
in that same transaction) or none is, and the ledger says ``failed`` with the error.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import pandas as pd
import psycopg

from eveflow_etl.datasets import Dataset, SourceKind
from eveflow_etl.destinations import connect, describe, one_line
from eveflow_etl.errors import DestinationError, EveflowError, SourceError
from eveflow_etl.load.ddl import Target, ensure_tables, spec_for
from eveflow_etl.load.ledger import finish_run, start_run, write_quarantine
from eveflow_etl.load.orders import load_snapshot
from eveflow_etl.load.upsert import ChunkUpserter
from eveflow_etl.settings import EtlSettings
from eveflow_etl.validate import validate

log = logging.getLogger(__name__)


@dataclass
class Counts:
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    closed: int = 0  # orders only; not part of the fetched balance

    def add(self, other: "Counts") -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    @property
    def balanced(self) -> bool:
        return self.fetched == self.inserted + self.updated + self.unchanged + self.quarantined


@dataclass
class RunReport:
    run_id: str
    pipeline_name: str
    source: str
    target: str
    status: str
    regions: dict[int, Counts] = field(default_factory=dict)
    totals: Counts = field(default_factory=Counts)
    seconds: float = 0.0
    error: str | None = None
    # What the user should know about the data loaded (e.g. an EVE Ref day left unverified).
    notes: list[str] = field(default_factory=list)


Progress = Callable[[int, Counts], None]


def run_etl(
    source: SourceKind | str,
    regions: Sequence[int],
    types: Sequence[int] | None,
    destination: str,
    *,
    schema: str = "eve",
    table: str | None = None,
    pipeline_name: str = "eveflow",
    settings: EtlSettings,
    run_id: str | None = None,
    progress: Progress | None = None,
    day=None,
    batches: Iterable | None = None,
) -> RunReport:
    """Pull ``source`` for ``regions`` (and ``types``), validate, and upsert into ``schema.table``.

    ``destination`` is a libpq conninfo/DSN (see ``destinations.resolve_dsn``). ``batches``
    replaces the real source with any iterable of ``SourceBatch`` (tests, benchmarks).
    Raises ConfigError for bad names (before any SQL), SourceError / DestinationError on failure;
    the ledger row is written in every case.
    """
    source = SourceKind(source)
    dataset = source.dataset
    target = Target(schema, table or source.default_table)  # identifiers checked before any SQL
    run_id = run_id or str(uuid.uuid4())
    report = RunReport(run_id, pipeline_name, source.value, str(target), "running")
    started = time.monotonic()

    with connect(destination, autocommit=True) as admin:
        try:
            ensure_tables(admin, target, dataset)
            start_run(admin, target, run_id=run_id, pipeline_name=pipeline_name, source=source.value,
                      regions=list(regions), types_count=len(types) if types else None)
        except psycopg.Error as exc:
            raise DestinationError(f"preparing {target} at {describe(destination)} failed: {one_line(exc, destination)}") from None

    if batches is None:
        from eveflow_etl.sources import fetch

        batches = fetch(source, list(regions), list(types) if types else None, settings, day=day)

    try:
        with connect(destination) as conn:
            with conn.transaction():
                _load_all(conn, target, dataset, batches, run_id, report, settings, progress)
                report.status = "succeeded"
                report.seconds = time.monotonic() - started
                finish_run(conn, target, run_id=run_id, status="succeeded", counts=asdict(report.totals),
                           notes=report.notes)
    except BaseException as exc:
        report.status = "failed"
        report.seconds = time.monotonic() - started
        if isinstance(exc, EveflowError):
            report.error = str(exc)
        elif isinstance(exc, psycopg.Error):
            report.error = f"load into {target} at {describe(destination)} failed: {one_line(exc, destination)}"
        else:
            report.error = f"{type(exc).__name__}: {one_line(exc, destination)}"
        # Stop the source now (its fetch threads, HTTP session): the error's traceback keeps the
        # suspended generator alive for as long as a caller (a retrying task) holds the error.
        close = getattr(batches, "close", None)
        if close is not None:
            try:
                close()
            except Exception as close_exc:  # noqa: BLE001 - the original error matters more
                log.warning("closing the source of run %s failed: %s", run_id, close_exc)
        _record_failure(destination, target, report)
        if isinstance(exc, psycopg.Error):
            raise DestinationError(report.error) from None
        raise
    return report


def _record_failure(destination: str, target: Target, report: RunReport) -> None:
    # The load connection may be dead (that may be the failure): use a fresh one.
    try:
        with connect(destination, autocommit=True) as conn:
            # The load transaction rolled back: nothing was inserted, updated or quarantined.
            finish_run(conn, target, run_id=report.run_id, status="failed", counts={"fetched": report.totals.fetched},
                       error=report.error)
    except Exception as exc:  # noqa: BLE001 - the original error matters more
        log.error("could not record failed run %s in the ledger: %s", report.run_id, exc)


def _load_all(conn, target: Target, dataset: Dataset, batches: Iterable, run_id: str, report: RunReport,
              settings: EtlSettings, progress: Progress | None) -> None:
    spec = spec_for(dataset)
    upserter: ChunkUpserter | None = None
    chunk = settings.chunk_rows
    for batch in batches:
        region = int(batch.region_id)
        counts = Counts()
        frame: pd.DataFrame = batch.frame
        if dataset is Dataset.ORDERS:
            if not getattr(batch, "snapshot_complete", True):
                raise SourceError(f"orders snapshot of region {region} is incomplete: nothing loaded")
            valid, bad = validate(dataset, frame, run_id)
            write_quarantine(conn, target, bad)
            snap = load_snapshot(conn, target, valid, region, batch.types, chunk_rows=chunk)
            counts = Counts(len(frame), snap.inserted, snap.updated, snap.unchanged, len(bad), snap.closed)
        else:
            if upserter is None:
                upserter = ChunkUpserter(conn, target, spec)  # a Target: routed to its partitions
            for start in range(0, max(len(frame), 1), chunk):
                part = frame.iloc[start : start + chunk]
                if part.empty:
                    continue
                valid, bad = validate(dataset, part, run_id)
                write_quarantine(conn, target, bad)
                up = upserter.upsert(valid)
                counts.add(Counts(len(part), up.inserted, up.updated, up.unchanged, len(bad)))
        assert counts.balanced, counts
        report.notes.extend(n for n in getattr(batch, "notes", ()) if n not in report.notes)
        report.regions.setdefault(region, Counts()).add(counts)
        report.totals.add(counts)
        if progress is not None:
            progress(region, counts)

"""One ETL run: source → validate → load, with a ledger row whatever happens.

``run_etl`` is what the CLI and the Prefect flow call (the flow once per region). A run first
pulls everything (to a spool on disk; no database session is open meanwhile), then loads it in
one short transaction per batch (a region's order book, or a chunk of a region's days). Each
transaction also updates the run's ledger row, so the ledger always counts exactly what is
committed; a failed run says ``failed`` with the error and the counts of the batches that did
commit (upserts are idempotent: running again completes it).
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
from eveflow_etl.load.gate import CommitGate
from eveflow_etl.load.ledger import finish_run, start_run, write_quarantine
from eveflow_etl.load.orders import check_close_share, load_snapshot, snapshot_ids, stage_seen_ids
from eveflow_etl.load.spool import Spool
from eveflow_etl.load.upsert import ChunkUpserter
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources import fetch
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
    gate: CommitGate | None = None,
) -> RunReport:
    """Pull ``source`` for ``regions`` (and ``types``), validate, and upsert into ``schema.table``.

    ``destination`` is a libpq conninfo/DSN (see ``destinations.resolve_dsn``). ``batches``
    replaces the real source with any iterable of ``SourceBatch`` (tests, benchmarks).
    ``gate``: once the caller closes it (it stopped waiting: time budget), nothing more is
    committed (:class:`~eveflow_etl.load.gate.RunAbandoned`).
    Raises ConfigError for bad names (before any SQL), SourceError / DestinationError on failure;
    the ledger row is written in every case.
    """
    source = SourceKind(source)
    target = Target(schema, table or source.default_table)  # identifiers checked before any SQL
    run_id = run_id or str(uuid.uuid4())
    report = RunReport(run_id, pipeline_name, source.value, str(target), "running")
    started = time.monotonic()
    _start_run(destination, target, source, regions, types, report, settings)
    if batches is None:
        batches = fetch(source, list(regions), list(types) if types else None, settings, day=day)
    spool = Spool(settings.cache_dir / "spool")
    try:
        _pull(batches, source.dataset, spool)
        _load(destination, target, source.dataset, spool, report, started, settings, gate, progress)
    except BaseException as exc:
        _fail_run(exc, destination, target, batches, report, started, spool.rows, settings)
        if isinstance(exc, psycopg.Error):
            raise DestinationError(report.error) from None
        raise
    finally:
        spool.close()
    return report


def _start_run(destination: str, target: Target, source: SourceKind, regions: Sequence[int],
               types: Sequence[int] | None, report: RunReport, settings: EtlSettings) -> None:
    """The target's tables exist and the run's ledger row says ``running``."""
    with connect(destination, autocommit=True, settings=settings) as admin:
        try:
            ensure_tables(admin, target, source.dataset)
            start_run(admin, target, run_id=report.run_id, pipeline_name=report.pipeline_name, source=source.value,
                      regions=list(regions), types_count=len(types) if types else None)
        except psycopg.Error as exc:
            raise DestinationError(f"preparing {target} at {describe(destination)} failed: {one_line(exc, destination)}") from None


def _pull(batches: Iterable, dataset: Dataset, spool: Spool) -> None:
    """The whole network pull, with no database session open: an hours-long pull never holds a
    transaction (or a connection) and a dropped connection cannot lose it."""
    for batch in batches:
        if dataset is Dataset.ORDERS and not getattr(batch, "snapshot_complete", True):
            raise SourceError(f"orders snapshot of region {int(batch.region_id)} is incomplete: nothing loaded")
        spool.add(batch)


def _load(destination: str, target: Target, dataset: Dataset, spool: Spool, report: RunReport, started: float,
          settings: EtlSettings, gate: CommitGate | None, progress: Progress | None) -> None:
    """One short transaction per batch (a region, or a chunk of a region's days); the ledger row
    is updated in the same transaction, so it counts exactly what is committed."""
    with connect(destination, settings=settings) as conn:
        if dataset is Dataset.ORDERS:
            _check_close_shares(conn, target, spool, settings)
        gate = gate or CommitGate()
        for batch in spool:
            with gate.commit(f"run {report.run_id}"), conn.transaction():
                counts = _load_batch(conn, target, dataset, batch, report.run_id, settings)
                committed = Counts(**asdict(report.totals))
                committed.add(counts)
                notes = report.notes + [n for n in getattr(batch, "notes", ()) if n not in report.notes]
                finish_run(conn, target, run_id=report.run_id, status="running", counts=asdict(committed), notes=notes)
            _committed(report, batch, counts, notes, progress)
        report.status = "succeeded"
        report.seconds = time.monotonic() - started
        finish_run(conn, target, run_id=report.run_id, status="succeeded", counts=asdict(report.totals),
                   notes=report.notes)


def _committed(report: RunReport, batch, counts: Counts, notes: list[str], progress: Progress | None) -> None:
    region = int(batch.region_id)
    report.notes[:] = notes
    report.regions.setdefault(region, Counts()).add(counts)
    report.totals.add(counts)
    if progress is not None:
        progress(region, counts)


def _fail_run(exc: BaseException, destination: str, target: Target, batches: Iterable, report: RunReport,
              started: float, pulled: int, settings: EtlSettings) -> None:
    """The report and the ledger row say ``failed`` with ``exc``; the source is stopped."""
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
            log.warning("closing the source of run %s failed: %s", report.run_id, close_exc)
    _record_failure(destination, target, report, pulled, settings)


def _record_failure(destination: str, target: Target, report: RunReport, pulled: int,
                    settings: EtlSettings) -> None:
    # The load connection may be dead (that may be the failure): use a fresh one.
    try:
        with connect(destination, autocommit=True, settings=settings) as conn:
            # Batches committed before the failure stay (their counts); the failing one rolled back.
            counts = {**asdict(report.totals), "fetched": max(pulled, report.totals.fetched)}
            finish_run(conn, target, run_id=report.run_id, status="failed", counts=counts, error=report.error,
                       notes=report.notes)
    except Exception as exc:  # noqa: BLE001 - the original error matters more
        log.error("could not record failed run %s in the ledger: %s", report.run_id, exc)


def _check_close_shares(conn, target: Target, spool: Spool, settings: EtlSettings) -> None:
    """Every region's snapshot is checked against the close guard before any region is written,
    so a bad pull fails the run with nothing changed."""
    for batch in spool:
        with conn.transaction():
            stage_seen_ids(conn, snapshot_ids(batch.frame))
            check_close_share(conn, target, int(batch.region_id), batch.types, settings.orders_max_close_share)
            raise psycopg.Rollback()  # a look only: leaves nothing behind


def _load_batch(conn, target: Target, dataset: Dataset, batch, run_id: str, settings: EtlSettings) -> Counts:
    region = int(batch.region_id)
    frame: pd.DataFrame = batch.frame
    chunk = settings.chunk_rows
    counts = Counts()
    if dataset is Dataset.ORDERS:
        valid, bad = validate(dataset, frame, run_id)
        write_quarantine(conn, target, bad)
        snap = load_snapshot(conn, target, valid, region, batch.types, chunk_rows=chunk,
                             seen_ids=snapshot_ids(frame), max_close_share=settings.orders_max_close_share)
        counts = Counts(len(frame), snap.inserted, snap.updated, snap.unchanged, len(bad), snap.closed)
    else:
        upserter = ChunkUpserter(conn, target, spec_for(dataset))  # a Target: routed to its partitions
        for start in range(0, max(len(frame), 1), chunk):
            part = frame.iloc[start : start + chunk]
            if part.empty:
                continue
            valid, bad = validate(dataset, part, run_id)
            write_quarantine(conn, target, bad)
            up = upserter.upsert(valid)
            counts.add(Counts(len(part), up.inserted, up.updated, up.unchanged, len(bad)))
    assert counts.balanced, counts
    return counts

"""Plan the days of a backfill, prepare them ahead on a bounded pool, load one day per transaction."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import datetime as dt
import logging
import multiprocessing
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from eveflow_etl.backfill.days import day_range, yesterday
from eveflow_etl.backfill.loader import DayLoader
from eveflow_etl.backfill.prepare import DayTask, PreparedDay, init_worker, prepare_day
from eveflow_etl.backfill.state import ensure_state_table, is_current, read_states
from eveflow_etl.destinations import connect, describe, one_line
from eveflow_etl.errors import ConfigError, DestinationError
from eveflow_etl.esi import EsiClient
from eveflow_etl.load.ddl import Target, ensure_tables
from eveflow_etl.settings import EtlSettings
from eveflow_etl.sources.everef import totals_url

log = logging.getLogger(__name__)

EXECUTORS = ("process", "thread")


@dataclass(frozen=True)
class BackfillOptions:
    start: dt.date | None = None  # None: the first day totals.json lists
    end: dt.date | None = None  # None: yesterday (UTC)
    regions: tuple[int, ...] | None = None  # None: every region in the files
    types: tuple[int, ...] | None = None
    jobs: int = 2  # days prepared ahead of the loader, in parallel
    executor: str = "thread"  # measured faster than processes on 2 cores, and less memory (bench/backfill.py)
    # Days at the end of the range loaded again even if verified (EVE Ref rewrites recent days).
    verify_days: int = 0
    schema: str = "eve"
    table: str = "market_history"
    pipeline_name: str = "backfill"

    @property
    def scope(self) -> str:
        if self.regions is None and self.types is None:
            return "all"
        parts = []
        if self.regions is not None:
            parts.append("regions=" + ",".join(map(str, sorted(self.regions))))
        if self.types is not None:
            parts.append("types=" + ",".join(map(str, sorted(self.types))))
        return ";".join(parts)


@dataclass
class DayResult:
    day: dt.date
    action: str  # loaded | reloaded | skipped | missing | failed
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    unverified: bool = False
    downloaded: bool = False
    compressed_bytes: int = 0
    seconds: float = 0.0
    message: str = ""


@dataclass
class BackfillReport:
    target: str
    start: dt.date
    end: dt.date
    planned: int = 0  # days to load (not skipped)
    days: list[DayResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, action: str) -> int:
        return sum(1 for d in self.days if d.action == action)

    @property
    def unverified(self) -> int:
        return sum(1 for d in self.days if d.unverified)

    @property
    def rows(self) -> int:
        return sum(d.inserted + d.updated + d.unchanged for d in self.days)

    @property
    def rows_written(self) -> int:
        return sum(d.inserted + d.updated for d in self.days)

    @property
    def downloaded_days(self) -> int:
        return sum(1 for d in self.days if d.downloaded)

    @property
    def compressed_bytes(self) -> int:
        return sum(d.compressed_bytes for d in self.days)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0


Progress = Callable[[DayResult, BackfillReport], None]


def published_totals(settings: EtlSettings) -> tuple[dict[str, int] | None, str]:
    """EVE Ref's ``totals.json`` (day → rows), or None and why it cannot be used."""
    url = totals_url(str(settings.everef_base_url).rstrip("/"))
    try:
        with EsiClient(settings) as client:
            resp = client.get(url, service="EVE Ref")
            if resp.status != 200:
                return None, f"{url}: HTTP {resp.status}"
            totals = resp.json()
    except ValueError:
        return None, f"{url} is not JSON"
    except Exception as exc:  # noqa: BLE001 - SourceError and friends: the days stay unverified
        return None, str(exc).splitlines()[0]
    if not isinstance(totals, dict):
        return None, f"{url} is not an object of day -> row count"
    good = {k: v for k, v in totals.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}
    return good, ""


def run_backfill(options: BackfillOptions, destination: str, settings: EtlSettings, *,
                 progress: Progress | None = None, on_plan: Callable[[BackfillReport], None] | None = None,
                 today: dt.date | None = None) -> BackfillReport:
    """Load every day of ``options``' range that is not already loaded and verified against the
    total EVE Ref publishes now. Raises ConfigError for a bad range (before any SQL),
    DestinationError if the database cannot be prepared; a day that fails is reported in the
    report (and the ledger) and the others go on."""
    if options.jobs < 1 or options.jobs > 64:
        raise ConfigError(f"--jobs must be between 1 and 64, got {options.jobs}")
    if options.executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {options.executor!r}")
    target = Target(options.schema, options.table)
    end = options.end or yesterday(today)
    if options.start is not None:
        day_range(options.start, end, today=today)  # refuse a bad range before any request
    totals, why = published_totals(settings)
    start = options.start
    if start is None:
        if not totals:
            raise ConfigError(f"--from is needed: the archive's first day comes from totals.json, which "
                              f"cannot be read ({why or 'it lists no day'})")
        start = dt.date.fromisoformat(min(totals))
    days = day_range(start, end, today=today)
    started = time.monotonic()
    report = BackfillReport(str(target), start, end)

    try:
        with connect(destination, autocommit=True) as admin:
            ensure_tables(admin, target, "history")
            ensure_state_table(admin, target)
            states = read_states(admin, target, start, end)
    except Exception as exc:
        if isinstance(exc, ConfigError):
            raise
        raise DestinationError(f"preparing {target} at {describe(destination)} failed: "
                               f"{one_line(exc, destination)}") from None

    verify_from = end - dt.timedelta(days=options.verify_days - 1) if options.verify_days > 0 else None
    tasks: list[tuple[DayTask, bool]] = []
    for day in days:
        iso = day.isoformat()
        expected = totals.get(iso) if totals is not None else None
        state = states.get(day)
        recheck = verify_from is not None and day >= verify_from
        if not recheck and is_current(state, options.scope, expected):
            report.days.append(DayResult(day, "skipped", rows_read=state.rows_read))
            continue
        reason = why if totals is None else f"{iso} not in totals.json yet"
        tasks.append((DayTask(day, str(uuid.uuid4()), expected, reason, options.regions, options.types),
                      state is not None))
    report.planned = len(tasks)
    if on_plan is not None:
        on_plan(report)
    if tasks:
        _load(tasks, options, destination, settings, target, totals, report, progress)
    report.seconds = time.monotonic() - started
    return report


def _pool(options: BackfillOptions, settings: EtlSettings) -> cf.Executor:
    if options.executor == "thread":
        return cf.ThreadPoolExecutor(options.jobs, thread_name_prefix="backfill",
                                     initializer=init_worker, initargs=(settings,))
    # fork: the workers start in milliseconds with everything imported; they only run
    # prepare_day with their own HTTP client.
    ctx = multiprocessing.get_context("fork")
    return cf.ProcessPoolExecutor(options.jobs, mp_context=ctx, initializer=init_worker, initargs=(settings,))


def _load(tasks, options, destination, settings, target, totals, report, progress) -> None:
    pending: collections.deque = collections.deque()
    queue = iter(tasks)
    # In flight: what the workers prepare plus one finished day waiting per worker. Memory is
    # bounded by this, not by the number of days.
    ahead = options.jobs * 2
    pool = _pool(options, settings)
    try:
        with connect(destination) as conn:
            loader = DayLoader(conn, target, pipeline_name=options.pipeline_name, scope=options.scope,
                               regions=options.regions, types=options.types)

            def fill() -> None:
                while len(pending) < ahead:
                    item = next(queue, None)
                    if item is None:
                        return
                    task, existed = item
                    pending.append((task, existed, pool.submit(prepare_day, task)))

            fill()
            while pending:
                task, existed, future = pending.popleft()
                prepared: PreparedDay = future.result()
                fill()
                result = _load_one(loader, prepared, existed, totals, destination)
                report.days.append(result)
                _log_day(result, report)
                if progress is not None:
                    progress(result, report)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _load_one(loader: DayLoader, prepared: PreparedDay, existed: bool, totals, destination) -> DayResult:
    result = DayResult(prepared.day, "failed", rows_read=prepared.rows_read, downloaded=prepared.downloaded,
                       compressed_bytes=prepared.compressed_bytes, message=prepared.message)
    if prepared.status == "missing":
        result.action = "missing"
        return result
    if prepared.status == "failed":
        _record_failure(loader, prepared)
        return result
    started = time.perf_counter()
    published = totals.get(prepared.day.isoformat()) if totals is not None else None
    try:
        counts, quarantined = loader.load(prepared, published)
    except Exception as exc:  # noqa: BLE001 - psycopg errors: the day fails, the others go on
        prepared.message = result.message = (f"load of {prepared.day} into {loader.target} failed: "
                                              f"{one_line(exc, destination)}")
        _record_failure(loader, prepared)
        if loader.conn.closed:
            raise DestinationError(result.message) from None
        return result
    result.action = "reloaded" if existed else "loaded"
    result.inserted, result.updated, result.unchanged = counts.inserted, counts.updated, counts.unchanged
    result.quarantined = quarantined
    result.unverified = prepared.note is not None
    result.message = prepared.note or ""
    result.seconds = prepared.seconds + time.perf_counter() - started
    return result


def _record_failure(loader: DayLoader, prepared: PreparedDay) -> None:
    try:
        loader.record_failure(prepared)
    except Exception as exc:  # noqa: BLE001 - the day's own error matters more
        log.error("could not record failed day %s in the ledger: %s", prepared.day, exc)


def _log_day(result: DayResult, report: BackfillReport) -> None:
    done = sum(1 for d in report.days if d.action != "skipped")
    if result.action in ("missing", "failed"):
        log.warning("EVE Ref %s %s [%d/%d]: %s", result.day, result.action, done, report.planned, result.message)
    else:
        log.info("EVE Ref %s %s [%d/%d]: %d rows read, %d inserted, %d updated, %d unchanged%s",
                 result.day, result.action, done, report.planned, result.rows_read, result.inserted,
                 result.updated, result.unchanged, f" ({result.message})" if result.unverified else "")

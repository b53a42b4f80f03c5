"""``eveflow etl backfill``: EVE Ref's archive, day by day; progress bar on a terminal, log lines
otherwise, a summary table at the end."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from eveflow_etl.cli.etl_cmd import _ints, etl_app
from eveflow_etl.errors import ConfigError, SourceError
from eveflow_etl.settings import EtlSettings


@etl_app.command("backfill")
def backfill(
    source: str = typer.Option("everef", "--source", help="everef (EVE Ref's daily history files)."),
    from_: Optional[str] = typer.Option(None, "--from", help="First day, YYYY-MM-DD (default: the archive's first)."),
    to: Optional[str] = typer.Option(None, "--to", help="Last day, YYYY-MM-DD (default: yesterday, UTC)."),
    regions: Optional[str] = typer.Option(None, "--regions", help="Comma-separated region ids (default: all)."),
    types: Optional[str] = typer.Option(None, "--types", help="Comma-separated type ids (default: all)."),
    jobs: int = typer.Option(2, "--jobs", help="Days downloaded and parsed ahead of the loader, in parallel."),
    executor: str = typer.Option("thread", "--executor", help="thread | process: what prepares the days."),
    verify_days: int = typer.Option(0, "--verify-days", help="Load the last N days again even if verified."),
    dsn: Optional[str] = typer.Option(None, "--dsn", help="PostgreSQL DSN/URI (default: local embedded server)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="local | dsn | env | crunchy | snowflake"),
    schema: str = typer.Option("eve", "--schema"),
    table: str = typer.Option("market_history", "--table"),
    pipeline_name: str = typer.Option("backfill", "--pipeline-name"),
    everef_base_url: Optional[str] = typer.Option(None, "--everef-base-url"),
) -> None:
    """Load every day of EVE Ref's archive from --from to --to that is not loaded and verified yet."""
    # Imported here, not at the top: every `eveflow` command (`--help` too) imports this module;
    # the backfill package (pandas) costs ~1.5 s there, destinations and ddl (psycopg) ~50 ms.
    from eveflow_etl.backfill import BackfillOptions, run_backfill
    from eveflow_etl.backfill.days import parse_day
    from eveflow_etl.destinations import resolve_dsn
    from eveflow_etl.load.ddl import Target

    if source != "everef":
        raise ConfigError(f"--source: backfill reads everef (EVE Ref's daily files), got {source!r}")
    start = parse_day(from_, "--from") if from_ is not None else None
    end = parse_day(to, "--to") if to is not None else None
    if start and end and start > end:
        raise ConfigError(f"--from {start.isoformat()} is after --to {end.isoformat()}: swap them")
    if verify_days < 0:
        raise ConfigError(f"--verify-days must be 0 or more, got {verify_days}")
    region_ids = tuple(_ints(regions, "--regions")) or None
    type_ids = tuple(_ints(types, "--types")) or None
    Target(schema, table)
    try:
        settings = EtlSettings(**({"everef_base_url": everef_base_url} if everef_base_url else {}))
    except Exception as exc:  # pydantic ValidationError → one line
        raise ConfigError(f"invalid option: {str(exc).splitlines()[-1].strip()}") from None
    options = BackfillOptions(start, end, region_ids, type_ids, jobs=jobs, executor=executor,
                              verify_days=verify_days, schema=schema, table=table, pipeline_name=pipeline_name)
    conninfo = resolve_dsn(profile, dsn, settings)
    tty = sys.stderr.isatty()
    if not tty:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    with _Bar(tty) as bar:
        report = run_backfill(options, conninfo, settings, progress=bar.day, on_plan=bar.plan)
    _summary(report)
    if not report.ok:
        raise SourceError(f"{report.count('failed')} of {len(report.days)} days failed (see the table above); "
                          f"run the same command again to retry them")


class _Bar:
    """Days, rows, MB and ETA on a terminal; nothing here otherwise (the runner logs each day)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar = None
        self._task = None
        self._rows = 0
        self._bytes = 0

    def __enter__(self) -> "_Bar":
        if self.enabled:
            # rich.progress: ~20 ms at every `eveflow` start if imported at the top.
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("days"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rows]:,} rows  {task.fields[mb]:.1f} MB"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)
            self._bar.start()
        return self

    def plan(self, report) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task("backfill", total=report.planned, rows=0, mb=0.0)

    def day(self, result, report) -> None:
        self._rows += result.inserted + result.updated + result.unchanged
        self._bytes += result.compressed_bytes
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, rows=self._rows, mb=self._bytes / 2**20)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def _summary(report) -> None:
    # rich's console and table: ~30 ms at every `eveflow` start if imported at the top.
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"EVE Ref {report.start} … {report.end} → {report.target} in {report.seconds:.1f}s")
    for name in ("loaded", "skipped", "reloaded", "unverified", "missing", "failed", "rows", "rows written",
                 "MB downloaded", "seconds"):
        table.add_column(name, justify="right")
    downloaded = sum(d.compressed_bytes for d in report.days if d.downloaded)
    table.add_row(*(str(report.count(a)) for a in ("loaded", "skipped", "reloaded")), str(report.unverified),
                  str(report.count("missing")), str(report.count("failed")), f"{report.rows:,}",
                  f"{report.rows_written:,}", f"{downloaded / 2**20:.1f}", f"{report.seconds:.1f}")
    console = Console(width=140)
    console.print(table)
    for day in report.days:
        if day.action in ("missing", "failed") or day.unverified:
            console.print(f"{day.day} {day.action}{' (unverified)' if day.unverified else ''}: {day.message}",
                          markup=False, highlight=False)

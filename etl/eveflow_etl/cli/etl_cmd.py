"""``eveflow etl run``: pull a source, validate, upsert; progress on a terminal, a summary at the end."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from eveflow_etl.cli.app import app
from eveflow_etl.cli.dsn_opts import DsnFileOpt, DsnOpt, pick_dsn
from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import ConfigError
from eveflow_etl.settings import EtlSettings

etl_app = typer.Typer(no_args_is_help=True, help="Run the ETL engine.")
app.add_typer(etl_app, name="etl")


def _ints(text: Optional[str], option: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {text!r}") from None


@etl_app.command("run")
def run(
    source: str = typer.Option(..., "--source", help="esi-history | esi-orders | mokaam | everef"),
    regions: str = typer.Option(..., "--regions", help="Comma-separated region ids, e.g. 10000002,10000043"),
    types: Optional[str] = typer.Option(None, "--types", help="Comma-separated type ids, or all (the default): "
                                        "every type the region lists (ESI /markets/{region}/types/)."),
    dsn: Optional[str] = DsnOpt,
    dsn_file: Optional[Path] = DsnFileOpt,
    profile: Optional[str] = typer.Option(None, "--profile", help="local | dsn | env | crunchy | snowflake"),
    schema: str = typer.Option("eve", "--schema"),
    table: Optional[str] = typer.Option(None, "--table", help="Default: market_history / market_orders / market_aggregates."),
    pipeline_name: str = typer.Option("cli", "--pipeline-name"),
    esi_base_url: Optional[str] = typer.Option(None, "--esi-base-url"),
    mokaam_base_url: Optional[str] = typer.Option(None, "--mokaam-base-url"),
    everef_base_url: Optional[str] = typer.Option(None, "--everef-base-url"),
    day: Optional[str] = typer.Option(None, "--day", help="EVE Ref: the day to load (YYYY-MM-DD)."),
) -> None:
    """Load SOURCE for REGIONS into SCHEMA.TABLE."""
    # Imported here, not at the top: every `eveflow` command (`--help` too) imports this module;
    # run (pandas, pandera) costs ~1.1 s there, destinations and ddl (psycopg) ~50 ms.
    from eveflow_etl.destinations import resolve_dsn
    from eveflow_etl.load.ddl import Target
    from eveflow_etl.etl_run import run_etl

    try:
        kind = SourceKind(source)
    except ValueError:
        raise ConfigError(f"--source must be one of {', '.join(k.value for k in SourceKind)}, got {source!r}") from None
    region_ids = _ints(regions, "--regions")
    if not region_ids:
        raise ConfigError("--regions needs at least one region id, e.g. 10000002")
    type_ids = None if (types or "").strip().lower() == "all" else (_ints(types, "--types") or None)
    Target(schema, table or kind.default_table)  # refuse bad names before starting anything
    overrides = {k: v for k, v in (("esi_base_url", esi_base_url), ("mokaam_base_url", mokaam_base_url),
                                   ("everef_base_url", everef_base_url)) if v}
    try:
        settings = EtlSettings(**overrides)
    except Exception as exc:  # pydantic ValidationError → one line
        raise ConfigError(f"invalid option: {str(exc).splitlines()[-1].strip()}") from None
    day_value = None
    if day:
        try:
            day_value = dt.date.fromisoformat(day)
        except ValueError:
            raise ConfigError(f"--day must be YYYY-MM-DD, got {day!r}") from None
    conninfo = resolve_dsn(profile, pick_dsn(dsn, dsn_file), settings)

    with _progress(sys.stderr.isatty(), all_types=kind is SourceKind.ESI_HISTORY and type_ids is None) as progress:
        report = run_etl(kind, region_ids, type_ids, conninfo, schema=schema, table=table,
                         pipeline_name=pipeline_name, settings=settings, progress=progress, day=day_value)
    _summary(report)


class _progress:
    """A rich progress line per run on a terminal; nothing otherwise (logs stay clean), except the
    types done and the ETA of an ESI history pull of every type (log lines every tenth)."""

    def __init__(self, enabled: bool, all_types: bool = False):
        self.enabled = enabled
        self.all_types = all_types  # ESI history of every type: types done and the budget's ETA too
        self._bar = None
        self._types = None

    def __enter__(self):
        if self.all_types:
            self._types = self._types_progress()
        if not self.enabled:
            return None
        # rich.progress: ~20 ms at every `eveflow` start if imported at the top.
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True)
        self._bar.start()
        task = self._bar.add_task("loading…", total=None)
        totals = {"rows": 0, "batches": 0}

        types = {"line": ""}

        def update(region: int, counts) -> None:
            totals["rows"] += counts.fetched
            totals["batches"] += 1
            self._bar.update(task, description=f"region {region}: {totals['rows']:,} rows, {totals['batches']} batches"
                             + types["line"])

        def update_types(p) -> None:
            types["line"] = f"; {p.detail()}"
            self._bar.update(task, description=f"region {p.region_id}: {totals['rows']:,} rows, "
                             f"{totals['batches']} batches{types['line']}")

        self._listener = update_types
        return update

    def _types_progress(self):
        """On a terminal the progress line carries it (see __enter__); log lines otherwise."""
        # The backfill package (pandas) would add ~0.9 s to every `eveflow` start at the top.
        from eveflow_etl.backfill import progress

        if self.enabled:
            ctx = progress.listening(lambda p: self._listener(p))
        else:
            logging.getLogger(progress.__name__).setLevel(logging.INFO)
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                                    format="%(asctime)s %(levelname)s %(message)s")
            ctx = progress.listening(progress.log_lines())
        ctx.__enter__()
        return ctx

    def __exit__(self, *exc) -> None:
        if self._types is not None:
            self._types.__exit__(*exc)
        if self._bar is not None:
            self._bar.stop()


def _summary(report) -> None:
    # rich's console and table: ~30 ms at every `eveflow` start if imported at the top.
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.source} → {report.target}  run {report.run_id}  {report.status} in {report.seconds:.1f}s")
    columns = ("fetched", "inserted", "updated", "unchanged", "quarantined", "closed")
    table.add_column("region", justify="right")
    for name in columns:
        table.add_column(name, justify="right")
    for region, counts in sorted(report.regions.items()):
        table.add_row(str(region), *(f"{getattr(counts, n):,}" for n in columns))
    table.add_row("total", *(f"{getattr(report.totals, n):,}" for n in columns), style="bold")
    console = Console(width=120)
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)

"""``eveflow csv load|upsert|pull`` — the reference project's CSV verbs (logic in csvtool)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import typer

from eveflow_etl.cli.app import app
from eveflow_etl.cli.dsn_opts import DsnFileOpt, DsnOpt, pick_dsn
from eveflow_etl.settings import load_settings

csv_app = typer.Typer(no_args_is_help=True, help="Load, upsert and pull CSV files.")
app.add_typer(csv_app, name="csv")

ProfileOpt = typer.Option(None, "--profile", help="local | dsn | env | crunchy | snowflake")


def _dsn(dsn: Optional[str], profile: Optional[str], dsn_file: Optional[Path] = None) -> str:
    # Imported here, as csvtool in each command: every `eveflow` command (`--help` too) imports this
    # module; destinations (psycopg) would add ~50 ms there, csvtool (pandas) ~330 ms.
    from eveflow_etl.destinations import resolve_dsn

    return resolve_dsn(profile, pick_dsn(dsn, dsn_file), load_settings())


@csv_app.command("load")
def load(
    file: Path = typer.Argument(..., help="CSV file with a header line."),
    table: str = typer.Argument(..., help="Target table (created if missing)."),
    schema: str = typer.Option("public", "--schema"),
    dsn: Optional[str] = DsnOpt,
    dsn_file: Optional[Path] = DsnFileOpt,
    profile: Optional[str] = ProfileOpt,
) -> None:
    """COPY a CSV file into SCHEMA.TABLE (one transaction: all rows or none)."""
    from eveflow_etl.csvtool import load_csv

    result = load_csv(_dsn(dsn, profile, dsn_file), file, schema, table)
    typer.echo(f"loaded {result.rows} rows into {schema}.{table}")


@csv_app.command("upsert")
def upsert(
    file: Path = typer.Argument(...),
    table: str = typer.Argument(...),
    primary_keys: str = typer.Option(..., "--primary-keys", help="Comma-separated key columns, e.g. a,b,c"),
    schema: str = typer.Option("public", "--schema"),
    dsn: Optional[str] = DsnOpt,
    dsn_file: Optional[Path] = DsnFileOpt,
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Insert new rows and update changed ones of SCHEMA.TABLE on the given key."""
    from eveflow_etl.csvtool import upsert_csv

    keys = [k.strip() for k in primary_keys.split(",") if k.strip()]
    r = upsert_csv(_dsn(dsn, profile, dsn_file), file, schema, table, keys)
    typer.echo(f"{r.rows} rows: {r.inserted} inserted, {r.updated} updated, {r.unchanged} unchanged")


@csv_app.command("pull")
def pull(
    qualified: str = typer.Argument(..., metavar="SCHEMA.TABLE"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="File to write (default: stdout)."),
    dsn: Optional[str] = DsnOpt,
    dsn_file: Optional[Path] = DsnFileOpt,
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Write a table as CSV with a header."""
    from eveflow_etl.csvtool import pull_csv

    conninfo = _dsn(dsn, profile, dsn_file)
    if output is None:
        pull_csv(conninfo, qualified)
        return
    # mkstemp: an unpredictable name opened O_EXCL (mode 0600), so nobody can plant a file or a
    # symlink for us to write through; renamed over ``output`` only once complete.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            size = pull_csv(conninfo, qualified, fh)
    except BaseException:
        tmp.unlink(missing_ok=True)  # nor a stray .part
        raise
    tmp.replace(output)  # no half-written file on failure
    typer.echo(f"wrote {size} bytes to {output}", err=True)

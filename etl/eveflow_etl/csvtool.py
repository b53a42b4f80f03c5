"""The reference project's three CSV verbs: load (COPY), upsert (COPY + ON CONFLICT), pull.

A malformed file is reported with its line and column and nothing is written (each verb is one
transaction). Column names come from the header and are checked like any other identifier.
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

import pandas as pd
import psycopg
from psycopg import sql

from eveflow_etl.destinations import connect, describe, one_line
from eveflow_etl.errors import ConfigError, DestinationError
from eveflow_etl.load.ddl import check_identifier
from eveflow_etl.load.upsert import upsert_sql

_BLOCK = 1 << 20
_CONTEXT = re.compile(r"line (\d+)(?:, column ([^:]+))?")


@dataclass
class CsvResult:
    rows: int
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def _header_and_check(path: Path) -> list[str]:
    """The header's column names; every line must have as many fields (else ConfigError)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise ConfigError(f"{path}: empty file (a header line is needed)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: line 1: {exc}") from None
        for name in header:
            check_identifier(name, f"column (in {path.name} header)")
        try:
            for fields in reader:
                if len(fields) != len(header) and fields:
                    column = header[len(fields)] if len(fields) < len(header) else f"#{len(fields)}"
                    raise ConfigError(
                        f"{path}: line {reader.line_num}, column {column}: expected {len(header)} fields, "
                        f"found {len(fields)}"
                    )
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: line {reader.line_num + 1}: {exc}") from None
    return header


def _infer_types(path: Path, header: list[str]) -> dict[str, str]:
    sample = pd.read_csv(path, nrows=10_000, dtype_backend="numpy_nullable")
    types = {}
    for name in header:
        kind = sample[name].dtype.kind if name in sample else "O"
        types[name] = {"i": "int8", "u": "int8", "f": "float8", "b": "bool"}.get(kind, "text")
    return types


def _table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}"."{table}"']).fetchone()[0]


def _create_table(conn, schema: str, table: str, types: dict[str, str], key: Sequence[str] = ()) -> None:
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in types.items()]
    if key:
        cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, key))))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table), sql.SQL(", ").join(cols)))


def _copy_in(conn, table: sql.Composable, header: list[str], path: Path) -> int:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, header))
    )
    with conn.cursor() as cur:
        with cur.copy(stmt) as copy, path.open("rb") as fh:
            for block in _without_end_marker(fh):
                copy.write(block)
        return cur.rowcount


def _without_end_marker(fh) -> Iterator[bytes]:
    r"""The file in blocks, with each line that is exactly ``\.`` (outside a quoted field) quoted.

    COPY … FROM STDIN takes an unquoted ``\.`` line as the end of the data and silently drops
    every row after it; quoted, it is the same value (``\.``) and nothing is lost."""
    in_quote = False
    parts: list[bytes] = []
    size = 0
    for line in fh:
        if not in_quote and line.rstrip(b"\r\n") == b"\\.":
            line = b'"\\."' + line[2:]
        if line.count(b'"') % 2:
            in_quote = not in_quote
        parts.append(line)
        size += len(line)
        if size >= _BLOCK:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def _bad_data(exc: psycopg.Error, path: Path, conninfo: str) -> ConfigError | DestinationError:
    context = (exc.diag.context or "") if hasattr(exc, "diag") else ""
    match = _CONTEXT.search(context)
    if isinstance(exc, (psycopg.errors.DataError, psycopg.errors.IntegrityError)) and match:
        where = f"line {match.group(1)}" + (f", column {match.group(2)}" if match.group(2) else "")
        return ConfigError(f"{path}: {where}: {one_line(exc, conninfo)} (nothing written)")
    if isinstance(exc, (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.UndefinedColumn,
                        psycopg.errors.InvalidColumnReference)):
        return ConfigError(f"{path}: {one_line(exc, conninfo)} (nothing written)")
    return DestinationError(f"CSV load at {describe(conninfo)} failed: {one_line(exc, conninfo)}")


def load_csv(conninfo: str, path: Path | str, schema: str, table: str) -> CsvResult:
    """COPY ``path`` (CSV with a header) into ``schema.table``, creating the table if missing."""
    check_identifier(schema, "schema")
    check_identifier(table, "table")
    path = Path(path)
    header = _header_and_check(path)
    with connect(conninfo) as conn:
        try:
            with conn.transaction():
                if not _table_exists(conn, schema, table):
                    _create_table(conn, schema, table, _infer_types(path, header))
                rows = _copy_in(conn, sql.Identifier(schema, table), header, path)
        except psycopg.Error as exc:
            raise _bad_data(exc, path, conninfo) from None
    return CsvResult(rows=rows, inserted=rows)


def upsert_csv(conninfo: str, path: Path | str, schema: str, table: str, primary_keys: Sequence[str]) -> CsvResult:
    """Upsert ``path`` into ``schema.table`` on ``primary_keys`` (only changed rows rewritten)."""
    check_identifier(schema, "schema")
    check_identifier(table, "table")
    keys = [check_identifier(k, "primary key column") for k in primary_keys]
    if not keys:
        raise ConfigError("--primary-keys needs at least one column")
    path = Path(path)
    header = _header_and_check(path)
    missing = [k for k in keys if k not in header]
    if missing:
        raise ConfigError(f"{path}: primary key column(s) {', '.join(missing)} not in the header")
    target = sql.Identifier(schema, table)
    stage = sql.Identifier("eveflow_csv_stage")
    with connect(conninfo) as conn:
        try:
            with conn.transaction():
                if not _table_exists(conn, schema, table):
                    _create_table(conn, schema, table, _infer_types(path, header), keys)
                conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, target))
                rows = _copy_in(conn, stage, header, path)
                inserted, updated = conn.execute(upsert_sql(target, stage, header, keys)).fetchone()
        except psycopg.errors.InvalidColumnReference:
            raise ConfigError(
                f"{schema}.{table} has no unique index on ({', '.join(keys)}): pick its primary key columns"
            ) from None
        except psycopg.errors.CardinalityViolation:
            raise ConfigError(f"{path}: the same primary key appears twice in the file (nothing written)") from None
        except psycopg.Error as exc:
            raise _bad_data(exc, path, conninfo) from None
    return CsvResult(rows, inserted, updated, rows - inserted - updated)


def pull_csv(conninfo: str, qualified: str, out: IO[bytes] | None = None) -> int:
    """Write ``SCHEMA.TABLE`` as CSV with a header to ``out`` (stdout by default); returns bytes."""
    if qualified.count(".") != 1:
        raise ConfigError(f"expected SCHEMA.TABLE, got {qualified!r}")
    schema, table = qualified.split(".")
    check_identifier(schema, "schema")
    check_identifier(table, "table")
    out = out or sys.stdout.buffer
    written = 0
    with connect(conninfo) as conn:
        try:
            stmt = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT (FORMAT csv, HEADER true)").format(
                sql.Identifier(schema, table)
            )
            with conn.cursor().copy(stmt) as copy:
                for block in copy:
                    out.write(block)
                    written += len(block)
        except psycopg.errors.UndefinedTable:
            raise ConfigError(f"table {schema}.{table} does not exist") from None
        except psycopg.Error as exc:
            raise DestinationError(f"pull from {describe(conninfo)} failed: {one_line(exc, conninfo)}") from None
    return written

"""Table shapes per dataset, identifier checks and idempotent DDL.

Identifiers come from users (``--schema``, ``--table``) and are checked here before any SQL is
built; every statement quotes them with ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import Connection, sql

from eveflow_etl.datasets import Dataset
from eveflow_etl.errors import ConfigError

# Lower-case only: unquoted SQL folds case, so a mixed-case name would surprise psql users.
_IDENT = re.compile(r"[a-z_][a-z0-9_]*")
MAX_IDENT = 63  # NAMEDATALEN - 1
QUARANTINE_SUFFIX = "_quarantine"
DAILY_SUFFIX = "_daily"
LEDGER_TABLE = "etl_runs"


def check_identifier(name: str, what: str, *, reserve: int = 0) -> str:
    """Return ``name`` if it is a safe identifier, else raise ConfigError naming the fix."""
    limit = MAX_IDENT - reserve
    if not isinstance(name, str) or not _IDENT.fullmatch(name) or len(name) > limit:
        raise ConfigError(
            f"invalid {what} name {name!r}: use lower-case letters, digits and '_', "
            f"starting with a letter or '_', at most {limit} characters"
        )
    return name


@dataclass(frozen=True)
class Column:
    name: str
    pgtype: str  # int4 int8 float8 bool date timestamptz text jsonb uuid
    nullable: bool = True


@dataclass(frozen=True)
class TableSpec:
    dataset: str
    columns: tuple[Column, ...]  # the data columns a source frame fills
    key: tuple[str, ...]
    # Extra bookkeeping columns (DDL only, filled by SQL).
    extra_ddl: tuple[str, ...] = ()
    # Room on each page for updated row versions, so updates stay HOT (no index insert).
    fillfactor: int = 100
    # Range-partitioned by day on this date column (see load/partitions.py); None: one table.
    partition_by: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def non_key(self) -> list[str]:
        return [c.name for c in self.columns if c.name not in self.key]


def _c(name: str, pgtype: str, nullable: bool = False) -> Column:
    return Column(name, pgtype, nullable)


HISTORY = TableSpec(
    "history",
    (
        _c("region_id", "int4"), _c("type_id", "int4"), _c("date", "date"),
        _c("average", "float8"), _c("highest", "float8"), _c("lowest", "float8"),
        _c("order_count", "int8"), _c("volume", "int8"),
        _c("http_last_modified", "timestamptz", True),
    ),
    ("region_id", "type_id", "date"),
    # Half of each page free: a re-pull that rewrites every row of a page (backfill corrections,
    # EVE Ref re-imports, the bench's update pass) puts every new version on the same page, so all
    # updates are HOT (no PK index insert, ~half the WAL; measured: update pass 1.8x less server CPU
    # than at 90). The row is fixed-width (~92 bytes with its line pointer): 50 is the largest
    # value with room for one new version of every row. Cost: the heap is ~2x larger; a table that
    # is rewritten regularly reaches ~2x anyway (dead versions), but at 90 also bloats its index.
    fillfactor=50,
    # A day is a partition of its own: its load writes new pages only, so it costs the same into
    # years of history as into an empty table (load/partitions.py; bench/backfill.py, scale_ratio).
    partition_by="date",
)

MOKAAM_PERIODS = ("yesterday", "week", "month", "quarter", "year")
MOKAAM_METRICS = (
    [f"{m}_{p}" for m in ("vol", "avg_price", "size", "high", "low", "order_count") for p in MOKAAM_PERIODS]
    + [f"vwap_{p}" for p in MOKAAM_PERIODS[1:]]
    + ["_52w_high", "_52w_low"]
)

AGGREGATES = TableSpec(
    "aggregates",
    (_c("region_id", "int4"), _c("type_id", "int4"), _c("last_data", "date"))
    + tuple(Column(m, "float8", True) for m in MOKAAM_METRICS),
    ("region_id", "type_id", "last_data"),
    fillfactor=90,
)

ORDERS = TableSpec(
    "orders",
    (
        _c("region_id", "int4"), _c("order_id", "int8"), _c("type_id", "int4"),
        _c("location_id", "int8"), _c("system_id", "int4", True),
        _c("volume_total", "int8"), _c("volume_remain", "int8"), _c("min_volume", "int8"),
        _c("price", "float8"), _c("is_buy_order", "bool"), _c("duration", "int4"),
        _c("issued", "timestamptz"), _c("range", "text"),
    ),
    ("region_id", "order_id"),
    extra_ddl=(
        "first_seen_at timestamptz NOT NULL DEFAULT now()",
        "changed_at timestamptz NOT NULL DEFAULT now()",
        "closed_at timestamptz",
    ),
    fillfactor=70,  # order books are updated on every snapshot
)

ORDERS_DAILY = TableSpec(
    "orders_daily",
    (
        _c("region_id", "int4"), _c("type_id", "int4"), _c("date", "date"),
        Column("best_buy", "float8", True), Column("best_sell", "float8", True),
        Column("buy_p5", "float8", True), Column("sell_p5", "float8", True),
        _c("buy_volume", "int8"), _c("sell_volume", "int8"),
        _c("buy_orders", "int4"), _c("sell_orders", "int4"),
        _c("snapshot_at", "timestamptz"),
    ),
    ("region_id", "type_id", "date"),
)

SPECS = {Dataset.HISTORY: HISTORY, Dataset.AGGREGATES: AGGREGATES, Dataset.ORDERS: ORDERS}


def spec_for(dataset: Dataset | str) -> TableSpec:
    return SPECS[Dataset(dataset)]


@dataclass(frozen=True)
class Target:
    """A validated ``schema.table`` and the names of its companions."""

    schema: str
    table: str

    def __post_init__(self) -> None:
        check_identifier(self.schema, "schema")
        check_identifier(self.table, "table", reserve=len(QUARANTINE_SUFFIX))

    def ident(self, table: str | None = None) -> sql.Identifier:
        return sql.Identifier(self.schema, table or self.table)

    @property
    def quarantine(self) -> sql.Identifier:
        return self.ident(self.table + QUARANTINE_SUFFIX)

    @property
    def daily(self) -> sql.Identifier:
        return self.ident(self.table + DAILY_SUFFIX)

    @property
    def ledger(self) -> sql.Identifier:
        return self.ident(LEDGER_TABLE)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


def _create_table(ident: sql.Identifier, spec: TableSpec) -> sql.Composed:
    parts = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name), sql.SQL(c.pgtype), sql.SQL("" if c.nullable else " NOT NULL")
        )
        for c in spec.columns
    ]
    parts += [sql.SQL(extra) for extra in spec.extra_ddl]
    parts.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, spec.key))))
    if spec.partition_by:  # storage parameters go on each partition
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) PARTITION BY RANGE ({})").format(
            ident, sql.SQL(", ").join(parts), sql.Identifier(spec.partition_by))
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) WITH (fillfactor = {})").format(
        ident, sql.SQL(", ").join(parts), sql.Literal(spec.fillfactor)
    )


def ledger_ddl(target: Target) -> sql.Composed:
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
        run_id uuid PRIMARY KEY, pipeline_name text NOT NULL, source text NOT NULL,
        target_table text NOT NULL, regions int4[] NOT NULL, types_count int4,
        started_at timestamptz NOT NULL, finished_at timestamptz,
        fetched int8 NOT NULL DEFAULT 0, inserted int8 NOT NULL DEFAULT 0,
        updated int8 NOT NULL DEFAULT 0, unchanged int8 NOT NULL DEFAULT 0,
        quarantined int8 NOT NULL DEFAULT 0, closed int8 NOT NULL DEFAULT 0,
        status text NOT NULL, error text, notes text)"""
    ).format(target.ledger)


def _add_ledger_notes(conn: Connection, target: Target) -> None:
    # Ledgers created before ``notes`` existed get it; the ALTER only runs when it is missing,
    # since it would queue behind (and block) runs writing the ledger.
    missing = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = %s AND column_name = 'notes')", (target.schema, LEDGER_TABLE)).fetchone()[0]
    if missing:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS notes text").format(target.ledger))


def quarantine_ddl(target: Target) -> sql.Composed:
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
        id bigserial PRIMARY KEY, run_id uuid NOT NULL, region_id int4,
        reason text NOT NULL, raw jsonb NOT NULL,
        quarantined_at timestamptz NOT NULL DEFAULT now())"""
    ).format(target.quarantine)


def ensure_tables(conn: Connection, target: Target, dataset: Dataset | str) -> None:
    """Create schema, table, quarantine table, ledger (and the orders' daily summary) if missing.

    Runs in its own transaction under an advisory lock so parallel runs (one per region) do not
    race on ``CREATE … IF NOT EXISTS``.
    """
    spec = spec_for(dataset)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('eveflow-ddl'))")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(target.schema)))
        conn.execute(_create_table(target.ident(), spec))
        conn.execute(quarantine_ddl(target))
        conn.execute(ledger_ddl(target))
        _add_ledger_notes(conn, target)
        if spec is ORDERS:
            conn.execute(_create_table(target.daily, ORDERS_DAILY))
            # Closing gone orders scans the open part of one region's book.
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (region_id, type_id) WHERE closed_at IS NULL").format(
                    sql.Identifier(target.table + "_open_idx"), target.ident()
                )
            )

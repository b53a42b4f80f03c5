"""Destination profiles → a libpq conninfo, and connecting with one-line, password-free errors.

Profiles: ``dsn`` (an explicit DSN/URI), ``env`` (libpq's ``PG*`` variables), ``crunchy``
(Crunchy Bridge: a DSN or ``PG*``, TLS enforced), ``snowflake`` (Snowflake Postgres from
``SNOWFLAKE_POSTGRES_HOST/USER/PASSWORD/DATABASE`` [+ ``_PORT``], TLS required) and ``local``
(the embedded server under ``settings.data_dir/pg``).
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from eveflow_etl.errors import ConfigError, DestinationError
from eveflow_etl.localpg import local_dsn
from eveflow_etl.plan import DATABASE_URL, PG_VARIABLES, SNOWFLAKE_VARIABLES
from eveflow_etl.settings import EtlSettings, load_settings

PROFILES = ("local", "dsn", "env", "crunchy", "snowflake")
_WEAK_SSL = {None, "", "disable", "allow", "prefer"}


def resolve_dsn(
    profile: str | None,
    dsn: str | None,
    settings: EtlSettings,
    env: Mapping[str, str] | None = None,
) -> str:
    """The conninfo string for ``profile``/``dsn`` (no DSN and no profile → the local server)."""
    env = os.environ if env is None else env
    profile = (profile or ("dsn" if dsn else "local")).lower()
    if profile not in PROFILES:
        raise ConfigError(f"unknown --profile {profile!r}: use one of {', '.join(PROFILES)}")
    if profile == "local":
        if dsn:
            raise ConfigError("--profile local starts the embedded server: drop --dsn or pick another profile")
        return local_dsn(settings.data_dir / "pg")
    if profile == "dsn":
        if not dsn:
            raise ConfigError("--profile dsn needs --dsn 'postgresql://user@host:5432/db'")
        return _parse(dsn)
    if profile == "env":
        return _parse(dsn or "")  # libpq fills in PGHOST, PGUSER, PGPASSWORD, …
    if profile == "crunchy":
        return _require_tls(_parse(dsn or env.get(DATABASE_URL, "")), "crunchy")
    # snowflake
    if dsn:
        return _require_tls(_parse(dsn), "snowflake")
    names = SNOWFLAKE_VARIABLES
    missing = [name for name in (names.host, names.user, names.password, names.database) if not env.get(name)]
    if missing:
        raise ConfigError(f"--profile snowflake needs {', '.join(missing)} in the environment")
    return make_conninfo(
        host=env[names.host], port=env.get(names.port, "5432"), user=env[names.user],
        password=env[names.password], dbname=env[names.database], sslmode="require",
    )


def _parse(dsn: str) -> str:
    try:
        return make_conninfo(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid --dsn: {one_line(exc, dsn)}") from None


def _require_tls(conninfo: str, profile: str) -> str:
    params = conninfo_to_dict(conninfo)
    if params.get("sslmode") in _WEAK_SSL:
        params["sslmode"] = "require"  # this provider only accepts TLS; never fall back to plain text
    return make_conninfo(**params)


def describe(conninfo: str, env: Mapping[str, str] | None = None) -> str:
    """``host:port/dbname`` for messages — never the password."""
    env = os.environ if env is None else env
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    host = params.get("host") or env.get(PG_VARIABLES.host) or "localhost"
    port = params.get("port") or env.get(PG_VARIABLES.port) or "5432"
    db = params.get("dbname") or env.get(PG_VARIABLES.database) or ""
    if str(host).startswith("/"):
        return f"socket {host}/{db}"
    return f"{host}:{port}/{db}"


def redact_text(text: str, conninfo: str) -> str:
    """``text`` with any password of ``conninfo`` (or the environment) blanked out."""
    secrets = []
    try:
        secrets.append(conninfo_to_dict(conninfo).get("password"))
    except psycopg.ProgrammingError:
        # libpq quotes an unparsable DSN (or its bad token) in the error: find the password by hand.
        uri = re.match(r"^\w+://[^:/?#@]*:(.*)@", conninfo)
        secrets += [uri.group(1)] if uri else []
        secrets += [v.strip("'") for v in re.findall(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", conninfo)]
    secrets += [os.environ.get(PG_VARIABLES.password), os.environ.get(SNOWFLAKE_VARIABLES.password)]
    for secret in filter(None, secrets):
        text = text.replace(str(secret), "***")
    return text


def connect(conninfo: str, *, autocommit: bool = False, connect_timeout: int = 10,
            settings: EtlSettings | None = None) -> psycopg.Connection:
    """Open a connection; failure → DestinationError with one line (where, why; no password).

    Every session gets the bounds of ``settings`` (default: the process's): ``statement_timeout``,
    ``lock_timeout``, ``idle_in_transaction_session_timeout`` and TCP keepalives (unless the
    conninfo sets its own), so a stuck statement, a lock queue or a forgotten transaction ends
    and a dead peer is noticed instead of waited on for hours.
    """
    if settings is None:
        settings = load_settings()
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        given = {}
    # The conninfo's own values win: keyword arguments would override what the user wrote there.
    defaults = {k: v for k, v in {"connect_timeout": connect_timeout, "keepalives": 1,
                                   "keepalives_idle": settings.pg_keepalives_idle_seconds,
                                   "keepalives_interval": 10, "keepalives_count": 3}.items() if k not in given}
    try:
        conn = psycopg.connect(conninfo, autocommit=True, **defaults)
    except psycopg.Error as exc:
        raise DestinationError(
            f"cannot connect to PostgreSQL at {describe(conninfo)}: {one_line(exc, conninfo)}"
        ) from None
    try:
        for name, seconds in (("statement_timeout", settings.pg_statement_timeout_seconds),
                              ("lock_timeout", settings.pg_lock_timeout_seconds),
                              ("idle_in_transaction_session_timeout", settings.pg_idle_in_transaction_timeout_seconds)):
            conn.execute(sql.SQL("SELECT set_config({}, {}, false)").format(
                sql.Literal(name), sql.Literal(f"{int(seconds * 1000)}ms")))
        conn.autocommit = autocommit
    except psycopg.Error as exc:
        conn.close()
        raise DestinationError(
            f"cannot set up the session at {describe(conninfo)}: {one_line(exc, conninfo)}"
        ) from None
    return conn


def one_line(exc: BaseException, conninfo: str = "") -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return redact_text(lines[0] if lines else type(exc).__name__, conninfo)[:300]

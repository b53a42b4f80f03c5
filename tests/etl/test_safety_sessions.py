"""Issue 13, item 2: every session the ETL opens is bounded (timeouts, keepalives), configurably."""

from __future__ import annotations

import pytest

from eveflow_etl.destinations import connect
from eveflow_etl.settings import EtlSettings

pytestmark = pytest.mark.postgres


def _show(conn, name):
    return conn.execute(f"SHOW {name}").fetchone()[0]


def test_every_connection_has_statement_lock_and_idle_timeouts_and_keepalives(pg_dsn):
    with connect(pg_dsn, settings=EtlSettings()) as conn:
        assert _show(conn, "statement_timeout") == "15min"
        assert _show(conn, "lock_timeout") == "1min"
        assert _show(conn, "idle_in_transaction_session_timeout") == "5min"
        assert conn.info.get_parameters().get("keepalives_idle") == "30"  # a dead peer noticed in ~1 min
        assert not conn.autocommit


def test_session_bounds_come_from_the_settings(pg_dsn):
    settings = EtlSettings(pg_statement_timeout_seconds=2.5, pg_lock_timeout_seconds=0,
                           pg_idle_in_transaction_timeout_seconds=30)
    with connect(pg_dsn, settings=settings, autocommit=True) as conn:
        assert (_show(conn, "statement_timeout"), _show(conn, "lock_timeout"),
                _show(conn, "idle_in_transaction_session_timeout")) == ("2500ms", "0", "30s")
        assert conn.autocommit


def test_a_statement_past_the_timeout_is_cancelled(pg_dsn):
    import psycopg

    with connect(pg_dsn, settings=EtlSettings(pg_statement_timeout_seconds=0.2), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")

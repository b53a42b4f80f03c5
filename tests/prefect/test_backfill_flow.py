"""The pipeline feature ``source: {kind: everef, backfill: {from: …}, verifyDays: N}``: the ETL
flow (in-process, against the session's real Prefect server) loads every missing day into a real
PostgreSQL, and the next run loads only the ``verifyDays`` days again."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from eveflow_etl.orchestration.summary import artifact_key
from tests.fixtures.prefect import prefect_api

pytestmark = pytest.mark.prefect

_PG_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE"}


def test_scheduled_backfill_loads_missing_days_then_reverifies_the_last_ones(
    prefect_server, esi_server_factory, pg_dsn, monkeypatch, tmp_path
):
    from prefect.logging.configuration import setup_logging
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from eveflow_etl.orchestration import flows

    server = esi_server_factory(history_days=30)
    for key, value in conninfo_to_dict(pg_dsn).items():
        if key in _PG_ENV and value:
            monkeypatch.setenv(_PG_ENV[key], str(value))
    monkeypatch.setenv("EVEFLOW_EVEREF_BASE_URL", server.everef_base_url)
    monkeypatch.setenv("EVEFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EVEFLOW_CONTACT", "tests@eveflow.invalid")
    setup_logging(incremental=False)
    first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=6)  # six days up to yesterday
    name = "backfill-flow"

    def run():
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url, PREFECT_HOME: str(tmp_path / "ph"),
                                 PREFECT_LOGGING_TO_API_ENABLED: False}):
            return flows.eve_market_etl(regions=[10000002, 10000043], source="everef", pipeline_name=name,
                                        retries=0, backfill_from=first.isoformat(), verify_days=2,
                                        return_state=True)

    state = run()
    assert state.is_completed(), state.message
    with psycopg.connect(pg_dsn) as conn:
        days = conn.execute("SELECT day FROM eve.everef_days WHERE verified ORDER BY day").fetchall()
        regions = conn.execute("SELECT DISTINCT region_id FROM eve.market_history ORDER BY 1").fetchall()
    assert [d for (d,) in days] == [first + dt.timedelta(days=n) for n in range(6)]
    assert regions == [(10000002,), (10000043,)]
    with prefect_api(prefect_server) as client:
        artifacts = client.post("artifacts/filter", json={"artifacts": {
            "flow_run_id": {"any_": [str(state.state_details.flow_run_id)]},
            "key": {"any_": [artifact_key(name)]}}}).json()
    total = {r["region"]: r for r in json.loads(artifacts[0]["data"])}["total"]
    assert total["inserted"] > 0 and total["status"] == "COMPLETED"

    with psycopg.connect(pg_dsn) as conn:
        first_done = conn.execute("SELECT max(finished_at) FROM eve.etl_runs").fetchone()[0]
    state = run()  # the next scheduled run: only the last two days are loaded again, writing nothing
    assert state.is_completed(), state.message
    with psycopg.connect(pg_dsn) as conn:
        again = conn.execute("SELECT d.day, r.inserted + r.updated FROM eve.everef_days d JOIN eve.etl_runs r "
                             "USING (run_id) WHERE r.started_at > %s ORDER BY d.day", (first_done,)).fetchall()
        runs = conn.execute("SELECT count(*) FROM eve.etl_runs WHERE status = 'succeeded'").fetchone()[0]
    assert again == [(first + dt.timedelta(days=4), 0), (first + dt.timedelta(days=5), 0)]
    assert runs == 6 + 2

"""The flows end to end: a pipeline YAML applied, run by a real process worker into real Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from eveflow_etl.orchestration.maintenance import prune_and_analyze, trim_cache
from eveflow_etl.orchestration.summary import artifact_key
from tests.fixtures.prefect import pipeline_document, prefect_api

pytestmark = pytest.mark.prefect

_PG_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE"}


def pg_env(dsn: str) -> dict[str, str]:
    """libpq variables for a DSN: what the ``env`` destination profile reads."""
    return {_PG_ENV[k]: str(v) for k, v in conninfo_to_dict(dsn).items() if k in _PG_ENV and v}


def worker_env(prefect_client_env, pg_dsn, esi_server, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in prefect_client_env.items() if not k.startswith("PG")}
    env.update(pg_env(pg_dsn))
    env.update({
        "EVEFLOW_ESI_BASE_URL": esi_server.esi_base_url,
        "EVEFLOW_DATA_DIR": str(tmp_path / "eveflow-data"),
        "EVEFLOW_ESI_BACKOFF_SECONDS": "0.01",
        "EVEFLOW_ESI_RATE_PER_SECOND": "100",
        "EVEFLOW_ESI_MAX_RETRIES": "2",
        "EVEFLOW_CONTACT": "tests@eveflow.invalid",
    })
    return env


def eveflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("eveflow")), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def wait_final(client, flow_run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"flow_runs/{flow_run_id}").json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not final: {run['state']}")


def test_applied_pipeline_runs_end_to_end_with_a_process_worker(
    prefect_server, prefect_client_env, prefect_worker, pg_dsn, esi_server, tmp_path
):
    name, pool = f"e2e-{uuid.uuid4().hex[:6]}", f"e2e-pool-{uuid.uuid4().hex[:6]}"
    types = list(esi_server.state.types[:2])
    document = pipeline_document(name, pool, source={"kind": "esi-history", "regions": [10000002, 10000043], "types": types})
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(document))
    env = worker_env(prefect_client_env, pg_dsn, esi_server, tmp_path)

    applied = eveflow(["apply", "-f", str(path)], env)
    assert applied.returncode == 0, applied.stderr
    assert f"created deployment eve-market-etl/{name}" in applied.stdout

    with prefect_api(prefect_server) as client:
        deployment = client.get(f"deployments/name/eve-market-etl/{name}").json()
        flow_run = client.post(f"deployments/{deployment['id']}/create_flow_run", json={}).json()
        worker = prefect_worker(pool, env=env, timeout=240)
        run = wait_final(client, flow_run["id"])
        assert run["state"]["type"] == "COMPLETED", (run["state"], worker.stdout[-3000:])
        artifacts = client.post("artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}, "key": {"any_": [artifact_key(name)]}}}).json()
    assert len(artifacts) == 1 and artifacts[0]["type"] == "table"
    rows = {r["region"]: r for r in json.loads(artifacts[0]["data"])}
    assert set(rows) == {"10000002", "10000043", "total"}
    assert rows["total"]["inserted"] > 0 and rows["total"]["status"] == "COMPLETED"

    with psycopg.connect(pg_dsn) as conn:
        loaded = conn.execute("SELECT region_id, count(*) FROM eve.market_history GROUP BY 1 ORDER BY 1").fetchall()
        ledger = conn.execute("SELECT pipeline_name, regions, status, inserted FROM eve.etl_runs ORDER BY regions").fetchall()
    assert [r[0] for r in loaded] == [10000002, 10000043] and all(r[1] > 0 for r in loaded)
    assert [(r[0], r[1], r[2]) for r in ledger] == [(name, [10000002], "succeeded"), (name, [10000043], "succeeded")]
    assert sum(r[3] for r in ledger) == rows["total"]["inserted"] == sum(r[1] for r in loaded)

    status = eveflow(["status", "-f", str(path)], env)
    assert status.returncode == 0, status.stderr
    # On failure, the whole output and every run of the deployment: pytest's diff of a long `in`
    # hides the middle, the lines that matter (CI failed here once, showing a last run without rows).
    with prefect_api(prefect_server) as client:
        runs = client.post("flow_runs/filter", json={"deployments": {"id": {"any_": [deployment["id"]]}}}).json()
    seen = status.stdout + "\n".join(f"{r['id']} {r.get('state_type')} {r.get('state_name')} start={r.get('start_time')} "
                                      f"expected={r.get('expected_start_time')} parent={r.get('parent_task_run_id')}" for r in runs)
    assert f"last run: {name} Completed" in status.stdout, seen
    assert f"{rows['total']['inserted']} rows loaded, 0 quarantined" in status.stdout, seen


def test_a_failed_region_does_not_stop_the_others(prefect_server, monkeypatch, tmp_path):
    """In-process run of the flow (same server): one region's task fails, the run ends Failed."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from eveflow_etl.orchestration import flows
    from eveflow_etl.etl_run import Counts, RunReport

    def fake_run_etl(source, regions, types, destination, **kwargs):
        if regions == [10000043]:
            raise RuntimeError("ESI answered 500 for Domain")
        report = RunReport("r", kwargs["pipeline_name"], str(source), "eve.market_history", "succeeded")
        report.totals = Counts(fetched=5, inserted=4, updated=0, unchanged=0, quarantined=1)
        return report

    # Prefect binds its console log handlers to sys.stderr when first configured; an earlier
    # in-process CLI test (capsys) may have left them on a closed stream: rebind them here.
    from prefect.logging.configuration import setup_logging

    setup_logging(incremental=False)
    monkeypatch.setattr("eveflow_etl.etl_run.run_etl", fake_run_etl)
    monkeypatch.setattr("eveflow_etl.destinations.resolve_dsn", lambda *a, **k: "dbname=unused")
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url, PREFECT_HOME: str(tmp_path),
                             PREFECT_LOGGING_TO_API_ENABLED: False}):
        state = flows.eve_market_etl(regions=[10000002, 10000043], pipeline_name="partial", retries=0,
                                     return_state=True)
    assert state.is_failed()
    assert "1 of 2 regions failed: 10000043 (RuntimeError: ESI answered 500 for Domain)" in state.message
    with prefect_api(prefect_server) as client:
        artifacts = client.post("artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [str(state.state_details.flow_run_id)]}}}).json()
    rows = {r["region"]: r for r in json.loads(artifacts[0]["data"])}
    assert rows["10000002"]["status"] == "COMPLETED" and rows["10000002"]["inserted"] == 4
    assert rows["10000043"]["status"] == "FAILED" and rows["total"]["quarantined"] == 1


def test_maintenance_prunes_old_rows_analyzes_and_trims_the_cache(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA eve")
        conn.execute("CREATE TABLE eve.market_history (x int)")
        conn.execute("CREATE TABLE eve.market_history_quarantine (quarantined_at timestamptz)")
        conn.execute("CREATE TABLE eve.etl_runs (started_at timestamptz, finished_at timestamptz, target_table text)")
        conn.execute("INSERT INTO eve.market_history_quarantine VALUES (now() - interval '40 days'), (now())")
        conn.execute("INSERT INTO eve.etl_runs VALUES (now() - interval '41 days', now() - interval '40 days', "
                     "'eve.market_history'), (now(), now(), 'eve.market_history'), "
                     "(now() - interval '90 days', NULL, 'eve.other')")
    result = prune_and_analyze(pg_dsn, "eve", "market_history", retention_days=30)
    assert result == {"quarantine_pruned": 1, "ledger_pruned": 1, "closed_orders_pruned": 0, "analyzed": 3}

    cache = tmp_path / "cache"
    (cache / "esi").mkdir(parents=True)
    old, new = cache / "esi" / "old.json", cache / "esi" / "new.json"
    old.write_text("{}")
    new.write_text("{}")
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    assert trim_cache(cache, max_age_days=7) == 1
    assert not old.exists() and new.exists()
    assert trim_cache(Path(tmp_path / "missing"), 7) == 0


def test_a_run_note_reaches_the_flow_runs_log(prefect_server, pg_dsn, esi_server, monkeypatch, tmp_path):
    """An EVE Ref day not yet in totals.json is loaded unverified: the Prefect run log says so
    (where a Prefect user looks), not only the ledger row."""
    import datetime as dt

    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from eveflow_etl.orchestration import flows

    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()  # the flow's day
    esi_server.admin.configure(everef_totals_unpublished=[yesterday])
    for key, value in {**pg_env(pg_dsn), "EVEFLOW_EVEREF_BASE_URL": esi_server.everef_base_url,
                       "EVEFLOW_DATA_DIR": str(tmp_path / "eveflow-data"),
                       "EVEFLOW_CONTACT": "tests@eveflow.invalid"}.items():
        monkeypatch.setenv(key, value)
    setup_logging(incremental=False)
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url, PREFECT_HOME: str(tmp_path / "home"),
                             PREFECT_LOGGING_TO_API_ENABLED: True}):
        state = flows.eve_market_etl(regions=[10000002], source="everef", table="everef_note",
                                     pipeline_name=f"note-{uuid.uuid4().hex[:6]}", retries=0, return_state=True)
        APILogWorker.drain_all()  # while the settings still point at this server
    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    with prefect_api(prefect_server) as client:
        task_runs = client.post("task_runs/filter", json={
            "flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
        deadline = time.monotonic() + 30
        while True:  # logs reach the API in batches, shortly after the run
            logs = client.post("logs/filter", json={"logs": {"task_run_id": {"any_": [t["id"] for t in task_runs]},
                                                              "level": {"ge_": 30}}}).json()
            if logs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert any("region 10000002: " in log["message"] and "unverified" in log["message"]
               and yesterday in log["message"] for log in logs), [log["message"] for log in logs]

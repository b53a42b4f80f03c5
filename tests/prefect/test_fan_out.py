"""Fan-out (one flow run per region of the same deployment) and the run's time budget, for real.

The fan-out test applies two pipelines with ``fanOut: true`` through the sync library and runs
them with a real, long-running process worker (not ``--run-once``: the parents wait for their
children, which the same worker must pick up). One pipeline loads every region; in the other,
the local ESI server fails one region for good.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from eveflow_etl.orchestration.summary import artifact_key
from eveflow_etl.orchestration.sync import sync_pipeline
from eveflow_etl.orchestration.types import PrefectConnection
from eveflow_etl.spec import parse_pipeline

from tests.fixtures.prefect import pipeline_document, prefect_api
from tests.prefect.test_flows import pg_env, wait_final, worker_env

pytestmark = pytest.mark.prefect


FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def apply(prefect_server, name: str, pool: str, regions: list[int], types: list[int], table: str) -> str:
    """Apply a fan-out pipeline (no schedules, no maintenance deployment); its deployment id."""
    document = pipeline_document(
        name, pool,
        source={"kind": "esi-history", "regions": regions, "types": types, "fanOut": True},
        destination={"profile": "env", "schema": "eve", "table": table},
        schedules=[], maintenance={"enabled": False},
    )
    result = asyncio.run(sync_pipeline(parse_pipeline(document), PrefectConnection(prefect_server.api_url)))
    return result.deployment_ids[name]


def start_worker(pool: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``prefect worker start`` that keeps polling (every second) until stopped."""
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    command = [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", pool,
               "--type", "process", "--limit", "4"]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def runs_of(client, deployment_id: str) -> list[dict]:
    return client.post("flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 50,
    }).json()


def artifact_rows(client, flow_run_id: str, pipeline: str) -> dict[str, dict]:
    found = client.post("artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": [artifact_key(pipeline)]}}}).json()
    assert len(found) == 1 and found[0]["type"] == "table", found
    return {row["region"]: row for row in json.loads(found[0]["data"])}


def test_fan_out_runs_one_flow_run_per_region_and_names_the_failed_one(
    prefect_server, prefect_client_env, pg_dsn, esi_server, tmp_path
):
    tag = uuid.uuid4().hex[:6]
    pool = f"fan-pool-{tag}"
    ok, bad = f"fan-ok-{tag}", f"fan-bad-{tag}"
    types = list(esi_server.state.types[:2])
    ok_regions, bad_regions, broken = [10000002, 10000043, 10000030], [10000032, 10000042], 10000042
    ok_id = apply(prefect_server, ok, pool, ok_regions, types, "market_history")
    bad_id = apply(prefect_server, bad, pool, bad_regions, types, "market_history_b")
    # Region 10000042 answers 500 to every request: its child fails for good (retries are 0).
    esi_server.admin.fault(region=broken, status=500, count=None)

    env = worker_env(prefect_client_env, pg_dsn, esi_server, tmp_path)
    log = tmp_path / "worker.log"
    worker = start_worker(pool, env, log)
    try:
        with prefect_api(prefect_server) as client:
            parents = {name: client.post(f"deployments/{dep}/create_flow_run", json={}).json()["id"]
                       for name, dep in ((ok, ok_id), (bad, bad_id))}
            finals = {name: wait_final(client, run_id, timeout=120) for name, run_id in parents.items()}
            children = {name: [r for r in runs_of(client, dep) if r["id"] != parents[name]]
                        for name, dep in ((ok, ok_id), (bad, bad_id))}
            parent_rows = {name: artifact_rows(client, run_id, name) for name, run_id in parents.items()}
            child_rows = {r["id"]: artifact_rows(client, r["id"], name)
                          for name in (ok, bad) for r in children[name] if r["state"]["type"] == "COMPLETED"}
    finally:
        stop_worker(worker)
    output = log.read_text()[-4000:]

    # One child flow run per region, of the same deployment, each with one region and fan_out off.
    for name, regions in ((ok, ok_regions), (bad, bad_regions)):
        assert sorted(r["parameters"]["regions"] for r in children[name]) == [[r] for r in sorted(regions)], output
        assert all(r["parameters"]["fan_out"] is False for r in children[name])
        assert all(r["state"]["type"] in FINAL for r in children[name]), [r["state"] for r in children[name]]
    by_region = {name: {r["parameters"]["regions"][0]: r for r in children[name]} for name in (ok, bad)}

    # All children and the parent Completed; the parent's artifact adds up the children's.
    assert finals[ok]["state"]["type"] == "COMPLETED", (finals[ok]["state"], output)
    assert {r: c["state"]["type"] for r, c in by_region[ok].items()} == dict.fromkeys(ok_regions, "COMPLETED")
    rows = parent_rows[ok]
    assert set(rows) == {*map(str, ok_regions), "total"}
    for region, child in by_region[ok].items():
        mine = child_rows[child["id"]][str(region)]
        assert rows[str(region)]["status"] == "COMPLETED" and rows[str(region)]["inserted"] > 0
        assert {k: rows[str(region)][k] for k in ("fetched", "inserted", "quarantined")} == \
               {k: mine[k] for k in ("fetched", "inserted", "quarantined")}
    assert rows["total"]["inserted"] == sum(rows[str(r)]["inserted"] for r in ok_regions)

    # The partial failure: the parent Failed naming the broken region; the other child Completed.
    state = finals[bad]["state"]
    assert state["type"] == "FAILED", (state, output)
    # The child's error itself (not its whole summary nested in the parent's message).
    assert f"1 of 2 regions failed: {broken} (EsiRequestError: " in state["message"], state["message"]
    assert state["message"].count("regions failed") == 1, state["message"]
    assert by_region[bad][broken]["state"]["type"] == "FAILED"
    assert by_region[bad][10000032]["state"]["type"] == "COMPLETED"
    assert parent_rows[bad][str(broken)]["status"] == "FAILED" and parent_rows[bad]["total"]["error"] == str(broken)
    assert parent_rows[bad]["10000032"]["inserted"] > 0

    with psycopg.connect(pg_dsn) as conn:
        loaded = dict(conn.execute("SELECT region_id, count(*) FROM eve.market_history GROUP BY 1").fetchall())
        loaded_b = dict(conn.execute("SELECT region_id, count(*) FROM eve.market_history_b GROUP BY 1").fetchall())
        ledger = conn.execute("SELECT pipeline_name, regions, status, inserted FROM eve.etl_runs").fetchall()
    assert loaded == {r: rows[str(r)]["inserted"] for r in ok_regions}
    assert set(loaded_b) == {10000032}
    ok_ledger = sorted((r[1], r[2], r[3]) for r in ledger if r[0] == ok)
    assert ok_ledger == sorted(([r], "succeeded", rows[str(r)]["inserted"]) for r in ok_regions)
    bad_ledger = {r[1][0]: r[2] for r in ledger if r[0] == bad}
    assert bad_ledger == {10000032: "succeeded", broken: "failed"}


def test_a_run_past_its_time_budget_ends_failed_naming_the_unfinished_region(
    prefect_server, pg_dsn, esi_server, monkeypatch, tmp_path
):
    """In-process run on the real server, ESI and Postgres: one region's ESI answers hang far past
    the run's budget; the run ends Failed at the budget, naming that region, without waiting for it."""
    from eveflow_etl.orchestration import flows
    from prefect.logging.configuration import setup_logging
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_LOGGING_TO_API_ENABLED,
        temporary_settings,
    )

    # The budget leaves the fast region room on a cold, loaded CI machine (4 s did not); the
    # engine's imports (pandas, pandera) are done before the clock starts, as in a warm worker.
    import eveflow_etl.etl_run  # noqa: F401

    fast, slow, budget, delay = 10000002, 10000043, 6, 12
    for key, value in {**pg_env(pg_dsn), "EVEFLOW_ESI_BASE_URL": esi_server.esi_base_url,
                       "EVEFLOW_DATA_DIR": str(tmp_path / "eveflow-data"), "EVEFLOW_ESI_BACKOFF_SECONDS": "0.01",
                       "EVEFLOW_ESI_RATE_PER_SECOND": "100", "EVEFLOW_ESI_MAX_RETRIES": "0",
                       "EVEFLOW_CONTACT": "tests@eveflow.invalid"}.items():
        monkeypatch.setenv(key, value)
    # Every ESI request for the slow region is answered only after 12 s (the client waits 30 s);
    # the region needs two rounds of requests, so it could not finish before ~24 s.
    esi_server.admin.fault(region=slow, delay=delay, count=None)
    setup_logging(incremental=False)
    threads_before = set(threading.enumerate())
    started = time.monotonic()
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url, PREFECT_HOME: str(tmp_path / "home"),
                             PREFECT_LOGGING_TO_API_ENABLED: False}):
        state = flows.eve_market_etl(regions=[fast, slow], types=list(esi_server.state.types[:2]),
                                     pipeline_name=f"budget-{uuid.uuid4().hex[:6]}", retries=2,
                                     retry_delay_seconds=0, timeout_seconds=budget, return_state=True)
        elapsed = time.monotonic() - started
        # The slow region's thread cannot be killed: it was left behind and ends once its
        # requests are answered. Wait for it here, not in the fixtures' teardown.
        for thread in set(threading.enumerate()) - threads_before:
            if not thread.daemon:
                thread.join(timeout=max(1.0, started + 4 * delay + 10 - time.monotonic()))
        left = [t.name for t in set(threading.enumerate()) - threads_before if not t.daemon and t.is_alive()]
    assert state.is_failed(), state
    assert f"1 of 2 regions failed: {slow} (" in state.message, state.message
    # At the budget, not when the slow region's requests come back.
    assert elapsed < 2 * delay - 4, f"the run took {elapsed:.0f} s for a {budget} s budget"
    assert not left, f"threads still running {4 * delay + 10} s after the start: {left}"
    with psycopg.connect(pg_dsn) as conn:
        loaded = dict(conn.execute("SELECT region_id, count(*) FROM eve.market_history GROUP BY 1").fetchall())
        ledger = conn.execute("SELECT regions, status FROM eve.etl_runs ORDER BY regions").fetchall()
    assert set(loaded) == {fast}
    # The abandoned region's engine still closed its ledger row once its requests came back.
    assert ledger == [([fast], "succeeded"), ([slow], "failed")]

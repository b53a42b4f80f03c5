"""The Prefect sync library against a real Prefect server (writes counted by a proxy)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from eveflow_etl.orchestration.pools import default_base_job_template
from eveflow_etl.orchestration.sync import delete_pipeline, read_status, sync_pipeline
from eveflow_etl.orchestration.types import PrefectAuthError, PrefectConnection, PrefectRejected, PrefectUnavailable
from eveflow_etl.spec import parse_pipeline
from tests.fixtures.prefect import pipeline_document, prefect_api

pytestmark = pytest.mark.prefect


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pipeline(name: str, pool: str, **spec):
    return parse_pipeline(pipeline_document(name, pool, **spec))


def api(server) -> httpx.Client:
    return prefect_api(server)


def scheduled_runs(client: httpx.Client, deployment_id: str) -> list[dict]:
    return client.post("flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        "sort": "EXPECTED_START_TIME_ASC", "limit": 200,
    }).json()


def wait_for_runs(client: httpx.Client, deployment_id: str, timeout: float = 30.0) -> list[dict]:
    """Scheduled runs once the scheduler has filled them in (count stable over two polls)."""
    deadline, last = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        runs = scheduled_runs(client, deployment_id)
        if runs and len(runs) == last:
            return runs
        last = len(runs)
        time.sleep(2.5)
    raise AssertionError(f"the scheduler did not settle for deployment {deployment_id}")


async def test_first_sync_creates_everything_and_second_sync_makes_zero_writes(prefect_server, prefect_write_counter):
    name, pool = unique("zero"), unique("pool")
    p = pipeline(name, pool)
    conn = PrefectConnection(prefect_write_counter.api_url)

    first = await sync_pipeline(p, conn)
    assert first.writes == prefect_write_counter.write_count > 0
    assert set(first.deployment_ids) == {name, f"{name}-maintenance"}
    assert {"daily", "hub-refresh"} <= set(first.schedule_ids)

    with api(prefect_server) as client:
        observed_pool = client.get(f"work_pools/{pool}").json()
        assert observed_pool["type"] == "process" and observed_pool["concurrency_limit"] == 4
        # the type's default template, not the empty one a raw POST stores
        assert observed_pool["base_job_template"] == default_base_job_template("process")
        queues = {q["name"]: q for q in client.post(f"work_pools/{pool}/queues/filter", json={}).json()}
        assert queues["default"]["priority"] == 1
        assert queues["high-memory"]["priority"] == 2 and queues["high-memory"]["concurrency_limit"] == 1
        deployment = client.get(f"deployments/{first.deployment_ids[name]}").json()
        assert deployment["entrypoint"] == "eveflow_etl.orchestration.flows.eve_market_etl"
        assert set(deployment["tags"]) == {"eveflow", f"eveflow.dev/pipeline:default.{name}"}
        assert deployment["parameters"]["regions"] == [10000002, 10000043]
        assert deployment["work_pool_name"] == pool and deployment["work_queue_name"] == "default"
        assert deployment["paused"] is False

    prefect_write_counter.reset()
    second = await sync_pipeline(p, conn)
    assert second.writes == 0 and prefect_write_counter.writes == [], prefect_write_counter.writes
    assert second.actions == []
    assert second.schedule_ids == first.schedule_ids and second.deployment_ids == first.deployment_ids

    status = await read_status(p, conn)
    assert status.writes == 0 and prefect_write_counter.writes == []
    assert status.deployment_ids == first.deployment_ids
    assert status.next_run is not None or True  # the scheduler may not have run yet


async def test_the_requests_a_new_pipeline_and_an_in_sync_resync_make(prefect_server, prefect_write_counter):
    """The load a pipeline puts on the user's Prefect server, pinned: a new pipeline is read in
    one query for its deployments and one per missing name, then created; nothing is read back.
    A resync that finds everything in sync reads the deployments in one query, the pool and its
    queues, and the last and next run; it writes nothing."""
    from collections import Counter

    name, pool = unique("cost"), unique("pool")
    p = pipeline(name, pool)
    conn = PrefectConnection(prefect_write_counter.api_url)
    await sync_pipeline(pipeline(unique("first"), unique("pool")), conn)  # the server has eveflow's flows

    prefect_write_counter.reset()
    created = await sync_pipeline(p, conn)
    # The proxy counts requests as they took effect: a busy server's 503, retried, is counted once.
    assert prefect_write_counter.routes() == Counter({
        "POST /deployments/filter": 1,  # the pipeline's deployments, by its tag: none yet
        "GET /deployments/name/{flow}/{name}": 2,  # a namesake (adopted, or another pipeline's)?
        "GET /work_pools/{name}": 1,
        "POST /work_pools/": 1,
        "POST /work_pools/{name}/queues/filter": 1,
        "POST /work_pools/{name}/queues": 1,  # Prefect made the pool's "default" queue itself
        "POST /flows/filter": 1,
        "POST /deployments/": 2,  # each with its schedules
    }), prefect_write_counter.routes()
    assert created.writes == 4 + prefect_write_counter.writes_told_to_retry  # SyncResult.writes counts attempts
    assert created.next_run is None and created.last_run is None

    prefect_write_counter.reset()
    again = await sync_pipeline(p, conn)
    assert prefect_write_counter.routes() == Counter({
        "POST /deployments/filter": 1,
        "GET /work_pools/{name}": 1,
        "POST /work_pools/{name}/queues/filter": 1,
        "POST /flow_runs/filter": 2,  # the last run and the next one
    }), prefect_write_counter.routes()
    assert again.writes == 0 and again.deployment_ids == created.deployment_ids


async def test_cron_change_patches_one_schedule_in_place_without_duplicate_runs(prefect_server, prefect_write_counter):
    name, pool = unique("cron"), unique("pool")
    conn = PrefectConnection(prefect_write_counter.api_url)
    before = await sync_pipeline(pipeline(name, pool), conn)
    deployment_id = before.deployment_ids[name]
    with api(prefect_server) as client:
        runs_before = wait_for_runs(client, deployment_id)
    changed = pipeline_document(name, pool)
    changed["spec"]["schedules"][0]["cron"] = "45 13 * * *"

    prefect_write_counter.reset()
    after = await sync_pipeline(parse_pipeline(changed), conn)
    assert prefect_write_counter.writes == [
        f"PATCH /deployments/{deployment_id}/schedules/{before.schedule_ids['daily']}"
    ]
    assert after.writes == 1 + prefect_write_counter.writes_told_to_retry  # SyncResult.writes counts attempts
    assert after.schedule_ids == before.schedule_ids  # same ids: updated in place

    with api(prefect_server) as client:
        deployment = client.get(f"deployments/{deployment_id}").json()
        crons = {s["slug"]: s["schedule"]["cron"] for s in deployment["schedules"]}
        assert crons == {"daily": "45 13 * * *", "hub-refresh": "40 */6 * * *"}
        time.sleep(3)
        runs_after = wait_for_runs(client, deployment_id)
    keys = [(r["expected_start_time"], str(sorted(r["parameters"].items()))) for r in runs_after]
    assert len(keys) == len(set(keys)), "duplicate scheduled runs"
    times = {r["expected_start_time"][11:16] for r in runs_after if "10000043" in str(r["parameters"])}
    assert "13:45" in times and "12:15" not in times
    # hub-refresh runs: the same number as before (none lost, none doubled)
    def hub(runs):
        return len([r for r in runs if r["parameters"].get("regions") == [10000002]])
    assert hub(runs_after) == hub(runs_before)

    prefect_write_counter.reset()
    again = await sync_pipeline(parse_pipeline(changed), conn)
    assert again.writes == 0 and prefect_write_counter.writes == []


async def test_drift_is_repaired(prefect_server, prefect_write_counter):
    name, pool = unique("drift"), unique("pool")
    p = pipeline(name, pool)
    conn = PrefectConnection(prefect_write_counter.api_url)
    first = await sync_pipeline(p, conn)
    with api(prefect_server) as client:
        # hand-edit a schedule, delete the maintenance deployment, add a stray schedule
        deployment_id = first.deployment_ids[name]
        assert client.patch(f"deployments/{deployment_id}/schedules/{first.schedule_ids['daily']}",
                            json={"schedule": {"cron": "0 0 * * *", "timezone": "UTC"}}).status_code == 204
        assert client.post(f"deployments/{deployment_id}/schedules",
                           json=[{"slug": "hand-made", "schedule": {"cron": "1 1 * * *"}}]).status_code == 201
        assert client.delete(f"deployments/{first.deployment_ids[name + '-maintenance']}").status_code == 204

    second = await sync_pipeline(p, conn)
    assert any("updated schedule" in a and "daily" in a for a in second.actions), second.actions
    assert any("deleted schedule" in a and "hand-made" in a for a in second.actions), second.actions
    assert any("created deployment" in a and "maintenance" in a for a in second.actions), second.actions
    assert second.schedule_ids["daily"] == first.schedule_ids["daily"]
    with api(prefect_server) as client:
        deployment = client.get(f"deployments/{deployment_id}").json()
        assert {s["slug"]: s["schedule"]["cron"] for s in deployment["schedules"]} == {
            "daily": "15 12 * * *", "hub-refresh": "40 */6 * * *"}
        # the pool deleted by hand: recreated, and the deployments pointed at it again
        assert client.delete(f"work_pools/{pool}").status_code == 204
    third = await sync_pipeline(p, conn)
    assert any(a.startswith("created work pool") for a in third.actions), third.actions
    with api(prefect_server) as client:
        assert client.get(f"deployments/{deployment_id}").json()["work_pool_name"] == pool
    prefect_write_counter.reset()
    assert (await sync_pipeline(p, conn)).writes == 0 and prefect_write_counter.writes == []


async def test_suspend_pauses_and_resumes(prefect_server, prefect_write_counter):
    name, pool = unique("susp"), unique("pool")
    conn = PrefectConnection(prefect_write_counter.api_url)
    await sync_pipeline(pipeline(name, pool), conn)
    prefect_write_counter.reset()
    paused = await sync_pipeline(pipeline(name, pool, suspend=True), conn)
    assert paused.paused and len(prefect_write_counter.writes) == 2  # one PATCH per deployment
    assert all(w.startswith("PATCH /deployments/") for w in prefect_write_counter.writes)
    with api(prefect_server) as client:
        for deployment_id in paused.deployment_ids.values():
            assert client.get(f"deployments/{deployment_id}").json()["paused"] is True
    assert (await read_status(pipeline(name, pool, suspend=True), conn)).paused is True
    resumed = await sync_pipeline(pipeline(name, pool), conn)
    assert any(a.startswith("resumed deployment") for a in resumed.actions)
    with api(prefect_server) as client:
        assert client.get(f"deployments/{resumed.deployment_ids[name]}").json()["paused"] is False


async def test_delete_policies_and_a_shared_pool(prefect_server, prefect_write_counter):
    pool = unique("shared")
    a, b = pipeline(unique("a"), pool), pipeline(unique("b"), pool)
    conn = PrefectConnection(prefect_write_counter.api_url)
    await sync_pipeline(a, conn)
    second = await sync_pipeline(b, conn)
    assert not any("work pool" in x and "created" in x for x in second.actions)  # adopted, not recreated

    orphan = parse_pipeline({**pipeline_document(a.name, pool), "spec": {
        **pipeline_document(a.name, pool)["spec"], "deletionPolicy": "Orphan"}})
    prefect_write_counter.reset()
    kept = await delete_pipeline(orphan, conn)
    assert prefect_write_counter.writes == [] and kept.deleted_deployments == [] and not kept.deleted_work_pool

    first_gone = await delete_pipeline(a, conn)
    assert sorted(first_gone.deleted_deployments) == sorted([a.name, f"{a.name}-maintenance"])
    assert not first_gone.deleted_work_pool and "still used by 2" in first_gone.kept_work_pool_reason
    with api(prefect_server) as client:
        assert client.get(f"work_pools/{pool}").status_code == 200
        assert client.get(f"deployments/name/eve-market-etl/{a.name}").status_code == 404
        assert client.get(f"deployments/name/eve-market-etl/{b.name}").status_code == 200
    last = await delete_pipeline(b, conn)
    assert last.deleted_work_pool
    with api(prefect_server) as client:
        assert client.get(f"work_pools/{pool}").status_code == 404


async def test_pipelines_sharing_a_new_pool_sync_at_the_same_time(prefect_server, prefect_write_counter):
    """Both see no pool, both POST it; the one that gets 409 adopts the other's (no error)."""
    import asyncio

    pool = unique("race")
    pipelines = [pipeline(unique("r"), pool) for _ in range(3)]
    conn = PrefectConnection(prefect_write_counter.api_url)
    results = await asyncio.gather(*(sync_pipeline(p, conn) for p in pipelines))
    assert len({r.work_pool_id for r in results}) == 1
    with api(prefect_server) as client:
        queues = client.post(f"work_pools/{pool}/queues/filter", json={}).json()
        assert sorted(q["name"] for q in queues) == ["default", "high-memory"]
    again = await asyncio.gather(*(sync_pipeline(p, conn) for p in pipelines))
    assert [r.writes for r in again] == [0, 0, 0]


async def test_adopted_pool_is_kept_and_a_pool_of_another_type_is_rejected(prefect_server):
    conn = PrefectConnection(prefect_server.api_url)
    pool = unique("theirs")
    with api(prefect_server) as client:
        assert client.post("work_pools/", json={
            "name": pool, "type": "process", "base_job_template": default_base_job_template("process"),
            "concurrency_limit": 4,  # what the spec says: a shared pool is used as it is, never changed
        }).status_code == 201
    p = pipeline(unique("adopt"), pool)
    result = await sync_pipeline(p, conn)
    assert not any(a.startswith("created work pool") for a in result.actions)
    deleted = await delete_pipeline(p, conn)
    assert not deleted.deleted_work_pool and "not created by eveflow" in deleted.kept_work_pool_reason

    wrong_type = parse_pipeline(pipeline_document(unique("k8s"), pool, pool_type="kubernetes"))
    with pytest.raises(PrefectRejected) as error:
        await sync_pipeline(wrong_type, conn)
    assert "already exists with type 'process'" in str(error.value) and "spec.workPool" in str(error.value)


async def test_cloud_stand_in_with_bearer_key(prefect_cloud):
    p = pipeline(unique("cloud"), unique("pool"), prefect={"mode": "cloud"})
    good = PrefectConnection(prefect_cloud.api_url, api_key=prefect_cloud.api_key)
    first = await sync_pipeline(p, good)
    assert first.writes > 0 and first.deployment_ids
    prefect_cloud.counter.reset()
    assert (await sync_pipeline(p, good)).writes == 0 and prefect_cloud.counter.writes == []

    bad = PrefectConnection(prefect_cloud.api_url, api_key="pnu_wrong")
    with pytest.raises(PrefectAuthError) as error:
        await sync_pipeline(p, bad)
    message = str(error.value)
    assert message.startswith(f"Prefect refused the API key for {prefect_cloud.api_url}")
    assert "pnu_wrong" not in message and "\n" not in message


async def test_basic_auth_server(prefect_auth_server):
    p = pipeline(unique("basic"), unique("pool"))
    good = PrefectConnection(prefect_auth_server.api_url, auth_string=prefect_auth_server.auth_string)
    first = await sync_pipeline(p, good)
    assert first.deployment_ids and (await sync_pipeline(p, good)).writes == 0
    for conn in (PrefectConnection(prefect_auth_server.api_url),
                 PrefectConnection(prefect_auth_server.api_url, auth_string="eveflow:wrong")):
        with pytest.raises(PrefectAuthError) as error:
            await read_status(p, conn)
        assert "wrong" not in str(error.value) and prefect_auth_server.api_url in str(error.value)


async def test_server_going_away_mid_sync_is_finished_by_the_next_sync(prefect_server, prefect_write_counter):
    name, pool = unique("flaky"), unique("pool")
    p = pipeline(name, pool)
    conn = PrefectConnection(prefect_write_counter.api_url)
    prefect_write_counter.fail_after_writes(3)
    with pytest.raises(PrefectUnavailable) as error:
        await sync_pipeline(p, conn)
    assert prefect_write_counter.api_url in str(error.value)
    prefect_write_counter.heal()
    finished = await sync_pipeline(p, conn)
    assert set(finished.deployment_ids) == {name, f"{name}-maintenance"}
    with api(prefect_server) as client:
        tagged = client.post("deployments/filter", json={
            "deployments": {"tags": {"all_": [f"eveflow.dev/pipeline:default.{name}"]}}}).json()
        assert sorted(d["name"] for d in tagged) == sorted([name, f"{name}-maintenance"])
        slugs = [s["slug"] for s in client.get(f"deployments/{finished.deployment_ids[name]}").json()["schedules"]]
        assert sorted(slugs) == ["daily", "hub-refresh"]
    prefect_write_counter.reset()
    assert (await sync_pipeline(p, conn)).writes == 0


async def test_every_slugless_schedule_is_removed_in_one_sync(prefect_server, prefect_write_counter):
    name, pool = unique("noslug"), unique("pool")
    p = pipeline(name, pool)
    conn = PrefectConnection(prefect_write_counter.api_url)
    first = await sync_pipeline(p, conn)
    deployment_id = first.deployment_ids[name]
    with api(prefect_server) as client:
        # two schedules added by hand without a slug (e.g. in the Prefect UI)
        assert client.post(f"deployments/{deployment_id}/schedules", json=[
            {"schedule": {"cron": "1 1 * * *"}}, {"schedule": {"cron": "2 2 * * *"}}]).status_code == 201

    second = await sync_pipeline(p, conn)
    assert len([a for a in second.actions if a.startswith("deleted schedule")]) == 2, second.actions
    with api(prefect_server) as client:
        slugs = sorted(s["slug"] for s in client.get(f"deployments/{deployment_id}").json()["schedules"])
        assert slugs == ["daily", "hub-refresh"]
    prefect_write_counter.reset()
    assert (await sync_pipeline(p, conn)).writes == 0 and prefect_write_counter.writes == []

"""Issue 12, item 4, as the author of a pipeline in another namespace who names a work pool
another team's pipeline created: the pool is shared, never changed -- its limit, its queues'
limits, its docker env reach every flow run of the pool. Against a real Prefect server."""

from __future__ import annotations

import uuid

import pytest

from eveflow_etl.orchestration.sync import delete_pipeline, sync_pipeline
from eveflow_etl.orchestration.types import PrefectConnection, PrefectRejected
from eveflow_etl.spec import parse_pipeline
from tests.fixtures.prefect import pipeline_document, prefect_api

pytestmark = pytest.mark.prefect


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def test_a_pipeline_sharing_another_teams_pool_cannot_stop_its_runs(prefect_server, prefect_write_counter):
    pool = unique("team-a-pool")
    conn = PrefectConnection(prefect_write_counter.api_url)
    team_a = parse_pipeline(pipeline_document(unique("a"), pool))
    await sync_pipeline(team_a, conn, namespace="team-a")

    # A limit of 0 on the pool, or on its queue, would hold every one of team-a's flow runs.
    attacks = [pipeline_document(unique("b"), pool), pipeline_document(unique("b"), pool)]
    attacks[0]["spec"]["workPool"]["concurrencyLimit"] = 0
    attacks[1]["spec"]["workPool"]["queues"] = [{"name": "default", "priority": 1, "concurrencyLimit": 0}]
    for document, match in zip(attacks, ("was not created by this pipeline", "queue .*default has concurrencyLimit")):
        prefect_write_counter.reset()
        with pytest.raises(PrefectRejected, match=match):
            await sync_pipeline(parse_pipeline(document), conn, namespace="team-b")
        assert not [w for w in prefect_write_counter.writes if "/work_pools/" in w], prefect_write_counter.writes
    with prefect_api(prefect_server) as client:
        assert client.get(f"work_pools/{pool}").json()["concurrency_limit"] == 4
        queues = {q["name"]: q for q in client.post(f"work_pools/{pool}/queues/filter", json={}).json()}
        assert queues["default"]["concurrency_limit"] is None
    # Agreeing with the pool, team-b shares it.
    agreeing = parse_pipeline(pipeline_document(unique("b"), pool))
    assert (await sync_pipeline(agreeing, conn, namespace="team-b")).deployment_ids
    await delete_pipeline(agreeing, conn, namespace="team-b")
    await delete_pipeline(team_a, conn, namespace="team-a")

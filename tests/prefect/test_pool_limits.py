"""Removing ``workPool.concurrencyLimit`` from the spec, against a real Prefect server: the
pipeline that created the pool clears the limit; a pool shared with it or adopted keeps the limit
someone else set. Either way the next apply makes no write."""

from __future__ import annotations

import uuid

import pytest

from eveflow_etl.orchestration.pools import default_base_job_template
from eveflow_etl.orchestration.sync import delete_pipeline, sync_pipeline
from eveflow_etl.orchestration.types import PrefectConnection, PrefectRejected
from eveflow_etl.spec import parse_pipeline
from tests.fixtures.prefect import pipeline_document, prefect_api

pytestmark = pytest.mark.prefect


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def with_limit(name: str, pool: str, limit: int | None):
    document = pipeline_document(name, pool)
    if limit is None:
        del document["spec"]["workPool"]["concurrencyLimit"]
    else:
        document["spec"]["workPool"]["concurrencyLimit"] = limit
    return parse_pipeline(document)


def pool_limit(server, pool: str) -> int | None:
    with prefect_api(server) as client:
        return client.get(f"work_pools/{pool}").json()["concurrency_limit"]


async def test_the_creator_removing_its_limit_clears_it(prefect_server, prefect_write_counter):
    name, pool = unique("lim"), unique("pool")
    conn = PrefectConnection(prefect_write_counter.api_url)
    await sync_pipeline(with_limit(name, pool, 5), conn)
    assert pool_limit(prefect_server, pool) == 5

    prefect_write_counter.reset()
    removed = await sync_pipeline(with_limit(name, pool, None), conn)
    assert prefect_write_counter.writes == [f"PATCH /work_pools/{pool}"]
    assert f"updated work pool {pool} (concurrency_limit)" in removed.actions
    assert pool_limit(prefect_server, pool) is None

    prefect_write_counter.reset()
    again = await sync_pipeline(with_limit(name, pool, None), conn)
    assert again.writes == 0 and prefect_write_counter.writes == []
    await delete_pipeline(with_limit(name, pool, None), conn)


async def test_a_pipeline_sharing_the_pool_leaves_the_creators_limit(prefect_server, prefect_write_counter):
    creator, pool = unique("own"), unique("pool")
    conn = PrefectConnection(prefect_write_counter.api_url)
    await sync_pipeline(with_limit(creator, pool, 5), conn)
    # A name that starts with the creator's did not create the pool.
    sharing = with_limit(f"{creator}-2", pool, None)
    prefect_write_counter.reset()
    first = await sync_pipeline(sharing, conn)
    assert f"PATCH /work_pools/{pool}" not in prefect_write_counter.writes, first.actions
    assert pool_limit(prefect_server, pool) == 5
    assert (await sync_pipeline(sharing, conn)).writes == 0
    # Nor did the creator's namesake in another namespace: it is refused (its deployments would
    # take over the creator's) before it writes anything, the pool's limit included.
    prefect_write_counter.reset()
    with pytest.raises(PrefectRejected, match="belongs to pipeline default"):
        await sync_pipeline(with_limit(creator, pool, None), conn, namespace="other")
    assert prefect_write_counter.writes == [] and pool_limit(prefect_server, pool) == 5
    await delete_pipeline(sharing, conn)
    await delete_pipeline(with_limit(creator, pool, 5), conn)


async def test_an_adopted_pools_limit_is_left_alone(prefect_server, prefect_write_counter):
    pool = unique("theirs")
    with prefect_api(prefect_server) as client:
        assert client.post("work_pools/", json={
            "name": pool, "type": "process", "concurrency_limit": 3,
            "base_job_template": default_base_job_template("process"),
        }).status_code == 201
    p = with_limit(unique("adopt"), pool, None)
    conn = PrefectConnection(prefect_write_counter.api_url)
    await sync_pipeline(p, conn)
    assert pool_limit(prefect_server, pool) == 3
    prefect_write_counter.reset()
    assert (await sync_pipeline(p, conn)).writes == 0 and prefect_write_counter.writes == []
    await delete_pipeline(p, conn)

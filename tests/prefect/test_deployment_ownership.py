"""Two pipelines with the same name in different namespaces, one Prefect server (real).

Deployments are named after the pipeline, so the second would take over the first's deployment
(tags, schedules, parameters) and the two would rewrite it on every pass. The second is refused
instead, with nothing of the first's changed, and deleting it removes nothing of the first's.
"""

from __future__ import annotations

import uuid

import pytest
from eveflow_etl.orchestration.sync import delete_pipeline, sync_pipeline
from eveflow_etl.orchestration.types import PrefectConnection, PrefectRejected
from eveflow_etl.spec import parse_pipeline

from tests.fixtures.prefect import pipeline_document, prefect_api

pytestmark = pytest.mark.prefect


async def test_a_namesake_from_another_namespace_is_refused_and_changes_nothing(prefect_server, prefect_write_counter):
    name, pool = f"twin-{uuid.uuid4().hex[:6]}", f"twin-pool-{uuid.uuid4().hex[:6]}"
    conn = PrefectConnection(prefect_write_counter.api_url)
    ours = parse_pipeline(pipeline_document(name, pool))
    await sync_pipeline(ours, conn, namespace="team-a")
    with prefect_api(prefect_server) as client:
        before = client.get(f"deployments/name/eve-market-etl/{name}").json()

    namesake = parse_pipeline(pipeline_document(name, pool, schedules=[
        {"slug": "daily", "cron": "0 3 * * *", "timezone": "UTC"}]))
    prefect_write_counter.reset()
    with pytest.raises(PrefectRejected) as refused:
        await sync_pipeline(namesake, conn, namespace="team-b")
    message = str(refused.value)
    assert f"eve-market-etl/{name}" in message and f"team-a.{name}" in message and "metadata.name" in message
    assert not [w for w in prefect_write_counter.writes if "deployments" in str(w)], prefect_write_counter.writes

    with prefect_api(prefect_server) as client:
        after = client.get(f"deployments/name/eve-market-etl/{name}").json()
    assert after["tags"] == before["tags"] and after["schedules"] == before["schedules"]
    prefect_write_counter.reset()
    await sync_pipeline(ours, conn, namespace="team-a")
    assert prefect_write_counter.write_count == 0

    gone = await delete_pipeline(namesake, conn, namespace="team-b")
    assert gone.deleted_deployments == []
    with prefect_api(prefect_server) as client:
        assert client.get(f"deployments/name/eve-market-etl/{name}").status_code == 200

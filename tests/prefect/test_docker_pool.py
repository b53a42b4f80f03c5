"""Docker work pools against a real Prefect server, and the flow-run container the docker worker
would start, built with prefect-docker's and docker-py's own code (no Docker engine needed)."""

from __future__ import annotations

import copy
import json
import uuid

import pytest
from docker.models.containers import _create_container_args
from docker.types import ContainerConfig
from prefect.client.orchestration import PrefectClient
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

from eveflow_etl.orchestration.pools import DOCKER_DESTINATION_VARIABLES
from eveflow_etl.orchestration.sync import delete_pipeline, sync_pipeline
from eveflow_etl.orchestration.types import PrefectConnection, PrefectRejected
from eveflow_etl.spec import parse_pipeline
from tests.fixtures.prefect import pipeline_document, prefect_api

pytestmark = pytest.mark.prefect

IMAGE = "registry.example/eveflow:9.9"
DB_PASSWORD = "docker-pool-test-pw-4711"  # must never reach Prefect
DOCKER_API_VERSION = "1.45"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def docker_pipeline(name: str, pool: str, *, image: str | None = IMAGE, destination: dict | None = None,
                    **pool_fields):
    document = pipeline_document(name, pool, pool_type="docker")
    document["spec"]["workPool"].update(pool_fields)
    if image:
        document["spec"]["worker"] = {"image": image}
    if destination:
        document["spec"]["destination"] = destination
    return parse_pipeline(document)


def expected_template(**defaults) -> dict:
    """prefect-docker's own default template, with eveflow's variable defaults."""
    template = copy.deepcopy(DockerWorker.get_default_base_job_template())
    references = {name: "{{ $" + name + " }}" for name in DOCKER_DESTINATION_VARIABLES}
    defaults["env"] = {**references, **defaults.get("env", {})}
    defaults["container_create_kwargs"] = {"entrypoint": ["/usr/bin/env"]}
    for key, value in defaults.items():
        template["variables"]["properties"][key]["default"] = value
    return template


async def test_docker_pipeline_is_applied_with_the_docker_template_and_reapplied_without_writes(
        prefect_server, prefect_write_counter, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", DB_PASSWORD)  # as on a machine with the credentials set
    name, pool = unique("dock"), unique("dpool")
    p = docker_pipeline(name, pool, jobVariables={"mem_limit": "2g"})
    conn = PrefectConnection(prefect_write_counter.api_url)

    first = await sync_pipeline(p, conn)
    assert f"created work pool {pool} (docker)" in first.actions
    with prefect_api(prefect_server) as client:
        observed_pool = client.get(f"work_pools/{pool}").json()
        assert observed_pool["type"] == "docker"
        assert observed_pool["base_job_template"] == expected_template()  # mem_limit: on the deployments
        for deployment_id in first.deployment_ids.values():
            deployment = client.get(f"deployments/{deployment_id}").json()
            assert deployment["job_variables"] == {"image": IMAGE, "mem_limit": "2g"}
            assert DB_PASSWORD not in json.dumps(deployment)
    assert DB_PASSWORD not in json.dumps(observed_pool)

    prefect_write_counter.reset()
    second = await sync_pipeline(p, conn)
    assert second.writes == 0 and prefect_write_counter.writes == [], prefect_write_counter.writes

    # Another pipeline sharing the pool (another destination profile) agrees on its template.
    other = docker_pipeline(unique("dock2"), pool, jobVariables={"mem_limit": "2g"},
                            destination={"profile": "snowflake", "schema": "eve"})
    await sync_pipeline(other, conn)
    prefect_write_counter.reset()
    assert (await sync_pipeline(p, conn)).writes == 0 and (await sync_pipeline(other, conn)).writes == 0
    await delete_pipeline(other, conn)
    await delete_pipeline(p, conn)


async def test_flow_run_becomes_a_container_with_the_image_and_the_workers_credentials(prefect_server, monkeypatch):
    """What the docker worker does for a flow run of the deployment, up to the create-container
    request it would send: job configuration from the pool's template and the deployment's job
    variables, references resolved from the worker's environment."""
    name, pool = unique("run"), unique("dpool")
    p = docker_pipeline(name, pool)
    result = await sync_pipeline(p, PrefectConnection(prefect_server.api_url))

    # The docker worker's environment (compose's env_file), not the applier's.
    for variable in DOCKER_DESTINATION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PGHOST", "db.internal")
    monkeypatch.setenv("PGUSER", "etl")
    monkeypatch.setenv("PGPASSWORD", DB_PASSWORD)
    # A worker on a compose network reaches the server by name: no host-gateway lookup needed.
    worker_api_url = "http://prefect-server:4200/api"
    async with PrefectClient(prefect_server.api_url) as client:
        flow_run = await client.create_flow_run_from_deployment(result.deployment_ids[name])
        work_pool = await client.read_work_pool(pool)
        with temporary_settings({PREFECT_API_URL: worker_api_url}):
            configuration = await DockerWorkerJobConfiguration.resolve_for_flow_run(
                flow_run, client=client, work_pool=work_pool, worker_name="docker-worker-test")
        await client.delete_flow_run(flow_run.id)

    assert configuration.image == IMAGE
    env = configuration.env
    assert (env["PGHOST"], env["PGUSER"], env["PGPASSWORD"]) == ("db.internal", "etl", DB_PASSWORD)
    assert env["PGDATABASE"] == "" and env["SNOWFLAKE_POSTGRES_HOST"] == ""  # unset → empty: libpq's default
    assert "PGSSLMODE" not in env  # an empty sslmode would be an error
    assert not any("{{" in str(value) for value in env.values()), env
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id) and env["PREFECT_API_URL"] == worker_api_url

    settings = DockerWorker(work_pool_name=pool)._build_container_settings(None, configuration)
    create = _create_container_args({**settings, "version": DOCKER_API_VERSION})
    container_name = create.pop("name")
    body = ContainerConfig(DOCKER_API_VERSION, **create)
    assert body["Image"] == IMAGE and container_name
    assert f"PGPASSWORD={DB_PASSWORD}" in body["Env"] and "PGHOST=db.internal" in body["Env"]
    assert body["Labels"]["io.prefect.flow-run-id"] == str(flow_run.id)
    # The image's ENTRYPOINT is `eveflow`: without the override this would be `eveflow prefect …`.
    assert body["Entrypoint"] == ["/usr/bin/env"] and body["Cmd"] == ["prefect", "flow-run", "execute"]
    await delete_pipeline(p, PrefectConnection(prefect_server.api_url))


async def test_a_docker_pool_made_by_hand_is_not_rewritten(prefect_server, prefect_write_counter):
    # Issue 12: its template is someone else's; changing its entrypoint would change their runs.
    pool = unique("theirs")
    theirs = DockerWorker.get_default_base_job_template()
    with prefect_api(prefect_server) as client:
        assert client.post("work_pools/", json={"name": pool, "type": "docker", "base_job_template": theirs}).status_code == 201
    p = docker_pipeline(unique("adopt"), pool)
    prefect_write_counter.reset()
    with pytest.raises(PrefectRejected, match=rf"work pool '{pool}' was not created by this pipeline.*job template"):
        await sync_pipeline(p, PrefectConnection(prefect_write_counter.api_url))
    assert prefect_write_counter.writes == []
    with prefect_api(prefect_server) as client:
        assert client.get(f"work_pools/{pool}").json()["base_job_template"] == theirs


async def test_docker_pool_without_an_image_is_refused_before_any_write(prefect_server, prefect_write_counter):
    p = docker_pipeline(unique("noimg"), unique("dpool"), image=None)
    with pytest.raises(PrefectRejected) as error:
        await sync_pipeline(p, PrefectConnection(prefect_write_counter.api_url))
    assert str(error.value).startswith("spec.worker.image:") and "\n" not in str(error.value)
    assert prefect_write_counter.writes == []

"""Pipelines sharing one work pool with different jobs namespaces, TTLs and job variables: the
pool's template holds only eveflow's common structure, each pipeline's values ride on its own
deployments, so reapplying either makes no writes and each flow run lands where its pipeline says.
Flow runs are rendered with prefect-kubernetes' and prefect-docker's own job configuration code."""

from __future__ import annotations

import uuid

import pytest
from prefect.client.orchestration import PrefectClient
from prefect_docker.worker import DockerWorkerJobConfiguration
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from eveflow_etl.orchestration.sync import delete_pipeline, sync_pipeline
from eveflow_etl.orchestration.types import PrefectConnection, PrefectRejected
from eveflow_etl.spec import parse_pipeline
from tests.fixtures.prefect import pipeline_document, prefect_api

pytestmark = pytest.mark.prefect

IMAGE = "registry.example/eveflow:9.9"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def k8s_pipeline(name: str, pool: str, jobs_namespace: str, ttl: int, secret: str, job_variables: dict):
    document = pipeline_document(name, pool, pool_type="kubernetes")
    document["spec"]["workPool"].update(
        kubernetes={"namespace": jobs_namespace, "finishedJobTtlSeconds": ttl}, jobVariables=job_variables)
    document["spec"]["worker"] = {"image": IMAGE}
    document["spec"]["destination"] = {"profile": "env", "schema": "eve", "secretRef": secret}
    return parse_pipeline(document)


async def _render(api_url: str, pool: str, deployment_id: str, configuration_class):
    async with PrefectClient(api_url) as client:
        flow_run = await client.create_flow_run_from_deployment(deployment_id)
        work_pool = await client.read_work_pool(pool)
        configuration = await configuration_class.resolve_for_flow_run(
            flow_run, client=client, work_pool=work_pool, worker_name="shared-pool-test")
        await client.delete_flow_run(flow_run.id)
    return configuration


async def test_kubernetes_pipelines_share_a_pool_each_with_its_own_namespace_and_ttl(
        prefect_server, prefect_write_counter):
    pool = unique("shared")
    a = k8s_pipeline(unique("a"), pool, "jobs-a", 600, "secret-a", {"cpu_request": "500m"})
    b = k8s_pipeline(unique("b"), pool, "jobs-b", 7200, "secret-b", {"memory_limit": "3Gi"})
    conn = PrefectConnection(prefect_write_counter.api_url)
    first_a = await sync_pipeline(a, conn, namespace="team-a")
    first_b = await sync_pipeline(b, conn, namespace="team-b")
    assert not any("work pool" in action for action in first_b.actions), first_b.actions

    prefect_write_counter.reset()
    again_a = await sync_pipeline(a, conn, namespace="team-a")
    again_b = await sync_pipeline(b, conn, namespace="team-b")
    assert (again_a.writes, again_b.writes) == (0, 0) and prefect_write_counter.writes == [], \
        prefect_write_counter.writes

    with prefect_api(prefect_server) as client:
        properties = client.get(f"work_pools/{pool}").json()["base_job_template"]["variables"]["properties"]
    assert properties["namespace"]["default"] == "default"  # Prefect's own: no pipeline's
    assert properties["finished_job_ttl"].get("default") is None
    # eveflow's defaults for every flow run (issue 12), the same for all pipelines sharing the pool.
    assert (properties["cpu_request"]["default"], properties["memory_limit"]["default"]) == ("250m", "2Gi")

    for result, jobs_namespace, ttl, secret in ((first_a, "jobs-a", 600, "secret-a"),
                                                (first_b, "jobs-b", 7200, "secret-b")):
        for deployment_id in result.deployment_ids.values():
            configuration = await _render(prefect_server.api_url, pool, deployment_id,
                                          KubernetesWorkerJobConfiguration)
            manifest = configuration.job_manifest
            assert manifest["metadata"]["namespace"] == jobs_namespace
            assert manifest["spec"]["ttlSecondsAfterFinished"] == ttl
            container = manifest["spec"]["template"]["spec"]["containers"][0]
            assert container["envFrom"] == [{"secretRef": {"name": secret}}]
            assert container["image"] == IMAGE and container["command"] == ["/usr/bin/env"]
            resources = container.get("resources") or {}
            if jobs_namespace == "jobs-a":  # its own cpu request, eveflow's defaults for the rest
                assert resources == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
            else:
                expected = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "3Gi"}}
                assert resources == expected, resources
    await delete_pipeline(b, conn, namespace="team-b")
    await delete_pipeline(a, conn, namespace="team-a")


def docker_pipeline(name: str, pool: str, job_variables: dict):
    document = pipeline_document(name, pool, pool_type="docker")
    document["spec"]["workPool"]["jobVariables"] = job_variables
    document["spec"]["worker"] = {"image": IMAGE}
    return parse_pipeline(document)


async def test_docker_pipelines_share_a_pool_each_with_its_own_job_variables(prefect_server, prefect_write_counter):
    pool = unique("dshared")
    a = docker_pipeline(unique("da"), pool, {"mem_limit": "1g", "networks": ["net-a"], "env": {"A_ONLY": "1"}})
    b = docker_pipeline(unique("db"), pool, {"mem_limit": "4g", "networks": ["net-b"]})
    conn = PrefectConnection(prefect_write_counter.api_url)
    first_a = await sync_pipeline(a, conn)  # the creator: its env entry goes on the pool
    first_b = await sync_pipeline(b, conn)
    prefect_write_counter.reset()
    assert ((await sync_pipeline(a, conn)).writes, (await sync_pipeline(b, conn)).writes) == (0, 0), \
        prefect_write_counter.writes

    for result, mem, network in ((first_a, "1g", "net-a"), (first_b, "4g", "net-b")):
        for deployment_id in result.deployment_ids.values():
            configuration = await _render(prefect_server.api_url, pool, deployment_id, DockerWorkerJobConfiguration)
            assert (configuration.mem_limit, configuration.networks) == (mem, [network])
            assert configuration.image == IMAGE
            assert configuration.container_create_kwargs == {"entrypoint": ["/usr/bin/env"]}
            assert configuration.env["A_ONLY"] == "1"
            assert "PGPASSWORD" in configuration.env  # the destination references stay

    # The pool's env reaches every run of the pool: a pipeline that did not create it sets none
    # (issue 12), whether the entry is new or set differently.
    for env in ({"A_ONLY": "other"}, {"B_ONLY": "2"}):
        sharer = docker_pipeline(unique("dc"), pool, {"env": env})
        with pytest.raises(PrefectRejected, match=rf"jobVariables.env: {next(iter(env))}"):
            await sync_pipeline(sharer, conn)
    await delete_pipeline(b, conn)
    await delete_pipeline(a, conn)

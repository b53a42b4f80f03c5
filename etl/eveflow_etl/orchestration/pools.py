"""Work pools and their queues: desired state from the spec, and read-compare-write against Prefect.

A pool eveflow creates is marked in its description (:data:`MANAGED_MARKER`, naming the pipeline
that created it); only such a pool is ever deleted, and only when no deployment uses it. A pool
with the same name and type is adopted (its queues and limit are brought to the spec; its job
template when the spec customises it, eveflow created the pool, or the flows run in containers
that need eveflow's template). A limit removed from the spec is cleared only by the creator.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

from eveflow_etl.orchestration.client import PrefectApi
from eveflow_etl.orchestration.types import PrefectConflict, PrefectRejected
from eveflow_etl.spec import EvePipeline, WorkQueueSpec

MANAGED_MARKER = "Managed by eveflow"

# The eveflow image's ENTRYPOINT is ``eveflow``, and workers pass a flow run's command as the
# container's arguments: ``prefect flow-run execute`` would become ``eveflow prefect …`` and fail.
# ``env`` runs its arguments as the command, found on the image's PATH.
FLOW_RUN_ENTRYPOINT = ["/usr/bin/env"]

# What ``destinations.resolve_dsn`` reads, for every profile: the same set for every pipeline, so
# pipelines sharing a docker pool agree on its template. PGSSLMODE is left out: an unset variable
# arrives empty, which libpq takes as unset for these but as an invalid sslmode.
DOCKER_DESTINATION_VARIABLES = (
    "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "DATABASE_URL",
    "SNOWFLAKE_POSTGRES_HOST", "SNOWFLAKE_POSTGRES_PORT", "SNOWFLAKE_POSTGRES_DATABASE",
    "SNOWFLAKE_POSTGRES_USER", "SNOWFLAKE_POSTGRES_PASSWORD",
)


def default_base_job_template(pool_type: str) -> dict[str, Any]:
    """The type's default template: from the installed worker class, else Prefect's bundled list.

    (A raw ``POST /work_pools/`` without it stores an empty template.)
    """
    from prefect.workers.base import BaseWorker

    worker_class = BaseWorker.get_worker_class_from_type(pool_type)
    if worker_class is not None:
        return copy.deepcopy(worker_class.get_default_base_job_template())
    bundled = resources.files("prefect.server.api.collections_data.views").joinpath("aggregate-worker-metadata.json")
    for collection in json.loads(bundled.read_text()).values():
        for worker_type, meta in collection.items():
            if worker_type == pool_type:
                return copy.deepcopy(meta["default_base_job_configuration"])
    raise PrefectRejected(f"spec.workPool.type '{pool_type}': Prefect knows no default job template for it")


def _add_env_from_variable(template: dict[str, Any]) -> None:
    """Give the kubernetes template an ``env_from`` variable feeding the container's ``envFrom``,
    and the container the entrypoint that runs Prefect's command.

    Prefect's default template only has ``env`` (literal values); flow-run Jobs need the
    destination's credentials, which must come from a Secret reference, never a literal.
    """
    template["variables"]["properties"]["env_from"] = {
        "title": "Environment from Secrets",
        "description": "envFrom entries of the flow-run container (eveflow: the destination Secret).",
        "type": "array",
        "items": {"type": "object"},
        "default": [],
    }
    containers = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    containers[0]["envFrom"] = "{{ env_from }}"
    containers[0]["command"] = list(FLOW_RUN_ENTRYPOINT)


def docker_destination_env() -> dict[str, str]:
    """``{{ $NAME }}`` references the docker worker resolves from its own environment when it
    builds a flow run's container (Docker has no ``envFrom``): the values never reach Prefect.

    They sit in the ``env`` variable's default, not in ``job_configuration`` (the server rejects
    placeholders there that are not variables), nor in the deployments' job variables (a rendered
    prefect.yaml would have ``prefect deploy`` resolve them into literals from the deployer's shell).
    """
    return {name: "{{ $" + name + " }}" for name in DOCKER_DESTINATION_VARIABLES}


def build_base_job_template(pipeline: EvePipeline, namespace: str) -> dict[str, Any]:
    """The type's default template with ``spec.workPool.jobVariables`` (and kubernetes settings,
    or the docker destination references) set as the variables' defaults. Pure apart from
    reading the installed default."""
    pool = pipeline.spec.work_pool
    template = default_base_job_template(pool.type)
    properties = template.setdefault("variables", {}).setdefault("properties", {})
    overrides = dict(pool.job_variables)
    if pool.type == "docker":
        if not (pipeline.spec.worker.image or overrides.get("image")):
            raise PrefectRejected(
                "spec.worker.image: a docker pool runs each flow in a container of this image, and Prefect's "
                "default image has no eveflow in it; set spec.worker.image (or spec.workPool.jobVariables.image)"
            )
        overrides["env"] = {**docker_destination_env(), **(overrides.get("env") or {})}
        overrides["container_create_kwargs"] = {"entrypoint": list(FLOW_RUN_ENTRYPOINT),
                                                **(overrides.get("container_create_kwargs") or {})}
    if pool.type == "kubernetes":
        k8s = pool.kubernetes
        overrides.setdefault("namespace", (k8s.namespace if k8s and k8s.namespace else namespace))
        if k8s is None or k8s.finished_job_ttl_seconds is not None:
            overrides.setdefault("finished_job_ttl", k8s.finished_job_ttl_seconds if k8s else 3600)
        if k8s is not None:
            overrides.setdefault("image_pull_policy", k8s.image_pull_policy)
        _add_env_from_variable(template)
    unknown = sorted(k for k in overrides if k not in properties)
    if unknown:
        raise PrefectRejected(
            f"spec.workPool.jobVariables: {', '.join(unknown)} not variables of the {pool.type} pool's job "
            f"template; known: {', '.join(sorted(properties))}"
        )
    for key, value in overrides.items():
        properties[key] = {**properties[key], "default": value}
    return template


def _creator(pipeline: EvePipeline, namespace: str) -> str:
    return f"(created for pipeline {namespace}.{pipeline.name})"


def pool_description(pipeline: EvePipeline, namespace: str) -> str:
    return f"{MANAGED_MARKER} {_creator(pipeline, namespace)}; deleted with its last pipeline."


def is_managed(pool: dict[str, Any]) -> bool:
    return MANAGED_MARKER in (pool.get("description") or "")


def is_owner(pool: dict[str, Any], pipeline: EvePipeline, namespace: str) -> bool:
    """This pipeline created the pool (its description says so), so the pool's own settings follow
    its spec, down to removing them; a pipeline sharing the pool only sets what its spec names."""
    description = pool.get("description") or ""
    return MANAGED_MARKER in description and _creator(pipeline, namespace) in description


async def read_pool(api: PrefectApi, name: str) -> dict[str, Any] | None:
    return await api.get(f"/work_pools/{name}", missing_ok=True)


async def ensure_pool(api: PrefectApi, pipeline: EvePipeline, namespace: str, actions: list[str]) -> dict[str, Any]:
    """Create or adopt the pool, then bring its template and limit to the spec. Returns the pool."""
    spec = pipeline.spec.work_pool
    template = build_base_job_template(pipeline, namespace)
    observed = await read_pool(api, spec.name)
    if observed is None:
        body: dict[str, Any] = {
            "name": spec.name,
            "type": spec.type,
            "description": pool_description(pipeline, namespace),
            "base_job_template": template,
        }
        if spec.concurrency_limit is not None:
            body["concurrency_limit"] = spec.concurrency_limit
        try:
            created = await api.write("POST", "/work_pools/", body)
        except PrefectConflict:
            # Another pipeline sharing this pool created it between our read and our write:
            # adopt it like any existing pool.
            observed = await read_pool(api, spec.name)
            if observed is None:
                raise
        else:
            actions.append(f"created work pool {spec.name} ({spec.type})")
            return created
    if observed.get("type") != spec.type:
        raise PrefectRejected(
            f"work pool '{spec.name}' already exists with type '{observed.get('type')}', but "
            f"spec.workPool.type is '{spec.type}': set spec.workPool.type to '{observed.get('type')}' "
            "or choose another spec.workPool.name"
        )
    update: dict[str, Any] = {}
    # Kubernetes and docker flow runs get the destination only through eveflow's template.
    manage_template = is_managed(observed) or bool(spec.job_variables) or spec.type in ("kubernetes", "docker")
    if manage_template and observed.get("base_job_template") != template:
        update["base_job_template"] = template
    # A limit the spec no longer has is cleared only by the pool's creator: on a shared or adopted
    # pool it may be another pipeline's or a person's.
    if spec.concurrency_limit is not None or is_owner(observed, pipeline, namespace):
        if observed.get("concurrency_limit") != spec.concurrency_limit:
            update["concurrency_limit"] = spec.concurrency_limit
    if update:
        await api.write("PATCH", f"/work_pools/{spec.name}", update)
        actions.append(f"updated work pool {spec.name} ({', '.join(sorted(update))})")
        observed = {**observed, **update}
    return observed


def _priority_order(queues: list[WorkQueueSpec]) -> list[str]:
    return [q.name for q in sorted(queues, key=lambda q: (q.priority, queues.index(q)))]


async def ensure_queues(api: PrefectApi, pipeline: EvePipeline, actions: list[str]) -> dict[str, str]:
    """Create missing queues, fix limits and the priority order. Queues not in the spec are left
    alone (other pipelines may share the pool). Returns queue name → id."""
    pool = pipeline.spec.work_pool
    observed = {q["name"]: q for q in await api.query(f"/work_pools/{pool.name}/queues/filter", {})}
    for queue in pool.queues:
        if queue.name in observed:
            current = observed[queue.name]
            if current.get("concurrency_limit") != queue.concurrency_limit:
                await api.write("PATCH", f"/work_pools/{pool.name}/queues/{queue.name}",
                                {"concurrency_limit": queue.concurrency_limit})
                actions.append(f"updated work queue {pool.name}/{queue.name} (concurrency_limit)")
            continue
        body = {"name": queue.name, "priority": queue.priority, "description": MANAGED_MARKER}
        if queue.concurrency_limit is not None:
            body["concurrency_limit"] = queue.concurrency_limit
        try:
            observed[queue.name] = await api.write("POST", f"/work_pools/{pool.name}/queues", body)
        except PrefectConflict:  # created concurrently by a pipeline sharing the pool
            observed[queue.name] = await api.get(f"/work_pools/{pool.name}/queues/{queue.name}")
            continue
        actions.append(f"created work queue {pool.name}/{queue.name} (priority {queue.priority})")
    # Prefect keeps priorities unique and sequential, shifting others on collisions; so what is
    # compared is the order of the spec's queues, not the numbers.
    desired_order = _priority_order(pool.queues)
    observed_order = sorted(desired_order, key=lambda n: observed[n]["priority"])
    if observed_order != desired_order:
        for queue in sorted(pool.queues, key=lambda q: q.priority):
            if observed[queue.name]["priority"] != queue.priority:
                await api.write("PATCH", f"/work_pools/{pool.name}/queues/{queue.name}", {"priority": queue.priority})
                actions.append(f"updated work queue {pool.name}/{queue.name} (priority {queue.priority})")
    return {name: q["id"] for name, q in observed.items() if name in desired_order}

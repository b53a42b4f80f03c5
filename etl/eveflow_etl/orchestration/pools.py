"""Work pools and their queues: desired state from the spec, and read-compare-write against Prefect.

A pool eveflow creates is marked in its description (:data:`MANAGED_MARKER`, naming the pipeline
that created it); only such a pool is ever deleted, and only when no deployment uses it. Only the
pipeline that created a pool changes it (template, limit, its queues' limits and order): for every
other pipeline the pool is shared, and a change would change other pipelines' flow runs, so a
spec that disagrees with the pool is refused, naming what differs (a missing queue is only
added). The template never holds what differs between pipelines (jobs namespace, TTL, image,
job variables): the deployments carry that, so any number of pipelines share a pool without
rewriting it. A limit removed from the spec is cleared only by the creator.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

from eveflow_etl.orchestration.client import PrefectApi
from eveflow_etl.orchestration.types import PrefectConflict, PrefectRejected
from eveflow_etl.plan import (
    DATABASE_URL,
    MANAGED_MARKER,
    PG_VARIABLES,
    SNOWFLAKE_VARIABLES,
    pipeline_plan,
)
from eveflow_etl.spec import EvePipeline, WorkQueueSpec

# The eveflow image's ENTRYPOINT is ``eveflow``, and workers pass a flow run's command as the
# container's arguments: ``prefect flow-run execute`` would become ``eveflow prefect …`` and fail.
# ``env`` runs its arguments as the command, found on the image's PATH.
FLOW_RUN_ENTRYPOINT = ["/usr/bin/env"]

# What ``destinations.resolve_dsn`` reads, for every profile: the same set for every pipeline, so
# pipelines sharing a docker pool agree on its template. PGSSLMODE is left out: an unset variable
# arrives empty, which libpq takes as unset for these but as an invalid sslmode.
DOCKER_DESTINATION_VARIABLES = (*PG_VARIABLES.names, DATABASE_URL, *SNOWFLAKE_VARIABLES.names)


def default_base_job_template(pool_type: str) -> dict[str, Any]:
    """The type's default template: from the installed worker class, else Prefect's bundled list.

    (A raw ``POST /work_pools/`` without it stores an empty template.)
    """
    from prefect.workers.base import BaseWorker  # Prefect: ~1.6 s off the sync library's import

    worker_class = BaseWorker.get_worker_class_from_type(pool_type)
    if worker_class is not None:
        return copy.deepcopy(worker_class.get_default_base_job_template())
    bundled = resources.files("prefect.server.api.collections_data.views").joinpath("aggregate-worker-metadata.json")
    for collection in json.loads(bundled.read_text()).values():
        for worker_type, meta in collection.items():
            if worker_type == pool_type:
                return copy.deepcopy(meta["default_base_job_configuration"])
    raise PrefectRejected(f"spec.workPool.type '{pool_type}': Prefect knows no default job template for it")


FLOW_RUN_POD_LABEL = "eveflow.dev/flow-run"
# What every eveflow container runs with: the "restricted" Pod Security Standard.
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
# ... and every eveflow pod (worker Deployment, flow-run Job).
POD_SECURITY_CONTEXT: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
# (volume, size limit, mount path): where an eveflow process writes with a read-only root
# filesystem -- /tmp (PREFECT_HOME, XDG_CACHE_HOME in the image) and EVEFLOW_DATA_DIR's default.
WRITABLE_DIRS = (("tmp", "1Gi", "/tmp"), ("data", "4Gi", "/home/eveflow/.eveflow"))
# A flow-run Job's resources when the pipeline's jobVariables do not set them (the worker's defaults).
JOB_RESOURCE_DEFAULTS = {"cpu_request": "250m", "memory_request": "512Mi", "memory_limit": "2Gi"}


def _add_env_from_variable(template: dict[str, Any]) -> None:
    """Give the kubernetes template an ``env_from`` variable feeding the container's ``envFrom``,
    the container the entrypoint that runs Prefect's command, and the pod the securityContext
    Pod Security's "restricted" level requires.

    Prefect's default template only has ``env`` (literal values); flow-run Jobs need the
    destination's credentials, which must come from a Secret reference, never a literal. The pod
    also gets the restricted security context, writable volumes and default resources.
    """
    template["variables"]["properties"]["env_from"] = {
        "title": "Environment from Secrets",
        "description": "envFrom entries of the flow-run container (eveflow: the destination Secret).",
        "type": "array",
        "items": {"type": "object"},
        "default": [],
    }
    pod_template = template["job_configuration"]["job_manifest"]["spec"]["template"]
    # What the bundled Prefect server's NetworkPolicy admits (the chart's prefect-server.yaml).
    pod_template.setdefault("metadata", {}).setdefault("labels", {})[FLOW_RUN_POD_LABEL] = "true"
    pod = pod_template["spec"]
    containers = pod["containers"]
    containers[0]["envFrom"] = "{{ env_from }}"
    containers[0]["command"] = list(FLOW_RUN_ENTRYPOINT)
    # The restricted Pod Security Standard, and no API token: a flow run only talks to Prefect
    # and the destination. The image's user is non-root (10001); its writable places are volumes.
    pod["automountServiceAccountToken"] = False
    pod["securityContext"] = copy.deepcopy(POD_SECURITY_CONTEXT)
    pod["volumes"] = [{"name": name, "emptyDir": {"sizeLimit": size}} for name, size, _ in WRITABLE_DIRS]
    containers[0]["securityContext"] = dict(CONTAINER_SECURITY_CONTEXT)
    containers[0]["volumeMounts"] = [{"name": name, "mountPath": path} for name, _, path in WRITABLE_DIRS]
    # Requests and limits unless the pipeline's jobVariables set them (cpu_request, memory_limit, …).
    for variable, default in JOB_RESOURCE_DEFAULTS.items():
        template["variables"]["properties"][variable]["default"] = default


def docker_destination_env() -> dict[str, str]:
    """``{{ $NAME }}`` references the docker worker resolves from its own environment when it
    builds a flow run's container (Docker has no ``envFrom``): the values never reach Prefect.

    They sit in the ``env`` variable's default, not in ``job_configuration`` (the server rejects
    placeholders there that are not variables), nor in the deployments' job variables (a rendered
    prefect.yaml would have ``prefect deploy`` resolve them into literals from the deployer's shell).
    """
    return {name: "{{ $" + name + " }}" for name in DOCKER_DESTINATION_VARIABLES}


def build_base_job_template(pool_type: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (default: the type's default template) with what every eveflow pipeline's flow runs
    need, the same for all of them: on kubernetes the ``env_from`` variable and the container's
    entrypoint, on docker the destination references in ``env`` and the entrypoint. Nothing
    pipeline-specific: that goes in the deployments' job variables (see
    ``deployments.flow_run_job_variables``), so pipelines sharing a pool agree on its template.
    Pure apart from reading the installed default."""
    template = copy.deepcopy(base) if base is not None else default_base_job_template(pool_type)
    properties = template.setdefault("variables", {}).setdefault("properties", {})
    try:
        if pool_type == "kubernetes":
            _add_env_from_variable(template)
        if pool_type == "docker":
            env = properties["env"]
            env["default"] = {**docker_destination_env(), **(env.get("default") or {})}
            kwargs = properties["container_create_kwargs"]
            kwargs["default"] = {**(kwargs.get("default") or {}), "entrypoint": list(FLOW_RUN_ENTRYPOINT)}
    except (KeyError, IndexError, TypeError) as e:
        raise PrefectRejected(
            f"the {pool_type} pool's base job template lacks {e} that eveflow's flow runs need; restore the "
            f"type's default template (prefect work-pool get-default-base-job-template --type {pool_type}) "
            "or choose another spec.workPool.name"
        ) from None
    return template


def _with_docker_env(template: dict[str, Any], pipeline: EvePipeline, owner: bool) -> dict[str, Any]:
    """The docker pool's ``env`` default with the pipeline's ``jobVariables.env`` merged in.

    Its entries stay on the pool, not in the deployments: a deployment's ``env`` replaces the pool's
    whole ``env`` (losing the destination references), and ``{{ $NAME }}`` references in a
    deployment would be resolved into literals by ``prefect deploy`` from a rendered prefect.yaml.
    Only the pool's creator sets them: every flow run of the pool gets them, so an entry from a
    pipeline sharing the pool would reach other pipelines' runs; a sharer's entry the pool does not
    already have with the same value is refused.
    """
    wanted = pipeline.spec.work_pool.job_variables.get("env") or {}
    env = template["variables"]["properties"]["env"]
    current = dict(env.get("default") or {})
    differing = sorted(k for k, v in wanted.items() if current.get(k) != v)
    if differing and not owner:
        raise PrefectRejected(
            f"spec.workPool.jobVariables.env: {', '.join(differing)} not set so on docker pool "
            f"'{pipeline.spec.work_pool.name}', which another pipeline created (a docker pool's env reaches every "
            "flow run of the pool, so only its creator sets it); remove them, or use a pool of this pipeline's "
            "own (another spec.workPool.name)"
        )
    env["default"] = {**current, **wanted}
    return template


def new_pool_template(pipeline: EvePipeline) -> dict[str, Any]:
    """The template eveflow creates the pipeline's pool with."""
    template = build_base_job_template(pipeline.spec.work_pool.type)
    if pipeline.spec.work_pool.type == "docker":
        _with_docker_env(template, pipeline, owner=True)
    return template


def is_managed(pool: dict[str, Any]) -> bool:
    return MANAGED_MARKER in (pool.get("description") or "")


def is_owner(pool: dict[str, Any], pipeline: EvePipeline, namespace: str) -> bool:
    """This pipeline created the pool (its description says so), so the pool's own settings follow
    its spec, down to removing them; a pipeline sharing the pool only sets what its spec names."""
    description = pool.get("description") or ""
    return MANAGED_MARKER in description and pipeline_plan(pipeline, namespace).pool_creator in description


async def read_pool(api: PrefectApi, name: str) -> dict[str, Any] | None:
    return await api.get(f"/work_pools/{name}", missing_ok=True)


async def ensure_pool(api: PrefectApi, pipeline: EvePipeline, namespace: str, actions: list[str]) -> dict[str, Any]:
    """Create or adopt the pool, then bring its template and limit to the spec. Returns the pool."""
    spec = pipeline.spec.work_pool
    observed = await read_pool(api, spec.name)
    if observed is None:
        body: dict[str, Any] = {
            "name": spec.name,
            "type": spec.type,
            "description": pipeline_plan(pipeline, namespace).pool_description,
            "base_job_template": new_pool_template(pipeline),
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
    owner = is_owner(observed, pipeline, namespace)
    # Kubernetes and docker flow runs get the destination only through eveflow's template. A pool
    # eveflow created holds nothing else; an adopted one keeps its own defaults, with the structure
    # added once (pipelines sharing it then find nothing to write).
    if is_managed(observed) or spec.type in ("kubernetes", "docker"):
        current = observed.get("base_job_template") or {}
        template = build_base_job_template(spec.type, None if is_managed(observed) else current)
        if spec.type == "docker":
            if is_managed(observed):  # entries other pipelines sharing the pool added stay
                env = ((current.get("variables") or {}).get("properties") or {}).get("env") or {}
                template["variables"]["properties"]["env"]["default"] = {
                    **(env.get("default") or {}), **template["variables"]["properties"]["env"]["default"]}
            _with_docker_env(template, pipeline, owner)
        if current != template:
            update["base_job_template"] = template
    # A limit the spec no longer has is cleared only by the pool's creator: on a shared or adopted
    # pool it may be another pipeline's or a person's.
    if spec.concurrency_limit is not None or owner:
        if observed.get("concurrency_limit") != spec.concurrency_limit:
            update["concurrency_limit"] = spec.concurrency_limit
    if update and not owner:
        raise PrefectRejected(
            f"work pool '{spec.name}' was not created by this pipeline and differs from its spec "
            f"({', '.join(sorted(update))}); eveflow does not change a pool it shares (other pipelines' flow runs "
            "would change): make spec.workPool match the pool (concurrencyLimit, or none), or use a pool of this "
            "pipeline's own (another spec.workPool.name)"
            + (" -- the pool also lacks the job template eveflow's flow runs need" if "base_job_template" in update else "")
        )
    if update:
        await api.write("PATCH", f"/work_pools/{spec.name}", update)
        actions.append(f"updated work pool {spec.name} ({', '.join(sorted(update))})")
        observed = {**observed, **update}
    return observed


def _priority_order(queues: list[WorkQueueSpec]) -> list[str]:
    return [q.name for q in sorted(queues, key=lambda q: (q.priority, queues.index(q)))]


async def ensure_queues(api: PrefectApi, pipeline: EvePipeline, actions: list[str], *, owner: bool = True) -> dict[str, str]:
    """Create missing queues; the pool's creator (``owner``) also fixes limits and the priority
    order (on a shared pool those are the creator's: a differing limit is refused, the order left).
    Queues not in the spec are left alone (other pipelines may share the pool). Returns queue name → id."""
    pool = pipeline.spec.work_pool
    observed = {q["name"]: q for q in await api.query(f"/work_pools/{pool.name}/queues/filter", {})}
    for queue in pool.queues:
        if queue.name in observed:
            current = observed[queue.name]
            if current.get("concurrency_limit") != queue.concurrency_limit and not owner:
                raise PrefectRejected(
                    f"spec.workPool.queues: queue {pool.name}/{queue.name} has concurrencyLimit "
                    f"{current.get('concurrency_limit')} on a pool another pipeline created; use the same limit, "
                    "or a pool of this pipeline's own (another spec.workPool.name)")
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
    if observed_order != desired_order and owner:
        for queue in sorted(pool.queues, key=lambda q: q.priority):
            if observed[queue.name]["priority"] != queue.priority:
                await api.write("PATCH", f"/work_pools/{pool.name}/queues/{queue.name}", {"priority": queue.priority})
                actions.append(f"updated work queue {pool.name}/{queue.name} (priority {queue.priority})")
    return {name: q["id"] for name, q in observed.items() if name in desired_order}

"""The pipeline's deployments: desired state (pure builders) and read-compare-write against Prefect.

Each pipeline has ``<name>`` (flow ``eve-market-etl``) and, unless disabled, ``<name>-maintenance``
(flow ``eve-maintenance``). Both carry the tags ``eveflow`` and
``eveflow.dev/pipeline:<namespace>.<name>``; only deployments with that tag are ever deleted.
A deployment is created with its schedules (no runs exist yet); afterwards only the fields that
differ are PATCHed, never ``schedules`` (see :mod:`.schedules`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

from eveflow_etl.orchestration.client import PrefectApi
from eveflow_etl.orchestration.pools import build_base_job_template
from eveflow_etl.orchestration.schedules import cron_schedule, ensure_schedules
from eveflow_etl.orchestration.types import PrefectRejected
from eveflow_etl.plan import PIPELINE_TAG_PREFIX, pipeline_plan
from eveflow_etl.spec import ETL_FLOW_NAME, MAINTENANCE_FLOW_NAME, EvePipeline

ETL_ENTRYPOINT = "eveflow_etl.orchestration.flows.eve_market_etl"
MAINTENANCE_ENTRYPOINT = "eveflow_etl.orchestration.flows.eve_maintenance"
MAINTENANCE_SLUG = "maintenance"

# Fields compared between desired and observed, and PATCHed when they differ.
_COMPARED = ("entrypoint", "parameters", "parameter_openapi_schema", "work_pool_name", "work_queue_name",
             "tags", "description", "paused", "enforce_parameter_schema", "job_variables", "path", "pull_steps")


@lru_cache(maxsize=4)
def flow_parameter_schema(entrypoint: str) -> dict[str, Any]:
    """The OpenAPI schema of the flow's parameters, computed from the function itself."""
    from prefect.utilities.importtools import import_object  # Prefect: ~2.5 s off the sync library's import

    return import_object(entrypoint).parameters.model_dump_for_openapi()


def flow_run_job_variables(pipeline: EvePipeline, namespace: str) -> dict[str, Any]:
    """Per-deployment job variables: everything about a flow run that is this pipeline's own. They
    override the pool template's defaults for this deployment only, so pipelines sharing a pool
    each get their own (the pool's template holds only eveflow's common structure, see ``pools``).

    ``spec.workPool.jobVariables`` (checked against the pool type's template), then on kubernetes
    the jobs namespace (``namespace``, the pipeline's, unless ``spec.workPool.kubernetes`` names
    one), TTL and pull policy, the eveflow image and the destination Secret (``envFrom``); on docker
    the image and the entrypoint kept in ``container_create_kwargs``; ``env`` stays on a docker
    pool (see ``pools._with_docker_env``). Process pools run flows inside the worker, which already
    has the image and the destination.
    """
    spec = pipeline.spec
    pool = spec.work_pool
    known = build_base_job_template(pool.type)["variables"]["properties"]
    unknown = sorted(k for k in pool.job_variables if k not in known)
    if unknown:
        raise PrefectRejected(
            f"spec.workPool.jobVariables: {', '.join(unknown)} not variables of the {pool.type} pool's job "
            f"template; known: {', '.join(sorted(known))}"
        )
    variables: dict[str, Any] = {}
    if pool.type == "kubernetes":
        k8s = pool.kubernetes
        variables["namespace"] = pipeline_plan(pipeline, namespace).jobs_namespace
        if k8s is None or k8s.finished_job_ttl_seconds is not None:
            variables["finished_job_ttl"] = k8s.finished_job_ttl_seconds if k8s else 3600
        if k8s is not None:
            variables["image_pull_policy"] = k8s.image_pull_policy
    variables.update(pool.job_variables)
    if pool.type == "process":
        return variables
    if spec.worker.image:
        variables["image"] = spec.worker.image
    if pool.type == "kubernetes" and spec.destination.secret_ref:
        variables["env_from"] = [{"secretRef": {"name": spec.destination.secret_ref}}]
    if pool.type == "docker":
        if not variables.get("image"):
            raise PrefectRejected(
                "spec.worker.image: a docker pool runs each flow in a container of this image, and Prefect's "
                "default image has no eveflow in it; set spec.worker.image"
            )
        variables.pop("env", None)
    return variables


@dataclass
class DesiredDeployment:
    name: str
    flow_name: str
    body: dict[str, Any]  # the fields of _COMPARED
    schedules: list[dict[str, Any]] = field(default_factory=list)


def desired_deployments(pipeline: EvePipeline, namespace: str) -> list[DesiredDeployment]:
    """The deployments a pipeline wants, as API bodies (no I/O except the flows' schema)."""
    spec = pipeline.spec
    plan = pipeline_plan(pipeline, namespace)
    table = plan.target_table
    common = {
        "work_pool_name": spec.work_pool.name,
        "work_queue_name": spec.work_pool.queues[0].name,
        "tags": list(plan.deployment_tags),
        "paused": spec.suspend,
        "enforce_parameter_schema": True,
        "job_variables": flow_run_job_variables(pipeline, namespace),
        "path": None,
        "pull_steps": None,
        "description": plan.deployment_description,
    }
    etl_parameters = {
        "regions": list(spec.source.regions),
        "source": spec.source.kind.value,
        "types": list(spec.source.types) if spec.source.types is not None else None,
        "destination": spec.destination.profile,
        "db_schema": spec.destination.db_schema,
        "table": table,
        "pipeline_name": pipeline.name,
        "fan_out": spec.source.fan_out,
        "retries": spec.retries,
        "retry_delay_seconds": spec.retry_delay_seconds,
        "timeout_seconds": spec.timeout_seconds,
    }
    # Only when set: deployments of pipelines without them keep their parameters as they were.
    if spec.source.backfill is not None:
        etl_parameters["backfill_from"] = spec.source.backfill.from_
    if spec.source.verify_days:
        etl_parameters["verify_days"] = spec.source.verify_days
    result = [
        DesiredDeployment(
            name=pipeline.etl_deployment_name,
            flow_name=ETL_FLOW_NAME,
            body={**common, "entrypoint": ETL_ENTRYPOINT, "parameters": etl_parameters,
                  "parameter_openapi_schema": flow_parameter_schema(ETL_ENTRYPOINT)},
            schedules=[cron_schedule(s.slug, s.cron, s.timezone, s.parameters.model_dump(exclude_none=True),
                                     s.active) for s in spec.schedules],
        )
    ]
    if spec.maintenance.enabled:
        result.append(
            DesiredDeployment(
                name=pipeline.maintenance_deployment_name,
                flow_name=MAINTENANCE_FLOW_NAME,
                body={**common, "entrypoint": MAINTENANCE_ENTRYPOINT,
                      "parameters": {"destination": spec.destination.profile, "db_schema": spec.destination.db_schema,
                                     "table": table, "source": spec.source.kind.value,
                                     "retention_days": spec.maintenance.retention_days,
                                     "pipeline_name": pipeline.name},
                      "parameter_openapi_schema": flow_parameter_schema(MAINTENANCE_ENTRYPOINT)},
                schedules=[cron_schedule(MAINTENANCE_SLUG, spec.maintenance.cron, "UTC")],
            )
        )
    return result


def deployment_differences(desired: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    """The fields a PATCH must send (empty when in sync). Tags compare as sets."""
    patch = {}
    for key in _COMPARED:
        want, have = desired.get(key), observed.get(key)
        if key == "tags":
            same = sorted(want or []) == sorted(have or [])
        elif key in ("job_variables", "parameters"):
            same = (want or {}) == (have or {})
        else:
            same = want == have
        if not same:
            patch[key] = want
    return patch


async def read_deployment(api: PrefectApi, flow_name: str, name: str) -> dict[str, Any] | None:
    return await api.get(f"/deployments/name/{flow_name}/{name}", missing_ok=True)


async def ensure_flows(api: PrefectApi, flow_names: list[str], actions: list[str]) -> dict[str, str]:
    """The flows' ids, read in one query; those missing are created (``POST /flows/`` is an
    upsert, but a write)."""
    found = await api.query("/flows/filter", {"flows": {"name": {"any_": flow_names}}})
    ids = {flow["name"]: flow["id"] for flow in found}
    for name in flow_names:
        if name not in ids:
            ids[name] = (await api.write("POST", "/flows/", {"name": name}))["id"]
            actions.append(f"created flow {name}")
    return ids


async def read_owned_deployment(api: PrefectApi, desired: DesiredDeployment,
                                tagged: Sequence[dict[str, Any]] = ()) -> dict[str, Any] | None:
    """The deployment ``desired`` names, or None; refused when another pipeline's tag is on it.

    ``tagged`` are the pipeline's deployments (:func:`find_pipeline_deployments`): one carrying
    the desired name is it (only eveflow tags a deployment as a pipeline's, with a name it gave),
    read without a request; any other is read by name. Deployments are named after the pipeline,
    so a namesake in another namespace (or cluster) on the same Prefect server would take this one
    over and the two would rewrite it on every pass. A deployment without any pipeline tag (made
    by hand, or by an older eveflow) is adopted.
    """
    observed = next((d for d in tagged if d["name"] == desired.name), None)
    if observed is None:
        observed = await read_deployment(api, desired.flow_name, desired.name)
    ours = {t for t in desired.body["tags"] if t.startswith(PIPELINE_TAG_PREFIX)}
    owners = {t for t in (observed or {}).get("tags") or [] if t.startswith(PIPELINE_TAG_PREFIX)} - ours
    if owners:
        owner = sorted(owners)[0].removeprefix(PIPELINE_TAG_PREFIX)
        raise PrefectRejected(
            f"deployment {desired.flow_name}/{desired.name} belongs to pipeline {owner}: deployments are named "
            f"after metadata.name, so two pipelines on one Prefect server need different names; rename this "
            f"pipeline (metadata.name) or delete the other one"
        )
    return observed


async def ensure_deployment(api: PrefectApi, desired: DesiredDeployment, observed: dict[str, Any] | None,
                            actions: list[str], flow_id: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Create (in ``flow_id``, else looked up by :func:`ensure_flows`) or update one deployment and its schedules
    (``observed``: as read by :func:`read_owned_deployment`). Returns (deployment, slug → schedule id)."""
    if observed is None:
        if flow_id is None:
            flow_id = (await ensure_flows(api, [desired.flow_name], actions))[desired.flow_name]
        # Created with its schedules in one call: there are no runs yet to lose.
        created = await api.write("POST", "/deployments/", {
            "name": desired.name, "flow_id": flow_id, **desired.body, "schedules": desired.schedules,
        })
        actions.append(f"created deployment {desired.flow_name}/{desired.name} ({created['id']})")
        ids = {s["slug"]: s["id"] for s in created.get("schedules") or [] if s.get("slug")}
        missing = [s for s in desired.schedules if s["slug"] not in ids]
        if missing:  # an older server that ignored schedules on create
            ids = await ensure_schedules(api, created, desired.schedules, actions)
        return created, ids
    patch = deployment_differences(desired.body, observed)
    if patch:
        await api.write("PATCH", f"/deployments/{observed['id']}", patch)
        what = ", ".join(sorted(patch))
        if set(patch) == {"paused"}:
            actions.append(f"{'paused' if patch['paused'] else 'resumed'} deployment {desired.name}")
        else:
            actions.append(f"updated deployment {desired.flow_name}/{desired.name} ({what})")
        observed = {**observed, **patch}
    ids = await ensure_schedules(api, observed, desired.schedules, actions)
    return observed, ids


async def find_pipeline_deployments(api: PrefectApi, pipeline: EvePipeline, namespace: str) -> list[dict[str, Any]]:
    """Deployments tagged as this pipeline's (whatever their names are now)."""
    return await api.query("/deployments/filter", {
        "deployments": {"tags": {"all_": list(pipeline_plan(pipeline, namespace).deployment_tags)}},
        "limit": 50,
    })


async def count_pool_deployments(api: PrefectApi, pool_name: str) -> int:
    return int(await api.query("/deployments/count", {"work_pools": {"name": {"any_": [pool_name]}}}))

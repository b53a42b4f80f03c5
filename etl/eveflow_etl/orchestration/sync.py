"""The Prefect sync library: bring a Prefect API to a pipeline's desired state, report, delete.

Used by ``eveflow apply/status/delete``, the operator and the demo. Every object is read first
and written only when it differs from the spec, so a sync that finds nothing to change makes
zero POST/PATCH/DELETE calls (``SyncResult.writes == 0``) — which matters because any
deployment write drops its future scheduled runs. Drift (a deleted pool or deployment, a
hand-edited schedule) is repaired by the same comparison.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eveflow_etl.orchestration import deployments as deps
from eveflow_etl.orchestration import pools
from eveflow_etl.orchestration.client import PrefectApi
from eveflow_etl.orchestration.summary import artifact_key, totals_of_artifact
from eveflow_etl.orchestration.types import DeleteResult, PrefectConnection, SyncResult
from eveflow_etl.spec import ETL_FLOW_NAME, MAINTENANCE_FLOW_NAME, EvePipeline, RunSummary

_FINISHED_OR_RUNNING = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED", "RUNNING"]


def spec_hash(pipeline: EvePipeline) -> str:
    """A stable hash of the spec (camelCase document form, keys sorted)."""
    document = pipeline.spec.model_dump(mode="json", by_alias=True, exclude_none=False)
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


async def sync_pipeline(pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str = "default") -> SyncResult:
    """Ensure the work pool, its queues, the deployments and their schedules; report ids and runs.

    Raises ``PrefectUnavailable`` (retry later), ``PrefectAuthError`` or ``PrefectRejected``
    (the message says what to fix). A sync interrupted half-way is finished by the next one.
    """
    result = SyncResult(work_pool_name=pipeline.spec.work_pool.name, spec_hash=spec_hash(pipeline),
                        paused=pipeline.spec.suspend)
    desired = deps.desired_deployments(pipeline, namespace)
    async with PrefectApi(conn) as api:
        try:
            # Read (and checked for another pipeline's ownership) before any write: a refused
            # pipeline leaves the pool and the deployments as they were. One query finds the
            # pipeline's deployments; only those it lacks are read by name (none when in sync).
            tagged = await deps.find_pipeline_deployments(api, pipeline, namespace)
            observed = {want.name: await deps.read_owned_deployment(api, want, tagged) for want in desired}
            pool = await pools.ensure_pool(api, pipeline, namespace, result.actions)
            result.work_pool_id = pool.get("id")
            await pools.ensure_queues(api, pipeline, result.actions,
                                      owner=pools.is_owner(pool, pipeline, namespace))
            to_create = [want.flow_name for want in desired if observed[want.name] is None]
            flow_ids = await deps.ensure_flows(api, to_create, result.actions) if to_create else {}
            for want in desired:
                deployment, schedule_ids = await deps.ensure_deployment(
                    api, want, observed[want.name], result.actions, flow_ids.get(want.flow_name))
                result.deployment_ids[want.name] = deployment["id"]
                if want.flow_name == ETL_FLOW_NAME:
                    result.schedule_ids.update(schedule_ids)
                else:
                    result.schedule_ids.update({f"{want.name}/{k}": v for k, v in schedule_ids.items()})
            wanted = {want.name for want in desired}
            for deployment in tagged:  # the spec no longer has it (maintenance disabled)
                if deployment["name"] not in wanted:
                    await api.write("DELETE", f"/deployments/{deployment['id']}", missing_ok=True)
                    result.actions.append(f"deleted deployment {deployment['name']} (no longer in the spec)")
            # A deployment created just now has no runs yet: only the others are asked for theirs.
            existing = {name: result.deployment_ids[name] for name, found in observed.items() if found is not None}
            result.last_run, result.next_run = await _runs(api, pipeline, existing)
        finally:
            result.writes = api.writes
    return result


async def read_status(pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str = "default") -> SyncResult:
    """What Prefect has for the pipeline, with last/next run. Only reads (``writes`` is 0)."""
    result = SyncResult(work_pool_name=pipeline.spec.work_pool.name, spec_hash=spec_hash(pipeline))
    async with PrefectApi(conn) as api:
        pool = await pools.read_pool(api, pipeline.spec.work_pool.name)
        result.work_pool_id = pool.get("id") if pool else None
        if pool is None:
            result.actions.append(f"work pool {pipeline.spec.work_pool.name} is missing")
        paused = []
        names = [(ETL_FLOW_NAME, pipeline.etl_deployment_name)]
        if pipeline.spec.maintenance.enabled:
            names.append((MAINTENANCE_FLOW_NAME, pipeline.maintenance_deployment_name))
        for flow_name, name in names:
            deployment = await deps.read_deployment(api, flow_name, name)
            if deployment is None:
                result.actions.append(f"deployment {flow_name}/{name} is missing")
                continue
            result.deployment_ids[name] = deployment["id"]
            paused.append(bool(deployment.get("paused")))
            for schedule in deployment.get("schedules") or []:
                slug = schedule.get("slug") or schedule["id"]
                key = slug if flow_name == ETL_FLOW_NAME else f"{name}/{slug}"
                result.schedule_ids[key] = schedule["id"]
        result.paused = bool(paused) and all(paused)
        result.last_run, result.next_run = await _runs(api, pipeline, result.deployment_ids)
        result.writes = api.writes
    return result


async def delete_pipeline(pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str = "default") -> DeleteResult:
    """Remove the pipeline's deployments (``deletionPolicy: Delete``) and the work pool when eveflow
    created it and no deployment uses it any more. ``Orphan`` leaves everything in Prefect."""
    result = DeleteResult()
    if pipeline.spec.deletion_policy == "Orphan":
        result.actions.append("deletionPolicy is Orphan: left the deployments and work pool in Prefect")
        result.kept_work_pool_reason = "deletionPolicy is Orphan"
        return result
    pool_name = pipeline.spec.work_pool.name
    async with PrefectApi(conn) as api:
        for deployment in await deps.find_pipeline_deployments(api, pipeline, namespace):
            await api.write("DELETE", f"/deployments/{deployment['id']}", missing_ok=True)
            result.deleted_deployments.append(deployment["name"])
            result.actions.append(f"deleted deployment {deployment['name']} ({deployment['id']})")
        pool = await pools.read_pool(api, pool_name)
        if pool is None:
            result.kept_work_pool_reason = f"work pool {pool_name} does not exist"
        elif not pools.is_managed(pool):
            result.kept_work_pool_reason = f"work pool {pool_name} was not created by eveflow"
        else:
            users = await deps.count_pool_deployments(api, pool_name)
            if users:
                result.kept_work_pool_reason = f"work pool {pool_name} is still used by {users} deployment(s)"
            else:
                await api.write("DELETE", f"/work_pools/{pool_name}", missing_ok=True)
                result.deleted_work_pool = True
                result.actions.append(f"deleted work pool {pool_name}")
        if result.kept_work_pool_reason:
            result.actions.append(f"kept the pool: {result.kept_work_pool_reason}")
    return result


async def _runs(api: PrefectApi, pipeline: EvePipeline,
                deployments: dict[str, str]) -> tuple[RunSummary | None, RunSummary | None]:
    """The last finished or running and the next scheduled run of ``deployments`` (name → id)."""
    if not deployments:
        return None, None
    base = {"deployments": {"id": {"any_": list(deployments.values())}}}
    last = await api.query("/flow_runs/filter", {
        **base,
        "flow_runs": {"state": {"type": {"any_": _FINISHED_OR_RUNNING}},
                      "parent_task_run_id": {"is_null_": True}},
        "sort": "START_TIME_DESC", "limit": 1,
    })
    upcoming = await api.query("/flow_runs/filter", {
        **base, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        "sort": "EXPECTED_START_TIME_ASC", "limit": 1,
    })
    names = {deployment_id: name for name, deployment_id in deployments.items()}
    last_run = await _summary(api, pipeline, last[0], "start_time", names) if last else None
    next_run = await _summary(api, pipeline, upcoming[0], "expected_start_time", names, artifacts=False) if upcoming else None
    return last_run, next_run


async def _summary(api: PrefectApi, pipeline: EvePipeline, run: dict[str, Any], time_field: str,
                   deployment_names: dict[str, str], artifacts: bool = True) -> RunSummary:
    summary = RunSummary(
        flow_run_id=run["id"], deployment=deployment_names.get(run.get("deployment_id") or ""),
        state=(run.get("state") or {}).get("name") or run.get("state_name"),
        time=run.get(time_field) or run.get("expected_start_time"),
    )
    if artifacts:
        found = await api.query("/artifacts/filter", {
            "artifacts": {"flow_run_id": {"any_": [run["id"]]}, "key": {"any_": [artifact_key(pipeline.name)]}},
            "limit": 5,
        })
        for artifact in found:
            totals = totals_of_artifact(artifact)
            if totals:
                summary.rows_loaded, summary.rows_quarantined = totals
                break
    return summary

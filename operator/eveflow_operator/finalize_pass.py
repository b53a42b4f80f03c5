"""The finalizer pass of one EvePipeline (the kopf delete handler in ``handlers.py`` calls it).

The worker's RBAC in other namespaces is removed by label (no garbage collector reaches it), then
the Prefect side as the spec's deletionPolicy says. Errors retry up to
``finalizer_max_retries``; past that the pipeline is released with a Warning naming what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from eveflow_etl.errors import ConfigError
from eveflow_operator.apply import delete_stale
from eveflow_operator.kube import KubeError
from eveflow_operator.labels import owner_selector
from eveflow_operator.prefect_conn import build_connection
from eveflow_operator.rbac import stale_rbac
from eveflow_operator.reconcile import PASS_STOPS, EventSpec, Reconciler, pipeline_from_body, pipeline_uid, problem_of
from eveflow_operator.status import Problem


@dataclass
class DeletePassResult:
    release: bool  # False: retry later
    events: list[EventSpec] = field(default_factory=list)
    problem: Problem | None = None


async def finalize(rec: Reconciler, body: Mapping[str, Any], retry: int) -> DeletePassResult:
    """Delete (or orphan) the Prefect objects; after the retry bound, give up and release."""
    result = await _delete_foreign_rbac(rec, body, retry)
    if result is None:
        result = await _delete_in_prefect(rec, body, retry)
    if result.release:
        # Every way out (Orphan, an invalid spec, given up): the pipeline is gone, and so
        # must be its lock and autoscaler memory (the GC's DELETED event of the worker does not).
        rec.forget(pipeline_uid(body["metadata"]))
    return result

def _given_up(rec: Reconciler, retry: int, problem: Problem, what: str, why: str, left: str) -> DeletePassResult:
    """Retry later, or (past the retry bound) release with a Warning saying what is left."""
    if retry < rec.settings.finalizer_max_retries:
        return DeletePassResult(False, [], problem)
    message = f"gave up {what} after {retry + 1} attempts ({why}); {left}"
    return DeletePassResult(True, [EventSpec("Warning", "DeleteAbandoned", message)], problem)

async def _delete_foreign_rbac(rec: Reconciler, body: Mapping[str, Any], retry: int) -> DeletePassResult | None:
    """The worker's RBAC in other namespaces (owner references cannot cross namespaces: no
    garbage collector removes these). Found by label, not from the spec, so an invalid spec
    or an old jobs namespace leaks none. None: done, go on."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    try:
        found = await rec.find_rbac(meta["name"], namespace)
        await delete_stale(rec.kube, [s for s in stale_rbac(found, None) if s[2] != namespace])
    except KubeError as exc:
        return _given_up(rec, retry, problem_of(exc), "removing the worker Roles/RoleBindings in other namespaces",
                              str(exc), f"find them with -l {owner_selector(meta['name'], namespace)} "
                              "and remove them by hand")
    return None

async def _delete_in_prefect(rec: Reconciler, body: Mapping[str, Any], retry: int) -> DeletePassResult:
    meta = body["metadata"]
    namespace = meta["namespace"]
    try:
        pipeline = pipeline_from_body(body)
    except ConfigError:
        return DeletePassResult(True, [EventSpec("Normal", "Deleted", "spec was invalid: nothing to remove in Prefect")])
    if pipeline.spec.deletion_policy == "Orphan":
        return DeletePassResult(True, [EventSpec("Normal", "Orphaned",
                                                 "deletionPolicy: Orphan -- Prefect pool and deployments kept")])
    conn = None
    try:
        async with rec.lock(pipeline_uid(meta)):
            conn = await build_connection(pipeline, rec.settings, namespace, rec.read_secret)
            result = await rec.prefect.delete(pipeline, conn, namespace=namespace)
    # A KubeError reading the Secret counts toward the bound, too: kopf would retry it forever.
    except (*PASS_STOPS, KubeError) as exc:
        problem = problem_of(exc, conn)
        return _given_up(rec, retry, problem, "removing the Prefect deployments", f"{problem.reason}: {exc}",
                              "they may remain in Prefect -- remove them by hand")
    message = "; ".join(result.actions) or "nothing to remove in Prefect"
    if result.kept_work_pool_reason:
        message += f"; kept work pool: {result.kept_work_pool_reason}"
    return DeletePassResult(True, [EventSpec("Normal", "Deleted", message[:1000])])

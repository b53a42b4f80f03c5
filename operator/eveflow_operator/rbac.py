"""The worker's ServiceAccount and, for a kubernetes pool, a RoleBinding in the jobs' namespace.

A Prefect kubernetes worker creates flow-run Jobs, follows their pods and logs, and reads events
to report failures -- exactly :data:`WORKER_RULES`, in the jobs' namespace, nothing cluster-wide.
Those rules live in one fixed ClusterRole the chart ships (``<release>-eveflow-worker``); the
operator only binds it, per jobs namespace, with a RoleBinding. Kubernetes lets the operator do
that through the ``bind`` verb on that one ClusterRole, so the operator itself holds no Job or
pod rights and cannot hand out anything else (RBAC escalation prevention).

The jobs' namespace is the pipeline's own unless a cluster admin allowed another one
(:func:`jobs_namespace_problem`): a pipeline author must get no rights outside their namespace.

A RoleBinding in another namespace than its EvePipeline cannot carry an ownerReference, so it
is labelled with the owner's name and namespace (:func:`rbac_labels`) and found by that selector
when the jobs' namespace or the pool type changes, or the EvePipeline is deleted. There its name
also carries a hash of the owner's namespace (:func:`rbac_name`): namesake pipelines of two
namespaces may share a jobs namespace.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from eveflow_etl.plan import pipeline_plan
from eveflow_etl.spec import EvePipeline

from eveflow_operator.labels import PIPELINE_NAMESPACE_LABEL, child_labels
from eveflow_operator.worker_deployment import worker_name

# The chart's worker ClusterRole holds exactly these (tests/chart compares the two).
WORKER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
]

# A label on a namespace that lets pipelines of namespace <source> run their Jobs there:
# ``jobs.eveflow.dev/<source>: "true"`` (only who may label namespaces can set it).
JOBS_FROM_LABEL_PREFIX = "jobs.eveflow.dev/"


def needs_role(pipeline: EvePipeline) -> bool:
    return pipeline.spec.work_pool.type == "kubernetes"


def build_service_account(pipeline: EvePipeline, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": worker_name(pipeline), "namespace": namespace,
                     "labels": child_labels(pipeline.name, "worker")},
        "automountServiceAccountToken": needs_role(pipeline),
    }


RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
# What the operator finds, writes and deletes. Roles are no longer created (earlier releases
# did; the runbook in docs/operations.md says how to remove those).
RBAC_KINDS = ("RoleBinding",)


def rbac_labels(pipeline: EvePipeline, namespace: str) -> dict[str, str]:
    return {**child_labels(pipeline.name, "worker"), PIPELINE_NAMESPACE_LABEL: namespace}


def rbac_name(pipeline: EvePipeline, namespace: str, target_namespace: str | None = None) -> str:
    """Name of the worker's RoleBinding in ``target_namespace``, for the pipeline in
    ``namespace``: ``<pipeline>-worker`` in the pipeline's own namespace (like its ServiceAccount),
    elsewhere ``<pipeline>-worker-<hash of namespace/pipeline>`` (a DNS label, at most 63
    characters), so namesakes from two namespaces sharing a jobs namespace get one each."""
    name = worker_name(pipeline)
    if (target_namespace or namespace) == namespace:
        return name  # unchanged from earlier releases: no churn for in-namespace bindings
    digest = hashlib.sha256(f"{namespace}/{pipeline.name}".encode()).hexdigest()[:8]
    return f"{name[:63 - 1 - len(digest)].rstrip('-')}-{digest}"


def build_role_binding(pipeline: EvePipeline, namespace: str, target_namespace: str | None = None, *,
                       cluster_role: str) -> dict[str, Any]:
    """Binds the chart's worker ClusterRole in ``target_namespace`` (where Jobs go) to the
    worker's ServiceAccount: the worker's rights exist in that one namespace only."""
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": {"name": rbac_name(pipeline, namespace, target_namespace),
                     "namespace": target_namespace or namespace,
                     "labels": rbac_labels(pipeline, namespace)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": worker_name(pipeline), "namespace": namespace}],
    }


def jobs_namespace(pipeline: EvePipeline, namespace: str) -> str:
    """Where the flow-run Jobs go: ``spec.workPool.kubernetes.namespace``, else the pipeline's own
    (the plan's ``jobs_namespace``)."""
    return pipeline_plan(pipeline, namespace).jobs_namespace


def jobs_from_label(source_namespace: str) -> str:
    return f"{JOBS_FROM_LABEL_PREFIX}{source_namespace}"


def needs_namespace_consent(pipeline: EvePipeline, namespace: str, allowed: list[str]) -> bool:
    """True when only the target namespace's label can allow the jobs namespace (it is neither
    the pipeline's own nor one the operator's settings allow for everyone)."""
    target = jobs_namespace(pipeline, namespace)
    return needs_role(pipeline) and target != namespace and target not in allowed


def jobs_namespace_problem(pipeline: EvePipeline, namespace: str, watched: list[str], allowed: list[str],
                           target_labels: Mapping[str, str] | None = None) -> str | None:
    """Why the flow-run Jobs may not go where the spec says, or None.

    The pipeline's own namespace is always allowed; another one only when it is in ``allowed``
    (the operator setting / chart value ``operator.allowedJobsNamespaces``) or its labels
    (``target_labels``; None: not read, or the namespace does not exist) carry
    ``jobs.eveflow.dev/<namespace>: "true"``. An operator limited to ``watched`` namespaces has
    no rights elsewhere at all.
    """
    target = jobs_namespace(pipeline, namespace)
    if not needs_role(pipeline) or target == namespace:
        return None
    field = "spec.workPool.kubernetes.namespace"
    if watched and target not in watched:
        return (f"{field}: {target!r} is not one of the namespaces this operator manages "
                f"({', '.join(watched)}); choose one of them, or add it to the chart's operator.watchNamespaces")
    if target in allowed or (target_labels or {}).get(jobs_from_label(namespace)) == "true":
        return None
    return (f"{field}: namespace {target!r} does not accept flow-run Jobs from namespace {namespace!r}; "
            f"remove the field (Jobs then run in {namespace!r}), or ask a cluster admin to allow it: "
            f"kubectl label namespace {target} {jobs_from_label(namespace)}=true, or the chart value "
            f"operator.allowedJobsNamespaces")


def wanted_rbac(pipeline: EvePipeline, namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the worker's RoleBinding, None when the pool needs none."""
    if not needs_role(pipeline):
        return None
    target = jobs_namespace(pipeline, namespace)
    return target, rbac_name(pipeline, namespace, target)


def stale_rbac(found: dict[str, list[dict[str, Any]]], keep: tuple[str, str] | None) -> list[tuple[str, str, str, str]]:
    """What of ``found`` (kind -> live objects of one pipeline) to delete: everything but the
    (namespace, name) still wanted, as ``(apiVersion, kind, namespace, name)`` in deletion order.
    ``found`` comes from the owner's label selector, so a binding with another owner (a
    namesake's, or one an earlier release named without the hash) is never in it."""
    stale = []
    for kind in RBAC_KINDS:
        for obj in found.get(kind) or []:
            meta = obj.get("metadata") or {}
            where = (meta.get("namespace", ""), meta.get("name", ""))
            if where != keep:
                stale.append((RBAC_API_VERSION, kind, *where))
    return sorted(set(stale), key=lambda s: (RBAC_KINDS.index(s[1]), s[2], s[3]))

"""The worker's ServiceAccount and, for a kubernetes pool, a namespaced Role + RoleBinding.

A Prefect kubernetes worker creates flow-run Jobs, follows their pods and logs, and reads events
to report failures -- exactly that, in the jobs' namespace, nothing cluster-wide.

The Role and RoleBinding live in the jobs' namespace, often not the EvePipeline's: there they
cannot carry an ownerReference, so they are labelled with the owner's name and namespace
(:func:`rbac_labels`) and found by that selector when the jobs' namespace or the pool type
changes, or the EvePipeline is deleted. There their name also carries a hash of the owner's
namespace (:func:`rbac_name`): namesake pipelines of two namespaces may share a jobs namespace.
"""

from __future__ import annotations

import hashlib
from typing import Any

from eveflow_etl.spec import EvePipeline

from eveflow_operator.labels import PIPELINE_NAMESPACE_LABEL, child_labels
from eveflow_operator.worker import worker_name

WORKER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
]


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
# Deletion order: the binding first, so no moment has a binding to a Role that is gone.
RBAC_KINDS = ("RoleBinding", "Role")


def rbac_labels(pipeline: EvePipeline, namespace: str) -> dict[str, str]:
    return {**child_labels(pipeline.name, "worker"), PIPELINE_NAMESPACE_LABEL: namespace}


def rbac_name(pipeline: EvePipeline, namespace: str, target_namespace: str | None = None) -> str:
    """Name of the worker's Role and RoleBinding in ``target_namespace``, for the pipeline in
    ``namespace``: ``<pipeline>-worker`` in the pipeline's own namespace (like its ServiceAccount),
    elsewhere ``<pipeline>-worker-<hash of namespace/pipeline>`` (a DNS label, at most 63
    characters), so namesakes from two namespaces sharing a jobs namespace get a pair each."""
    name = worker_name(pipeline)
    if (target_namespace or namespace) == namespace:
        return name  # unchanged from earlier releases: no churn for in-namespace pairs
    digest = hashlib.sha256(f"{namespace}/{pipeline.name}".encode()).hexdigest()[:8]
    return f"{name[:63 - 1 - len(digest)].rstrip('-')}-{digest}"


def build_role(pipeline: EvePipeline, namespace: str, target_namespace: str | None = None) -> dict[str, Any]:
    """The worker's Role in ``target_namespace`` (where Jobs go) for the pipeline in ``namespace``."""
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "Role",
        "metadata": {"name": rbac_name(pipeline, namespace, target_namespace),
                     "namespace": target_namespace or namespace,
                     "labels": rbac_labels(pipeline, namespace)},
        "rules": WORKER_RULES,
    }


def build_role_binding(pipeline: EvePipeline, namespace: str, target_namespace: str | None = None) -> dict[str, Any]:
    """Binds the Role in ``target_namespace`` (where Jobs go) to the worker's ServiceAccount."""
    name = rbac_name(pipeline, namespace, target_namespace)
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": target_namespace or namespace,
                     "labels": rbac_labels(pipeline, namespace)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": worker_name(pipeline), "namespace": namespace}],
    }


def jobs_namespace(pipeline: EvePipeline, namespace: str) -> str:
    k8s = pipeline.spec.work_pool.kubernetes
    return (k8s.namespace if k8s and k8s.namespace else None) or namespace


def jobs_namespace_problem(pipeline: EvePipeline, namespace: str, watched: list[str]) -> str | None:
    """Why the worker's Role cannot be placed, or None: an operator limited to ``watched``
    namespaces has no rights elsewhere (Kubernetes would answer a bare 403)."""
    target = jobs_namespace(pipeline, namespace)
    if not needs_role(pipeline) or not watched or target in watched:
        return None
    return (f"spec.workPool.kubernetes.namespace: {target!r} is not one of the namespaces this operator "
            f"manages ({', '.join(watched)}); choose one of them, or add it to the chart's "
            f"operator.watchNamespaces")


def wanted_rbac(pipeline: EvePipeline, namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the worker's Role and RoleBinding, None when the pool needs none."""
    if not needs_role(pipeline):
        return None
    target = jobs_namespace(pipeline, namespace)
    return target, rbac_name(pipeline, namespace, target)


def stale_rbac(found: dict[str, list[dict[str, Any]]], keep: tuple[str, str] | None) -> list[tuple[str, str, str, str]]:
    """What of ``found`` (kind -> live objects of one pipeline) to delete: everything but the
    (namespace, name) still wanted, as ``(apiVersion, kind, namespace, name)`` in deletion order.
    ``found`` comes from the owner's label selector, so a pair with another owner (a namesake's,
    or one an earlier release named without the hash) is never in it."""
    stale = []
    for kind in RBAC_KINDS:
        for obj in found.get(kind) or []:
            meta = obj.get("metadata") or {}
            where = (meta.get("namespace", ""), meta.get("name", ""))
            if where != keep:
                stale.append((RBAC_API_VERSION, kind, *where))
    return sorted(set(stale), key=lambda s: (RBAC_KINDS.index(s[1]), s[2], s[3]))

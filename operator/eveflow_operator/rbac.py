"""The worker's ServiceAccount and, for a kubernetes pool, a namespaced Role + RoleBinding.

A Prefect kubernetes worker creates flow-run Jobs, follows their pods and logs, and reads events
to report failures -- exactly that, in the jobs' namespace, nothing cluster-wide.
"""

from __future__ import annotations

from typing import Any

from eveflow_etl.spec import EvePipeline

from eveflow_operator.labels import child_labels
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


def build_role(pipeline: EvePipeline, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": worker_name(pipeline), "namespace": namespace,
                     "labels": child_labels(pipeline.name, "worker")},
        "rules": WORKER_RULES,
    }


def build_role_binding(pipeline: EvePipeline, namespace: str, target_namespace: str | None = None) -> dict[str, Any]:
    """Binds the Role in ``target_namespace`` (where Jobs go) to the worker's ServiceAccount."""
    name = worker_name(pipeline)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": target_namespace or namespace,
                     "labels": child_labels(pipeline.name, "worker")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def jobs_namespace(pipeline: EvePipeline, namespace: str) -> str:
    k8s = pipeline.spec.work_pool.kubernetes
    return (k8s.namespace if k8s and k8s.namespace else None) or namespace

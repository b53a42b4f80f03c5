"""All Kubernetes children of one EvePipeline, in apply order (pure)."""

from __future__ import annotations

from typing import Any

from eveflow_etl.spec import EvePipeline

from eveflow_operator.rbac import build_role_binding, build_service_account, jobs_namespace, needs_role
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.worker_deployment import build_worker_deployment


def build_children(pipeline: EvePipeline, settings: OperatorSettings, namespace: str, *,
                   autoscaled: int | None = None) -> list[dict[str, Any]]:
    """ServiceAccount, (a RoleBinding of the chart's worker ClusterRole for a kubernetes pool),
    then the worker Deployment."""
    children = [build_service_account(pipeline, namespace)]
    if needs_role(pipeline):
        children.append(build_role_binding(pipeline, namespace, jobs_namespace(pipeline, namespace),
                                           cluster_role=settings.worker_cluster_role))
    return children + [build_worker_deployment(pipeline, settings, namespace, autoscaled=autoscaled)]

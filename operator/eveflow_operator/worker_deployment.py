"""The worker Deployment of one EvePipeline: a pure builder (model + settings in, a dict out)."""

from __future__ import annotations

import copy
from typing import Any

from eveflow_etl.orchestration.pools import (
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    WRITABLE_DIRS,
)
from eveflow_etl.plan import WORKER_PORT, PipelinePlan, pipeline_plan
from eveflow_etl.spec import DEFAULT_REPLICAS, EvePipeline

from eveflow_operator.labels import child_labels, selector_labels
from eveflow_operator.settings import OperatorSettings

OBSERVER_NAMESPACES_ENV = "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"


def worker_name(pipeline: EvePipeline) -> str:
    return f"{pipeline.name}-worker"


def operator_plan(pipeline: EvePipeline, settings: OperatorSettings, namespace: str) -> PipelinePlan:
    """The pipeline's plan with the operator's defaults for an empty apiUrl and image."""
    return pipeline_plan(pipeline, namespace, default_api_url=settings.prefect_api_url,
                         default_image=settings.worker_image)


def worker_replicas(pipeline: EvePipeline, autoscaled: int | None = None) -> int:
    """0 when suspended; else the autoscaler's count (``autoscaled``, from its last decision;
    minReplicas before the first), else spec.worker.replicas (default 1)."""
    if pipeline.spec.suspend:
        return 0
    auto = pipeline.spec.worker.autoscaling
    if auto is not None:
        return auto.min_replicas if autoscaled is None else max(auto.min_replicas, min(auto.max_replicas, autoscaled))
    replicas = pipeline.spec.worker.replicas
    return DEFAULT_REPLICAS if replicas is None else replicas


def worker_command(pipeline: EvePipeline) -> list[str]:
    """``eveflow worker`` with the plan's arguments (its --limit is what the autoscaler counts on)."""
    # The operator creates the pool with its job template; a worker must not race it with defaults.
    return ["eveflow", *pipeline_plan(pipeline).worker_args, "--no-create-pool"]


# prefect-kubernetes' KubernetesWorkerSettings (api_key_secret_name/key, api_auth_string_secret_name/key).
JOB_SECRET_ENV_PREFIX = "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_"


def worker_env(pipeline: EvePipeline, plan: PipelinePlan) -> list[dict[str, Any]]:
    """PREFECT_* env; credentials only as secretKeyRef (the values never pass through here)."""
    spec = pipeline.spec
    env: list[dict[str, Any]] = [{"name": "PREFECT_API_URL", "value": plan.prefect_api_url}]
    ref = plan.prefect_credential_ref
    if ref is not None:
        env.append({"name": plan.prefect_credential_env,
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    if spec.work_pool.type == "kubernetes":
        env.append({"name": OBSERVER_NAMESPACES_ENV, "value": plan.jobs_namespace})
        # Without these the kubernetes worker copies its own key / auth string into every Job's
        # env as a literal value; with them the Jobs reference the same Secret key instead.
        if ref is not None:
            prefix = f"{JOB_SECRET_ENV_PREFIX}{plan.prefect_credential_env.removeprefix('PREFECT_')}"
            env += [{"name": f"{prefix}_SECRET_NAME", "value": ref.name},
                    {"name": f"{prefix}_SECRET_KEY", "value": ref.key}]
    env += [
        {"name": "EVEFLOW_DESTINATION_PROFILE", "value": spec.destination.profile},
        {"name": "EVEFLOW_PIPELINE", "value": pipeline.name},
    ]
    return env


def _resources(pipeline: EvePipeline) -> dict[str, dict[str, str]]:
    resources = pipeline.spec.worker.resources.model_dump(exclude_none=True)
    return {k: v for k, v in resources.items() if v}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def build_worker_deployment(pipeline: EvePipeline, settings: OperatorSettings, namespace: str, *,
                            autoscaled: int | None = None) -> dict[str, Any]:
    """The worker ``apps/v1`` Deployment (owner reference added by the caller via ``kopf.adopt``);
    ``autoscaled`` is the autoscaler's last count for a pipeline with worker.autoscaling."""
    spec = pipeline.spec
    plan = operator_plan(pipeline, settings, namespace)
    container: dict[str, Any] = {
        "name": "worker",
        "image": plan.worker_image,
        "imagePullPolicy": settings.worker_image_pull_policy,
        "command": worker_command(pipeline),
        "env": worker_env(pipeline, plan),
        "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "startupProbe": _probe("/health", 5, 24),
        "livenessProbe": _probe("/health", 20, 3),
        "readinessProbe": _probe("/health", 10, 2),
        "resources": _resources(pipeline),
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": [{"name": name, "mountPath": path} for name, _, path in WRITABLE_DIRS],
    }
    if spec.destination.secret_ref:
        container["envFrom"] = [{"secretRef": {"name": spec.destination.secret_ref}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": worker_name(pipeline),
            "namespace": namespace,
            "labels": child_labels(pipeline.name, "worker"),
        },
        "spec": {
            "replicas": worker_replicas(pipeline, autoscaled),
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(pipeline.name, "worker")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": child_labels(pipeline.name, "worker"),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(WORKER_PORT)},
                },
                "spec": {
                    "serviceAccountName": worker_name(pipeline),
                    # Only a kubernetes worker talks to the API (to create Jobs).
                    "automountServiceAccountToken": spec.work_pool.type == "kubernetes",
                    "terminationGracePeriodSeconds": 60,
                    # Pod Security "restricted" (the image's user is 10001; enforced, not assumed).
                    "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
                    "containers": [container],
                    "volumes": [{"name": name, "emptyDir": {"sizeLimit": size}} for name, size, _ in WRITABLE_DIRS],
                },
            },
        },
    }

"""The worker Deployment of one EvePipeline: a pure builder (model + settings in, a dict out)."""

from __future__ import annotations

import copy
from typing import Any

from eveflow_etl.orchestration.pools import (
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    WRITABLE_DIRS,
)
from eveflow_etl.spec import DEFAULT_REPLICAS, EvePipeline

from eveflow_operator.labels import child_labels, selector_labels
from eveflow_operator.settings import OperatorSettings

HEALTH_PORT = 8080  # `eveflow worker --port`: /health and /metrics
OBSERVER_NAMESPACES_ENV = "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"


def worker_name(pipeline: EvePipeline) -> str:
    return f"{pipeline.name}-worker"


def prefect_api_url(pipeline: EvePipeline, settings: OperatorSettings) -> str:
    return pipeline.spec.prefect.api_url or settings.prefect_api_url


def worker_queues(pipeline: EvePipeline) -> list[str]:
    """The queues the worker polls: spec.worker.queues, else all of the pool's (in order)."""
    return list(pipeline.spec.worker.queues) or [q.name for q in pipeline.spec.work_pool.queues]


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
    pool = pipeline.spec.work_pool
    command = ["eveflow", "worker", "--pool", pool.name, "--type", pool.type]
    for queue in worker_queues(pipeline):
        command += ["--queue", queue]
    if pipeline.spec.worker.autoscaling is not None:
        # What the autoscaler counts on: a replica takes at most runsPerReplica runs at a time.
        command += ["--limit", str(pipeline.spec.worker.autoscaling.runs_per_replica)]
    # The operator creates the pool with its job template; a worker must not race it with defaults.
    return command + ["--port", str(HEALTH_PORT), "--no-create-pool"]


# prefect-kubernetes' KubernetesWorkerSettings (api_key_secret_name/key, api_auth_string_secret_name/key).
JOB_SECRET_ENV_PREFIX = "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_"


def worker_env(pipeline: EvePipeline, settings: OperatorSettings, namespace: str) -> list[dict[str, Any]]:
    """PREFECT_* env; credentials only as secretKeyRef (the values never pass through here)."""
    spec = pipeline.spec
    env: list[dict[str, Any]] = [{"name": "PREFECT_API_URL", "value": prefect_api_url(pipeline, settings)}]
    for var, ref in (("PREFECT_API_KEY", spec.prefect.api_key_secret_ref),
                     ("PREFECT_API_AUTH_STRING", spec.prefect.auth_string_secret_ref)):
        if ref is not None:
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    if spec.work_pool.type == "kubernetes":
        jobs_namespace = (spec.work_pool.kubernetes and spec.work_pool.kubernetes.namespace) or namespace
        env.append({"name": OBSERVER_NAMESPACES_ENV, "value": jobs_namespace})
        # Without these the kubernetes worker copies its own key / auth string into every Job's
        # env as a literal value; with them the Jobs reference the same Secret key instead.
        for prefix, ref in (("API_KEY", spec.prefect.api_key_secret_ref),
                            ("API_AUTH_STRING", spec.prefect.auth_string_secret_ref)):
            if ref is not None:
                env += [{"name": f"{JOB_SECRET_ENV_PREFIX}{prefix}_SECRET_NAME", "value": ref.name},
                        {"name": f"{JOB_SECRET_ENV_PREFIX}{prefix}_SECRET_KEY", "value": ref.key}]
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
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.worker.image or settings.worker_image,
        "imagePullPolicy": settings.worker_image_pull_policy,
        "command": worker_command(pipeline),
        "env": worker_env(pipeline, settings, namespace),
        "ports": [{"name": "http", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
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
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(HEALTH_PORT)},
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

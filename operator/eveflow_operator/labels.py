"""The labels every child object carries, from one helper."""

from __future__ import annotations

from eveflow_etl import __version__

PART_OF = "eveflow"
MANAGED_BY = "eveflow-operator"
PIPELINE_LABEL = "eveflow.dev/pipeline"
# Children in another namespace than their EvePipeline carry no ownerReference; this label, with
# PIPELINE_LABEL, is how the operator finds them again (names alone repeat across namespaces).
PIPELINE_NAMESPACE_LABEL = "eveflow.dev/pipeline-namespace"

# Every EvePipeline's worker Deployment, and nothing else: what the operator watches Deployments by.
WORKER_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "worker"}
WORKER_SELECTOR = ",".join(f"{k}={v}" for k, v in WORKER_LABELS.items())


def child_labels(pipeline: str, component: str) -> dict[str, str]:
    """``app.kubernetes.io/*`` labels of a child of EvePipeline ``pipeline``.

    ``selector_labels`` is the stable subset (a Deployment's selector may never change).
    """
    return {
        **selector_labels(pipeline, component),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": __version__,
    }


def selector_labels(pipeline: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "eveflow-worker" if component == "worker" else f"eveflow-{component}",
        "app.kubernetes.io/instance": pipeline,
        "app.kubernetes.io/component": component,
        PIPELINE_LABEL: pipeline,
    }


def owner_selector(pipeline: str, namespace: str) -> str:
    """Label selector of the children of EvePipeline ``namespace/pipeline`` that carry
    :data:`PIPELINE_NAMESPACE_LABEL` (the worker's Role and RoleBinding)."""
    return f"{PIPELINE_LABEL}={pipeline},{PIPELINE_NAMESPACE_LABEL}={namespace}"

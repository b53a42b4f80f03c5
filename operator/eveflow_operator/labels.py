"""The labels every child object carries, from one helper."""

from __future__ import annotations

from eveflow_etl import __version__

PART_OF = "eveflow"
MANAGED_BY = "eveflow-operator"
PIPELINE_LABEL = "eveflow.dev/pipeline"


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

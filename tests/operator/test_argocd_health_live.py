"""The Argo CD health check on EvePipelines as the API server hands them to Argo CD: each stage of a
pipeline's life, written by the real operator and read back with kubectl, evaluated by
tests/tools/argocd-health (gopher-lua, Argo CD's globals and libraries)."""

from __future__ import annotations

import pytest

from .e2e import apply, example, mark_available, wait_condition

pytestmark = [pytest.mark.k8s, pytest.mark.prefect]


def test_health_at_each_stage(kube, ns, argo_health) -> None:
    name = f"argo-{ns}"
    doc = example(cr=name, pool=f"p-{ns}")

    # Progressing: synced to Prefect, but no node takes the worker's pod yet.
    kube.configure(mark_deployments_available=False)
    try:
        apply(kube, ns, doc)
        cr = wait_condition(kube, ns, name, status="False", reason="WorkerUnavailable", timeout=60)
        health = argo_health(cr)
        assert health["status"] == "Progressing", health
        assert "WorkerUnavailable" in health["message"]

        # Healthy: the pod runs, the Deployment controller marks the worker Available.
        mark_available(kube, ns, f"{name}-worker")
    finally:
        kube.configure(mark_deployments_available=True)
    cr = wait_condition(kube, ns, name, timeout=60)
    assert argo_health(cr)["status"] == "Healthy"

    # Suspended, once the operator has observed spec.suspend.
    apply(kube, ns, {**doc, "spec": {**doc["spec"], "suspend": True}})
    cr = wait_condition(kube, ns, name, reason="Suspended", generation=2, timeout=60)
    assert argo_health(cr)["status"] == "Suspended"

    # Degraded: a Secret the user must create.
    broken = f"argo-nosecret-{ns}"
    bad = example(cr=broken, pool=f"p2-{ns}")
    bad["spec"]["destination"]["secretRef"] = "does-not-exist"
    apply(kube, ns, bad)
    cr = wait_condition(kube, ns, broken, status="False", reason="SecretNotFound", timeout=60)
    health = argo_health(cr)
    assert health["status"] == "Degraded", health
    assert "does-not-exist" in health["message"]

"""The finalizer pass: children the garbage collector cannot reach are removed by the operator."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from eveflow_operator.kube import KubeApi, KubeError
from eveflow_operator.finalize_pass import finalize
from eveflow_operator.reconcile import Reconciler
from eveflow_operator.settings import OperatorSettings

from .fakes import FakePrefect

ROOT = Path(__file__).resolve().parents[2]


class FailingKube:
    """An API server that refuses (RBAC errors the emulator does not produce): everything, or
    every call but lists (which then find nothing)."""

    def __init__(self, status: int, lists: bool = False) -> None:
        self.status = status
        self.lists = lists

    async def list(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        if self.lists:
            return []
        raise KubeError(self.status, "forbidden")

    async def get(self, path: str) -> dict[str, Any] | None:
        raise KubeError(self.status, "forbidden")

    async def delete(self, path: str) -> bool:
        raise KubeError(self.status, "forbidden")


def _body(jobs_namespace: str | None, policy: str = "Orphan", namespace: str = "ns") -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "pipeline-kubernetes.yaml").read_text())
    doc["spec"]["deletionPolicy"] = policy
    if jobs_namespace:
        doc["spec"]["workPool"]["kubernetes"]["namespace"] = jobs_namespace
    doc["metadata"] = {"name": "order-books", "namespace": namespace, "uid": "u-1", "generation": 1}
    return doc


def _create_rbac(kube, owner_namespace: str, where: str, name: str = "order-books") -> None:
    """The worker's RoleBinding (of the chart's worker ClusterRole) for pipeline owner_namespace/name."""
    labels = {"eveflow.dev/pipeline": name, "eveflow.dev/pipeline-namespace": owner_namespace}
    body = {"metadata": {"name": f"{name}-worker", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "eveflow-worker"}}
    status, out = kube.api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{where}/rolebindings", body)
    assert status == 201, out


def _rbac_left(kube, namespace: str) -> set[str]:
    return {f"{kind}/{o['metadata']['name']}" for plural, kind in (("roles", "Role"), ("rolebindings", "RoleBinding"))
            for o in kube.objects(plural, "rbac.authorization.k8s.io", namespace)}


def _finalize(kube, body: dict[str, Any], retry: int = 0, **settings: Any):
    async def run():
        api = KubeApi(kube.url, {}, kube.ssl_context())
        try:
            return await finalize(Reconciler(OperatorSettings(**settings), api, FakePrefect()), body, retry)
        finally:
            await api.close()
    return asyncio.run(run())


@pytest.mark.k8s
def test_delete_removes_role_and_binding_wherever_the_label_says(kube) -> None:
    # Owner references cannot cross namespaces: nothing garbage-collects these. The spec names
    # "jobs" now, but an earlier jobs namespace ("old") holds a pair too; a namesake pipeline in
    # another namespace has its own pair in "jobs" that must stay.
    ns, jobs, old, other = (f"f-{uuid.uuid4().hex[:6]}-{n}" for n in ("ns", "jobs", "old", "other"))
    for n in (ns, jobs, old, other):
        kube.create_namespace(n)
    _create_rbac(kube, ns, jobs)
    _create_rbac(kube, ns, old)
    _create_rbac(kube, other, other)
    result = _finalize(kube, _body(jobs, namespace=ns))
    assert result.release
    assert _rbac_left(kube, jobs) == set() and _rbac_left(kube, old) == set()
    assert _rbac_left(kube, other) == {"RoleBinding/order-books-worker"}


@pytest.mark.k8s
def test_delete_leaves_same_namespace_children_to_the_garbage_collector(kube, kube_namespace) -> None:
    _create_rbac(kube, kube_namespace, kube_namespace)
    result = _finalize(kube, _body(None, namespace=kube_namespace))
    assert result.release
    assert _rbac_left(kube, kube_namespace) == {"RoleBinding/order-books-worker"}


@pytest.mark.k8s
def test_delete_with_an_invalid_spec_still_removes_the_role(kube) -> None:
    ns, jobs = (f"f-{uuid.uuid4().hex[:6]}-{n}" for n in ("ns", "jobs"))
    for n in (ns, jobs):
        kube.create_namespace(n)
    _create_rbac(kube, ns, jobs)
    body = _body(jobs, namespace=ns)
    body["spec"]["schedules"][0]["cron"] = "not a cron"
    assert _finalize(kube, body).release
    assert _rbac_left(kube, jobs) == set()


def test_delete_rbac_errors_retry_then_release() -> None:
    settings = OperatorSettings(finalizer_max_retries=2)
    kube = FailingKube(403)
    first = asyncio.run(finalize(Reconciler(settings, kube, FakePrefect()), _body("jobs"), 0))  # type: ignore[arg-type]
    assert not first.release and first.problem is not None
    last = asyncio.run(finalize(Reconciler(settings, kube, FakePrefect()), _body("jobs"), 2))  # type: ignore[arg-type]
    assert last.release and any(e.type == "Warning" for e in last.events)


def test_delete_secret_read_errors_count_toward_the_retry_bound() -> None:
    # A Kubernetes error reading the Prefect Secret (403, 5xx) must not block deletion forever.
    body = _body(None, policy="Delete")
    body["spec"]["prefect"] = {"mode": "selfHosted", "authStringSecretRef": {"name": "prefect-auth", "key": "auth"}}
    settings = OperatorSettings(finalizer_max_retries=1)
    kube = FailingKube(403, lists=True)
    first = asyncio.run(finalize(Reconciler(settings, kube, FakePrefect()), body, 0))  # type: ignore[arg-type]
    assert not first.release and first.problem is not None
    last = asyncio.run(finalize(Reconciler(settings, kube, FakePrefect()), body, 1))  # type: ignore[arg-type]
    assert last.release and any(e.reason == "DeleteAbandoned" for e in last.events)


def test_every_released_delete_forgets_the_pipelines_lock() -> None:
    # Orphan and an invalid spec release before any Prefect call; the worker's DELETED event
    # (garbage collector) never reaches the Reconciler: nothing else would drop these.
    invalid = _body(None)
    invalid["spec"]["schedules"][0]["cron"] = "not a cron"
    for body in (_body(None, policy="Orphan"), invalid):
        reconciler = Reconciler(OperatorSettings(), FailingKube(403, lists=True), FakePrefect())  # type: ignore[arg-type]
        reconciler.lock("u-1")
        assert asyncio.run(finalize(reconciler, body, 0)).release
        assert "u-1" not in reconciler._locks

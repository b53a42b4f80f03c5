"""The finalizer pass: children the garbage collector cannot reach are removed by the operator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from eveflow_operator.kube import KubeError
from eveflow_operator.reconcile import Reconciler
from eveflow_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]


class FakeKube:
    """Objects by API path; records deletes."""

    def __init__(self, objects: dict[str, dict[str, Any]], fail: int | None = None) -> None:
        self.objects = objects
        self.deleted: list[str] = []
        self.fail = fail

    async def get(self, path: str) -> dict[str, Any] | None:
        if self.fail:
            raise KubeError(self.fail, "forbidden")
        return self.objects.get(path)

    async def delete(self, path: str) -> bool:
        if self.fail:
            raise KubeError(self.fail, "forbidden")
        self.deleted.append(path)
        return self.objects.pop(path, None) is not None


def _body(jobs_namespace: str | None, policy: str = "Orphan") -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "pipeline-kubernetes.yaml").read_text())
    doc["spec"]["deletionPolicy"] = policy
    if jobs_namespace:
        doc["spec"]["workPool"]["kubernetes"]["namespace"] = jobs_namespace
    doc["metadata"] = {"name": "order-books", "namespace": "ns", "uid": "u-1", "generation": 1}
    return doc


RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/{plural}/order-books-worker"


def test_delete_removes_role_and_binding_in_another_jobs_namespace() -> None:
    # Owner references cannot cross namespaces: nothing garbage-collects these.
    paths = [RBAC.format(ns="jobs", plural=p) for p in ("roles", "rolebindings")]
    kube = FakeKube({p: {"metadata": {}} for p in paths})
    result = asyncio.run(Reconciler(OperatorSettings(), kube).finalize(_body("jobs"), 0))  # type: ignore[arg-type]
    assert result.release
    assert sorted(kube.deleted) == sorted(paths) and not kube.objects


def test_delete_leaves_same_namespace_children_to_the_garbage_collector() -> None:
    kube = FakeKube({})
    result = asyncio.run(Reconciler(OperatorSettings(), kube).finalize(_body(None), 0))  # type: ignore[arg-type]
    assert result.release and kube.deleted == []


def test_delete_rbac_errors_retry_then_release() -> None:
    settings = OperatorSettings(finalizer_max_retries=2)
    kube = FakeKube({}, fail=403)
    first = asyncio.run(Reconciler(settings, kube).finalize(_body("jobs"), 0))  # type: ignore[arg-type]
    assert not first.release and first.problem is not None
    last = asyncio.run(Reconciler(settings, kube).finalize(_body("jobs"), 2))  # type: ignore[arg-type]
    assert last.release and any(e.type == "Warning" for e in last.events)


def test_delete_secret_read_errors_count_toward_the_retry_bound() -> None:
    # A Kubernetes error reading the Prefect Secret (403, 5xx) must not block deletion forever.
    body = _body(None, policy="Delete")
    body["spec"]["prefect"] = {"mode": "selfHosted", "authStringSecretRef": {"name": "prefect-auth", "key": "auth"}}
    settings = OperatorSettings(finalizer_max_retries=1)
    kube = FakeKube({}, fail=403)
    first = asyncio.run(Reconciler(settings, kube).finalize(body, 0))  # type: ignore[arg-type]
    assert not first.release and first.problem is not None
    last = asyncio.run(Reconciler(settings, kube).finalize(body, 1))  # type: ignore[arg-type]
    assert last.release and any(e.reason == "DeleteAbandoned" for e in last.events)

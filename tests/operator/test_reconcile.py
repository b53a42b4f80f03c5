"""Reconcile passes driven directly (no kopf), Prefect stubbed: what they do to the cluster (the
API emulator) and what they report for a spec that slipped past an older CRD."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import yaml
from eveflow_operator import status as st
from eveflow_operator.kube import KubeApi
from eveflow_operator.rbac import rbac_name
from eveflow_operator.reconcile import Reconciler, pipeline_from_body
from eveflow_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
RBAC = "rbac.authorization.k8s.io"
NAME = "order-books"


def _body(namespace: str, jobs: str | None = None) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "pipeline-kubernetes.yaml").read_text())
    if jobs:
        doc["spec"]["workPool"]["kubernetes"]["namespace"] = jobs
    doc["metadata"] = {"name": NAME, "namespace": namespace, "uid": f"uid-{namespace}", "generation": 1}
    return doc


@pytest.fixture
def no_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Prefect sync is in sync already; deletes find nothing."""
    from eveflow_etl.orchestration import sync
    from eveflow_etl.orchestration.types import DeleteResult, SyncResult

    async def in_sync(pipeline, conn, *, namespace: str) -> SyncResult:
        return SyncResult(work_pool_name=pipeline.spec.work_pool.name, spec_hash="h")

    async def nothing_to_delete(pipeline, conn, *, namespace: str) -> DeleteResult:
        return DeleteResult()

    monkeypatch.setattr(sync, "sync_pipeline", in_sync)
    monkeypatch.setattr(sync, "delete_pipeline", nothing_to_delete)


def _drive(kube, step: Callable[[Reconciler], Awaitable[Any]], settings: OperatorSettings | None = None) -> Any:
    async def run():
        api = KubeApi(kube.url, {}, kube.ssl_context())
        try:
            return await step(Reconciler(settings or OperatorSettings(), api))
        finally:
            await api.close()
    return asyncio.run(run())


def _pairs(kube, namespace: str) -> dict[str, dict[str, Any]]:
    """Kind/name -> live Role or RoleBinding in ``namespace``."""
    return {f"{kind}/{o['metadata']['name']}": o for plural, kind in (("roles", "Role"), ("rolebindings", "RoleBinding"))
            for o in kube.objects(plural, RBAC, namespace)}


def _create_old_pair(kube, owner_namespace: str, jobs: str) -> None:
    """The Role + RoleBinding an earlier release created in a shared jobs namespace: named
    <pipeline>-worker (releases since bind the chart's ClusterRole instead, and leave Roles alone)."""
    labels = {"eveflow.dev/pipeline": NAME, "eveflow.dev/pipeline-namespace": owner_namespace}
    name = f"{NAME}-worker"
    role = {"metadata": {"name": name, "labels": labels}, "rules": []}
    binding = {"metadata": {"name": name, "labels": labels},
               "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner_namespace}]}
    for plural, body in (("roles", role), ("rolebindings", binding)):
        status, out = kube.api("POST", f"/apis/{RBAC}/v1/namespaces/{jobs}/{plural}", body)
        assert status == 201, out


@pytest.mark.k8s
def test_namesakes_sharing_a_jobs_namespace_get_a_binding_each(kube, no_prefect) -> None:
    ns1, ns2, jobs = (f"r-{uuid.uuid4().hex[:6]}-{n}" for n in ("ns1", "ns2", "jobs"))
    for n in (ns1, ns2, jobs):
        kube.create_namespace(n)
    for n in (ns1, ns2):
        secret = {"metadata": {"name": "eveflow-postgres"}, "stringData": {"PGHOST": "db"}}
        assert kube.api("POST", f"/api/v1/namespaces/{n}/secrets", secret)[0] == 201
    # Upgrade from a release that named both pairs <pipeline>-worker: ns1's pass wrote it last.
    _create_old_pair(kube, ns1, jobs)
    old = {f"Role/{NAME}-worker", f"RoleBinding/{NAME}-worker"}
    bodies = {ns: _body(ns, jobs) for ns in (ns1, ns2)}
    names = {ns: rbac_name(pipeline_from_body(bodies[ns]), ns, jobs) for ns in (ns1, ns2)}
    allowed = OperatorSettings(allowed_jobs_namespaces=[jobs])

    first2 = _drive(kube, lambda r: r.reconcile(bodies[ns2]), allowed)
    assert first2.problem is None, first2.problem
    assert old <= set(_pairs(kube, jobs)), "ns2's pass removed a pair labelled as ns1's"
    first1 = _drive(kube, lambda r: r.reconcile(bodies[ns1]), allowed)
    assert first1.problem is None, first1.problem
    assert any(f"RoleBinding/{NAME}-worker in {jobs}" in e.message for e in first1.events), first1.events

    def check() -> None:
        live = _pairs(kube, jobs)
        # The old Role is left (the operator holds no Role rights; the runbook removes them).
        assert set(live) == {f"RoleBinding/{names[ns]}" for ns in (ns1, ns2)} | {f"Role/{NAME}-worker"}
        for ns in (ns1, ns2):
            binding = live[f"RoleBinding/{names[ns]}"]
            assert binding["roleRef"] == {"apiGroup": RBAC, "kind": "ClusterRole", "name": "eveflow-worker"}
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{NAME}-worker", "namespace": ns}]
            assert binding["metadata"]["labels"]["eveflow.dev/pipeline-namespace"] == ns

    check()
    # Further passes of both agree with each other: nothing rewritten, nothing deleted.
    for ns in (ns1, ns2, ns1):
        again = _drive(kube, lambda r, ns=ns: r.reconcile(bodies[ns]), allowed)
        assert again.problem is None and not [e for e in again.events if e.reason == "Applied"], again.events
    check()

    # Deleting ns1's pipeline leaves ns2's pair, still bound to ns2's worker.
    assert _drive(kube, lambda r: r.finalize(bodies[ns1], 0), allowed).release
    assert set(_pairs(kube, jobs)) == {f"RoleBinding/{names[ns2]}", f"Role/{NAME}-worker"}
    binding = _pairs(kube, jobs)[f"RoleBinding/{names[ns2]}"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{NAME}-worker", "namespace": ns2}]


def test_credentials_in_the_prefect_url_past_an_older_crd_are_an_invalid_spec() -> None:
    # An EvePipeline stored before the CRD had the rule: the pass stops before writing anything
    # (no Kubernetes client is even given), and the status never shows the password.
    body = _body("ns")
    body["spec"]["prefect"] = {"apiUrl": "https://admin:s3cret@prefect.example.org/api"}
    result = asyncio.run(Reconciler(OperatorSettings(), None).reconcile(body))  # type: ignore[arg-type]
    assert result.problem is not None and result.problem.reason == st.INVALID_SPEC and result.permanent
    ready = st.get_condition(result.status, st.READY)
    assert ready["status"] == "False" and ready["reason"] == st.INVALID_SPEC
    assert "spec.prefect.apiUrl" in ready["message"] and "authStringSecretRef" in ready["message"]
    assert "s3cret" not in str(result.status) and all("s3cret" not in e.message for e in result.events)


def test_a_jobs_namespace_outside_the_watched_ones_is_an_invalid_spec_naming_both(monkeypatch) -> None:
    # A namespaced operator has no rights in other namespaces: the Role there would fail with a bare
    # 403 on every pass. The pass stops before Prefect or Kubernetes (neither client is usable).
    from eveflow_etl.orchestration import sync

    async def must_not_sync(*_: Any, **__: Any) -> None:
        raise AssertionError("synced a pipeline whose worker Role cannot be placed")

    monkeypatch.setattr(sync, "sync_pipeline", must_not_sync)
    settings = OperatorSettings(namespaces=["team-a", "team-b"])
    result = asyncio.run(Reconciler(settings, None).reconcile(_body("team-a", jobs="flow-jobs")))  # type: ignore[arg-type]
    assert result.problem is not None and result.problem.reason == st.INVALID_SPEC and result.permanent
    message = st.get_condition(result.status, st.READY)["message"]
    assert "spec.workPool.kubernetes.namespace" in message and "'flow-jobs'" in message
    assert "team-a, team-b" in message and "operator.watchNamespaces" in message
    # Listing it as allowed does not help: a namespaced operator has no rights there at all.
    settings = OperatorSettings(namespaces=["team-a", "team-b"], allowed_jobs_namespaces=["flow-jobs"])
    result = asyncio.run(Reconciler(settings, None).reconcile(_body("team-a", jobs="flow-jobs")))  # type: ignore[arg-type]
    assert result.problem is not None and "operator.watchNamespaces" in st.get_condition(result.status, st.READY)["message"]

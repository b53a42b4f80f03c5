"""Reconcile passes driven directly (no kopf) against the API server, Prefect faked: what they do
to the cluster. (Every branch of a pass, on fakes of both sides: test_pass.py.)"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import yaml
from eveflow_operator.kube import KubeApi
from eveflow_operator.rbac import rbac_name
from eveflow_operator.finalize_pass import finalize
from eveflow_operator.reconcile import Reconciler, pipeline_from_body
from eveflow_operator.settings import OperatorSettings

from .fakes import FakePrefect

ROOT = Path(__file__).resolve().parents[2]
RBAC = "rbac.authorization.k8s.io"
NAME = "order-books"


def _body(namespace: str, jobs: str | None = None) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "examples" / "pipeline-kubernetes.yaml").read_text())
    if jobs:
        doc["spec"]["workPool"]["kubernetes"]["namespace"] = jobs
    doc["metadata"] = {"name": NAME, "namespace": namespace, "uid": f"uid-{namespace}", "generation": 1}
    return doc


def _stored(kube, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` created in the API server: its children's ownerReferences name a real owner (the
    garbage collector deletes children of an owner that does not exist)."""
    kube.kubectl("apply", "-f", str(ROOT / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "crd/evepipelines.eveflow.dev", "--timeout=60s")
    meta = body["metadata"]
    doc = {**body, "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
    path = f"/apis/eveflow.dev/v1alpha1/namespaces/{meta['namespace']}/evepipelines"
    status, out = kube.api("POST", path, doc)
    if status == 429:  # a fresh CRD's storage still initialising
        status, out = kube.wait_for(lambda: (r := kube.api("POST", path, doc))[0] != 429 and r,
                                    what="the EvePipeline stored")
    assert status == 201, out
    return out


def _drive(kube, step: Callable[[Reconciler], Awaitable[Any]], settings: OperatorSettings | None = None) -> Any:
    async def run():
        api = KubeApi(kube.url, {}, kube.ssl_context())
        try:
            return await step(Reconciler(settings or OperatorSettings(), api, FakePrefect()))
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
def test_namesakes_sharing_a_jobs_namespace_get_a_binding_each(kube) -> None:
    ns1, ns2, jobs = (f"r-{uuid.uuid4().hex[:6]}-{n}" for n in ("ns1", "ns2", "jobs"))
    for n in (ns1, ns2, jobs):
        kube.create_namespace(n)
    for n in (ns1, ns2):
        secret = {"metadata": {"name": "eveflow-postgres"}, "stringData": {"PGHOST": "db"}}
        assert kube.api("POST", f"/api/v1/namespaces/{n}/secrets", secret)[0] == 201
    # Upgrade from a release that named both pairs <pipeline>-worker: ns1's pass wrote it last.
    _create_old_pair(kube, ns1, jobs)
    old = {f"Role/{NAME}-worker", f"RoleBinding/{NAME}-worker"}
    bodies = {ns: _stored(kube, _body(ns, jobs)) for ns in (ns1, ns2)}
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
    assert _drive(kube, lambda r: finalize(r, bodies[ns1], 0), allowed).release
    assert set(_pairs(kube, jobs)) == {f"RoleBinding/{names[ns2]}", f"Role/{NAME}-worker"}
    binding = _pairs(kube, jobs)[f"RoleBinding/{names[ns2]}"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{NAME}-worker", "namespace": ns2}]

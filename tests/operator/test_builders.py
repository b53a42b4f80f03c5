"""Pure builders: worker Deployment, ServiceAccount, Role/RoleBinding, kopf argv, settings."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from eveflow_etl.spec import parse_pipeline

from eveflow_operator.apply import contains, owned
from eveflow_operator.children import build_children
from eveflow_operator.labels import owner_selector
from eveflow_operator.rbac import (
    WORKER_RULES,
    build_role_binding,
    build_service_account,
    rbac_name,
    stale_rbac,
)
from eveflow_operator.entrypoint import kopf_options
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.worker_deployment import OBSERVER_NAMESPACES_ENV, build_worker_deployment

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = OperatorSettings(worker_image="example.org/eveflow:1.2.3", prefect_api_url="http://prefect:4200/api")


def _doc(name: str = "pipeline.yaml") -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def _pipeline(name: str = "pipeline.yaml", **spec_changes):
    doc = _doc(name)
    doc["spec"].update(spec_changes)
    return parse_pipeline(doc)


def _container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_worker_deployment_shape() -> None:
    dep = build_worker_deployment(_pipeline(), SETTINGS, "ns1")
    assert dep["metadata"] == {
        "name": "market-history-worker", "namespace": "ns1",
        "labels": dep["spec"]["template"]["metadata"]["labels"],
    }
    labels = dep["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "eveflow-operator"
    assert labels["app.kubernetes.io/instance"] == "market-history"
    assert set(dep["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
    assert dep["spec"]["replicas"] == 1
    c = _container(dep)
    assert c["image"] == "example.org/eveflow:1.2.3"
    assert c["command"] == ["eveflow", "worker", "--pool", "eveflow-process", "--type", "process",
                            "--queue", "default", "--queue", "high-memory", "--port", "8080", "--no-create-pool"]
    env = {e["name"]: e for e in c["env"]}
    assert env["PREFECT_API_URL"]["value"] == "http://prefect:4200/api"
    assert OBSERVER_NAMESPACES_ENV not in env
    assert c["envFrom"] == [{"secretRef": {"name": "eveflow-postgres"}}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "market-history-worker"
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_suspend_scales_to_zero_and_image_override() -> None:
    dep = build_worker_deployment(_pipeline(suspend=True, worker={"replicas": 3, "image": "x/y:2"}), SETTINGS, "n")
    assert dep["spec"]["replicas"] == 0
    assert _container(dep)["image"] == "x/y:2"


def test_secret_values_never_literal() -> None:
    doc = _doc()
    doc["spec"]["prefect"] = {"mode": "selfHosted", "apiUrl": "https://p.example/api",
                              "authStringSecretRef": {"name": "prefect-auth", "key": "auth"}}
    dep = build_worker_deployment(parse_pipeline(doc), SETTINGS, "n")
    env = {e["name"]: e for e in _container(dep)["env"]}
    assert env["PREFECT_API_AUTH_STRING"] == {
        "name": "PREFECT_API_AUTH_STRING", "valueFrom": {"secretKeyRef": {"name": "prefect-auth", "key": "auth"}}}
    assert env["PREFECT_API_URL"]["value"] == "https://p.example/api"
    # Only names of Secrets: no env var carries a value that looks like a credential.
    for e in _container(dep)["env"]:
        assert "valueFrom" in e or e["name"] in {"PREFECT_API_URL", "EVEFLOW_DESTINATION_PROFILE",
                                                 "EVEFLOW_PIPELINE", OBSERVER_NAMESPACES_ENV}


def test_cloud_api_key_from_secret() -> None:
    doc = _doc()
    doc["spec"]["prefect"] = {"mode": "cloud", "apiUrl": "https://api.prefect.cloud/api/accounts/a/workspaces/w",
                              "apiKeySecretRef": {"name": "prefect-cloud", "key": "key"}}
    env = {e["name"]: e for e in _container(build_worker_deployment(parse_pipeline(doc), SETTINGS, "n"))["env"]}
    assert env["PREFECT_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "prefect-cloud", "key": "key"}


def test_kubernetes_pool_jobs_reference_the_prefect_secret_instead_of_copying_the_key() -> None:
    doc = _doc("pipeline-kubernetes.yaml")
    doc["spec"]["prefect"] = {"mode": "cloud", "apiUrl": "https://api.prefect.cloud/api/accounts/a/workspaces/w",
                              "apiKeySecretRef": {"name": "prefect-cloud", "key": "key"}}
    env = {e["name"]: e for e in _container(build_worker_deployment(parse_pipeline(doc), SETTINGS, "n"))["env"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_KEY_SECRET_NAME"]["value"] == "prefect-cloud"
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_KEY_SECRET_KEY"]["value"] == "key"
    # prefect-kubernetes reads exactly these names
    import os
    from unittest import mock

    from prefect_kubernetes.settings import KubernetesSettings

    with mock.patch.dict(os.environ, {k: v["value"] for k, v in env.items() if "INTEGRATIONS" in k}):
        worker_settings = KubernetesSettings().worker
    assert (worker_settings.api_key_secret_name, worker_settings.api_key_secret_key) == ("prefect-cloud", "key")


def test_kubernetes_pool_gets_observer_namespace_and_role() -> None:
    pipeline = _pipeline("pipeline-kubernetes.yaml")
    children = build_children(pipeline, SETTINGS, "jobs-ns")
    assert [c["kind"] for c in children] == ["ServiceAccount", "RoleBinding", "Deployment"]
    dep = children[-1]
    env = {e["name"]: e.get("value") for e in _container(dep)["env"]}
    assert env[OBSERVER_NAMESPACES_ENV] == "jobs-ns"
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert "--type" in _container(dep)["command"] and "kubernetes" in _container(dep)["command"]


def test_the_worker_gets_the_charts_fixed_cluster_role_bound_in_one_namespace() -> None:
    granted = {(g, r) for rule in WORKER_RULES for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("batch", "jobs"), ("", "pods"), ("", "pods/log"), ("", "events")}
    for rule in WORKER_RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    binding = build_role_binding(_pipeline("pipeline-kubernetes.yaml"), "ns", cluster_role="rel-eveflow-worker")
    assert binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] == "ns"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "rel-eveflow-worker"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "order-books-worker", "namespace": "ns"}]
    child = [c for c in build_children(_pipeline("pipeline-kubernetes.yaml"), SETTINGS, "ns") if c["kind"] == "RoleBinding"]
    assert child[0]["roleRef"]["name"] == SETTINGS.worker_cluster_role


def test_process_pool_has_no_role() -> None:
    children = build_children(_pipeline(), SETTINGS, "ns")
    assert [c["kind"] for c in children] == ["ServiceAccount", "Deployment"]
    assert build_service_account(_pipeline(), "ns")["automountServiceAccountToken"] is False


def test_builders_are_pure_and_deterministic() -> None:
    pipeline = _pipeline()
    snapshot = pipeline.model_dump()
    one = json.dumps(build_children(pipeline, SETTINGS, "ns"), sort_keys=True)
    two = json.dumps(build_children(pipeline, SETTINGS, "ns"), sort_keys=True)
    assert one == two
    assert pipeline.model_dump() == snapshot


@pytest.mark.parametrize("replicas", [0, 1, 7, 50])
def test_replicas_property(replicas: int) -> None:
    for suspend in (False, True):
        dep = build_worker_deployment(_pipeline(suspend=suspend, worker={"replicas": replicas}), SETTINGS, "n")
        assert dep["spec"]["replicas"] == (0 if suspend else replicas)


def test_owned_adds_owner_reference_only_in_same_namespace() -> None:
    owner = {"apiVersion": "eveflow.dev/v1alpha1", "kind": "EvePipeline",
             "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"team": "x"}}}
    sa = build_service_account(_pipeline(), "ns")
    out = owned(sa, owner)
    assert out["metadata"]["ownerReferences"] == [{
        "controller": True, "blockOwnerDeletion": True, "apiVersion": "eveflow.dev/v1alpha1",
        "kind": "EvePipeline", "name": "p", "uid": "u-1"}]
    assert "team" not in out["metadata"]["labels"]
    assert "ownerReferences" not in sa["metadata"]  # input untouched
    assert "ownerReferences" not in owned(build_service_account(_pipeline(), "other"), owner)["metadata"]


def test_contains_ignores_server_defaults() -> None:
    desired = {"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "w", "image": "a"}]}}}}
    live = copy.deepcopy(desired)
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    live["status"] = {"availableReplicas": 1}
    assert contains(live, desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "b"
    assert not contains(live, desired)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVEFLOW_OPERATOR_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("EVEFLOW_OPERATOR_RESYNC_SECONDS", "2")
    s = OperatorSettings()
    assert s.namespaces == ["team-a", "team-b"] and not s.clusterwide and s.resync_seconds == 2
    monkeypatch.setenv("EVEFLOW_OPERATOR_NAMESPACES", "Bad_NS")
    with pytest.raises(ValueError, match="EVEFLOW_OPERATOR_NAMESPACES"):
        OperatorSettings()


def test_kopf_options() -> None:
    assert kopf_options(OperatorSettings(health_port=0)) == {"standalone": True, "clusterwide": True, "namespaces": []}
    assert kopf_options(OperatorSettings(namespaces=["a", "b"], health_port=8081)) == {
        "standalone": True, "clusterwide": False, "namespaces": ["a", "b"],
        "liveness_endpoint": "http://0.0.0.0:8081/healthz"}


def test_registry_holds_only_our_handlers() -> None:
    import eveflow_etl.orchestration.sync  # noqa: F401  (imports Prefect, as the operator does)
    from eveflow_operator.entrypoint import build_registry

    registry = build_registry(OperatorSettings())
    names = {h.id for h in registry._changing.get_all_handlers()} if hasattr(registry, "_changing") else set()
    assert names, "handlers registered"
    assert all("observer" not in str(n) for n in names)


def test_role_binding_in_another_namespace_is_labelled_with_its_owner() -> None:
    # No ownerReference can cross namespaces: the labels are how the operator finds it again.
    pipeline = _pipeline("pipeline-kubernetes.yaml")
    for obj in (build_role_binding(pipeline, "ns", "jobs", cluster_role="w"),):
        assert obj["metadata"]["namespace"] == "jobs"
        labels = obj["metadata"]["labels"]
        assert (labels["eveflow.dev/pipeline"], labels["eveflow.dev/pipeline-namespace"]) == ("order-books", "ns")
    assert owner_selector("order-books", "ns") == "eveflow.dev/pipeline=order-books,eveflow.dev/pipeline-namespace=ns"


def test_stale_rbac_keeps_only_the_wanted_binding() -> None:
    def obj(ns: str) -> dict:
        return {"metadata": {"namespace": ns, "name": "order-books-worker"}}
    found = {"RoleBinding": [obj("b"), obj("a")]}
    rbac = "rbac.authorization.k8s.io/v1"
    assert stale_rbac(found, ("b", "order-books-worker")) == [(rbac, "RoleBinding", "a", "order-books-worker")]
    assert [s[2] for s in stale_rbac(found, None)] == ["a", "b"]


def test_role_names_in_a_shared_jobs_namespace_are_unique_per_owner() -> None:
    # Namesakes of two namespaces sharing the jobs namespace would otherwise rewrite one pair,
    # its binding's subject flipping between the two workers on every pass.
    pipeline = _pipeline("pipeline-kubernetes.yaml")
    a = build_role_binding(pipeline, "ns1", "jobs", cluster_role="w")
    b = build_role_binding(pipeline, "ns2", "jobs", cluster_role="w")
    assert a["metadata"]["name"] != b["metadata"]["name"]
    for binding, ns in ((a, "ns1"), (b, "ns2")):
        assert binding["metadata"]["name"].startswith("order-books-worker-")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "order-books-worker", "namespace": ns}]
    # Stable across processes and releases (a changed name would churn every pair).
    assert rbac_name(pipeline, "ns1", "jobs") == rbac_name(_pipeline("pipeline-kubernetes.yaml"), "ns1", "jobs")
    # In the pipeline's own namespace the name stays what earlier releases created.
    assert rbac_name(pipeline, "ns1", "ns1") == rbac_name(pipeline, "ns1") == "order-books-worker"


def test_role_names_stay_dns_labels_for_the_longest_pipeline_names() -> None:
    import re

    doc = _doc("pipeline-kubernetes.yaml")
    names = set()
    for pipeline_name in ("a" * 53, "a" * 52 + "b", "a" * 46 + "-" + "b" * 6):
        doc["metadata"]["name"] = pipeline_name
        pipeline = parse_pipeline(doc)
        for ns in ("n" * 63, "team-a"):
            name = rbac_name(pipeline, ns, "jobs")
            assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
            names.add(name)
    assert len(names) == 6

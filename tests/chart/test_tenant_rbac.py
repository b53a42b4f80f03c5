"""Issue 12, item 5, read as a cluster administrator reads `helm template`: the operator holds no
Job or pod rights and writes no Role; RoleBindings it may write bind only the chart's fixed worker
ClusterRole (`bind` on that one name), and nothing in the chart binds the worker anywhere -- its
rights exist only in the namespaces the operator binds it in (the pipeline's own, or allowed ones)."""

from __future__ import annotations

import pytest

from eveflow_operator.rbac import WORKER_RULES

from .conftest import RELEASE, ROOT, Helm, by_kind, one

pytestmark = pytest.mark.helm

RBAC = "rbac.authorization.k8s.io"
WATCH = ROOT / "tests/chart/values/watch-namespaces.yaml"
WORKER_ROLE = f"{RELEASE}-worker"


def _grants(rules: list[dict]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(g, r, v, tuple(rule.get("resourceNames") or ())) for rule in rules for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def _operator_rules(manifests: list[dict]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """Every rule bound to the operator's ServiceAccount, by any binding in the chart."""
    roles = {(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]): m
             for m in manifests if m["kind"] in ("Role", "ClusterRole")}
    held = set()
    for binding in by_kind(manifests, "RoleBinding") + by_kind(manifests, "ClusterRoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == RELEASE for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        held |= _grants(roles[(ref["kind"], namespace, ref["name"])]["rules"])
    return held


@pytest.mark.parametrize("values", [None, WATCH], ids=["cluster-wide", "watch-namespaces"])
def test_the_operator_holds_no_job_or_pod_rights_and_binds_only_the_worker_role(helm: Helm, values) -> None:
    manifests = helm.template(*([values] if values else []))
    held = _operator_rules(manifests)
    assert held, "no rules bound to the operator"
    resources = {(g, r) for g, r, _, _ in held}
    for forbidden in (("batch", "jobs"), ("", "pods"), ("", "pods/log"), ("", "pods/exec"), (RBAC, "roles"),
                      (RBAC, "clusterrolebindings")):
        assert forbidden not in resources, f"the operator holds {forbidden}"
    assert not [h for h in held if "*" in h[:3]], "no wildcards"
    assert not [h for h in held if h[2] in ("escalate", "impersonate")]
    # bind: on the worker ClusterRole alone (never without resourceNames, never on Roles).
    binds = {h for h in held if h[2] == "bind"}
    assert binds == {(RBAC, "clusterroles", "bind", (WORKER_ROLE,))}, binds
    # RoleBindings it writes can therefore only bind that ClusterRole.
    assert {v for g, r, v, _ in held if (g, r) == (RBAC, "rolebindings")} == {"get", "list", "create", "patch", "delete"}
    # Secrets: read by name only, never listed or watched.
    assert {v for g, r, v, _ in held if (g, r) == ("", "secrets")} == {"get"}


def test_the_worker_cluster_role_holds_the_worker_rules_and_the_chart_binds_it_nowhere(helm: Helm) -> None:
    manifests = helm.template()
    worker = one(manifests, "ClusterRole", WORKER_ROLE)
    assert _grants(worker["rules"]) == _grants(WORKER_RULES)
    bound = [b for b in by_kind(manifests, "RoleBinding") + by_kind(manifests, "ClusterRoleBinding")
             if b["roleRef"]["name"] == WORKER_ROLE]
    assert bound == [], "the worker's rights come only from the operator's per-namespace RoleBindings"
    env = {e["name"]: e.get("value") for e in one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["EVEFLOW_OPERATOR_WORKER_CLUSTER_ROLE"] == WORKER_ROLE
    assert env["EVEFLOW_OPERATOR_ALLOWED_JOBS_NAMESPACES"] == ""  # default: the pipeline's own only


def test_allowed_jobs_namespaces_and_registries_reach_the_operator(helm: Helm) -> None:
    manifests = helm.template(extra=("--set", "operator.allowedJobsNamespaces={batch-a,batch-b}",
                                     "--set", "operator.allowedImageRegistries={ghcr.io/my-org}"))
    env = {e["name"]: e.get("value") for e in one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["EVEFLOW_OPERATOR_ALLOWED_JOBS_NAMESPACES"] == "batch-a,batch-b"
    assert env["EVEFLOW_OPERATOR_ALLOWED_IMAGE_REGISTRIES"] == "ghcr.io/my-org"
    assert env["EVEFLOW_OPERATOR_ALLOW_PLAIN_HTTP_CREDENTIALS"] == "false"

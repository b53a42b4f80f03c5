"""The chart's life cycle on the real control plane: `helm install`, `helm upgrade` (a values change
rolls the operator), `helm rollback` and `helm uninstall` of charts/eveflow against kube-apiserver,
with the Deployment and ReplicaSet controllers, the scheduler and kwok's simulated nodes doing what
they do in a cluster, in a namespace that enforces the restricted Pod Security Standard."""

from __future__ import annotations

import json
import uuid

import pytest

from .conftest import CHART

pytestmark = pytest.mark.helm

RELEASE = "helmtest"  # not "eveflow": the operator tests apply the chart's RBAC under that name
FULLNAME = f"{RELEASE}-eveflow"
CLUSTER_SCOPED = (("clusterrole", FULLNAME), ("clusterrolebinding", FULLNAME))


def _deployment(cp, ns: str) -> dict:
    return cp.kubectl_json("get", "deployment", FULLNAME, "-n", ns)


def _available(deployment: dict) -> bool:
    status = deployment.get("status") or {}
    return (status.get("observedGeneration") == deployment["metadata"]["generation"]
            and status.get("updatedReplicas") == deployment["spec"]["replicas"]
            and status.get("availableReplicas") == deployment["spec"]["replicas"]
            and not status.get("unavailableReplicas")
            and any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions") or []))


def _replicasets(cp, ns: str) -> dict[str, dict]:
    """The operator's ReplicaSets by pod-template-hash."""
    items = cp.kubectl_json("get", "replicasets", "-n", ns, "-l", "app.kubernetes.io/instance=" + RELEASE)["items"]
    return {rs["metadata"]["labels"]["pod-template-hash"]: rs for rs in items}


def _active_hash(cp, ns: str) -> str:
    active = [h for h, rs in _replicasets(cp, ns).items() if rs["spec"]["replicas"] > 0]
    assert len(active) == 1, f"expected one scaled-up ReplicaSet, found {active}"
    return active[0]


def _running_pods(cp, ns: str) -> list[dict]:
    pods = cp.kubectl_json("get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=" + RELEASE)["items"]
    return [p for p in pods if p["metadata"].get("deletionTimestamp") is None
            and p["status"].get("phase") == "Running"
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]


def _operator_args(deployment: dict) -> list[str]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"]
    return container.get("args", []) + container.get("command", [])


def _helm(cp, *args: str) -> str:
    result = cp.helm(*args, check=False, timeout=300)
    if result.returncode != 0:
        events = cp.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout[-4000:]
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}\nevents:\n{events}")
    return result.stdout


@pytest.fixture
def restricted_namespace(control_plane):
    ns = f"helm-{uuid.uuid4().hex[:6]}"
    control_plane.create_namespace(ns, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    yield ns
    control_plane.helm("uninstall", RELEASE, "-n", ns, "--wait", check=False, timeout=120)
    control_plane.delete_namespace(ns)


def test_install_upgrade_rollback_uninstall(control_plane, restricted_namespace: str) -> None:
    cp, ns = control_plane, restricted_namespace
    chart = str(CHART)

    # install: the operator Deployment becomes Available on a simulated node, its pod admitted
    # under the restricted Pod Security Standard.
    _helm(cp, "install", RELEASE, chart, "-n", ns, "--wait", "--timeout", "180s")
    first = _deployment(cp, ns)
    assert _available(first), first["status"]
    (pod,) = _running_pods(cp, ns)
    assert pod["spec"]["nodeName"].startswith("kwok-node-"), pod["spec"].get("nodeName")
    assert pod["spec"]["serviceAccountName"] == FULLNAME
    first_hash = _active_hash(cp, ns)
    for kind, name in CLUSTER_SCOPED:
        cp.kubectl("get", kind, name)
    cp.kubectl("get", "crd", "evepipelines.eveflow.dev")

    # upgrade with a values change: a new pod template, rolled out by the Deployment controller
    # (Recreate) to a new ReplicaSet; the old one is scaled to zero.
    assert "--verbose" not in _operator_args(first)
    _helm(cp, "upgrade", RELEASE, chart, "-n", ns, "--set", "operator.logLevel=verbose", "--wait", "--timeout", "180s")
    second = _deployment(cp, ns)
    assert second["metadata"]["generation"] > first["metadata"]["generation"]
    assert "--verbose" in _operator_args(second), _operator_args(second)
    cp.wait_for(lambda: _available(_deployment(cp, ns)), timeout=120, what="the upgraded operator Available")
    second_hash = _active_hash(cp, ns)
    assert second_hash != first_hash
    assert _replicasets(cp, ns)[first_hash]["spec"]["replicas"] == 0
    cp.wait_for(lambda: [p["metadata"]["labels"]["pod-template-hash"] for p in _running_pods(cp, ns)] == [second_hash],
                timeout=120, what="only the upgraded operator pod running")

    # rollback to revision 1: the first pod template again, on its original ReplicaSet.
    _helm(cp, "rollback", RELEASE, "1", "-n", ns, "--wait", "--timeout", "180s")
    third = _deployment(cp, ns)
    assert "--verbose" not in _operator_args(third)
    cp.wait_for(lambda: _available(_deployment(cp, ns)), timeout=120, what="the rolled-back operator Available")
    assert _active_hash(cp, ns) == first_hash
    cp.wait_for(lambda: [p["metadata"]["labels"]["pod-template-hash"] for p in _running_pods(cp, ns)] == [first_hash],
                timeout=120, what="only the rolled-back operator pod running")
    history = json.loads(_helm(cp, "history", RELEASE, "-n", ns, "-o", "json"))
    assert [h["revision"] for h in history] == [1, 2, 3]
    assert history[-1]["status"] == "deployed" and "Rollback to 1" in history[-1]["description"]

    # uninstall: the release's objects go, the garbage collector takes the ReplicaSets and pods,
    # and the CRD (from the chart's crds/, which helm never deletes) stays with users' pipelines.
    _helm(cp, "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "180s")
    assert cp.kubectl("get", "deployment", FULLNAME, "-n", ns, check=False).returncode != 0
    for kind, name in CLUSTER_SCOPED:
        assert cp.kubectl("get", kind, name, check=False).returncode != 0, f"{kind}/{name} left behind"
    cp.wait_for(lambda: not _replicasets(cp, ns), timeout=120, what="the garbage collector to remove the ReplicaSets")
    cp.wait_for(lambda: not cp.kubectl_json("get", "pods", "-n", ns)["items"], timeout=120,
                what="the operator pods to go")
    assert cp.kubectl("get", "serviceaccount", FULLNAME, "-n", ns, check=False).returncode != 0
    cp.kubectl("get", "crd", "evepipelines.eveflow.dev")

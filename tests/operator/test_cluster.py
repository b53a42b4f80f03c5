"""What only a real cluster shows: the worker Deployment rolled out by the real Deployment and
ReplicaSet controllers onto kwok's simulated nodes, Pod Security admission, and the garbage
collector deleting what an EvePipeline owned. The operator runs as the chart's ServiceAccount
(tests/operator/conftest.py)."""

from __future__ import annotations

import json
import re
import shlex
import uuid

import pytest

from eveflow_etl.orchestration.deployments import flow_run_job_variables
from eveflow_etl.orchestration.pools import new_pool_template
from eveflow_etl.spec import load_pipeline
from eveflow_operator.reconcile import with_worker_image
from eveflow_operator.settings import OperatorSettings

from .e2e import ROOT, apply, condition, example, kobj, wait_condition

pytestmark = [pytest.mark.k8s, pytest.mark.prefect]

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def _readme_secret_command() -> list[str]:
    """The `kubectl create secret ...` line the README tells users to run."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if re.match(r"\s*kubectl create secret generic eveflow-postgres ", line):
            return shlex.split(line.strip())[1:]
    raise AssertionError("README.md no longer shows the kubectl create secret command")


def _pods(kube, ns: str, selector: str) -> list[dict]:
    return kube.kubectl_json("get", "pods", "-n", ns, "-l", selector)["items"]


def _worker_pods(kube, ns: str, name: str) -> list[dict]:
    return [p for p in _pods(kube, ns, "app.kubernetes.io/component=worker")
            if p["metadata"]["name"].startswith(f"{name}-worker-")]


def _running_ready(pod: dict) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])


def _gone(kube, kind: str, ns: str, name: str) -> bool:
    return kobj(kube, kind, ns, name) is None


@pytest.fixture
def readme_ns(kube, kube_namespace, operator):
    kube.kubectl(*_readme_secret_command(), "-n", kube_namespace)
    return kube_namespace


@pytest.mark.parametrize("example_file", ["pipeline.yaml", "pipeline-kubernetes.yaml"])
def test_example_becomes_ready_with_a_worker_rolled_out_on_the_nodes(kube, readme_ns, example_file) -> None:
    ns = readme_ns
    doc = example(example_file, pool=f"ex-{uuid.uuid4().hex[:6]}")
    apply(kube, ns, doc)
    name = doc["metadata"]["name"]
    cr = wait_condition(kube, ns, name, reason="Ready", timeout=60)
    assert condition(cr, "WorkerAvailable")["message"] == "1/1 worker replicas available"
    dep = kobj(kube, "deployment", ns, f"{name}-worker")
    assert dep["status"]["availableReplicas"] == 1
    (rs,) = kube.kubectl_json("get", "replicasets", "-n", ns, "-l", "app.kubernetes.io/component=worker")["items"]
    assert rs["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]  # the real controller
    (pod,) = _worker_pods(kube, ns, name)
    assert _running_ready(pod) and pod["spec"]["nodeName"].startswith("kwok-node-"), pod["status"]


def test_deleted_or_hand_scaled_worker_is_repaired_and_suspend_scales_to_zero(kube, ns) -> None:
    name = f"rep-{ns}"
    apply(kube, ns, example(cr=name, pool=f"rep-{ns}"))
    wait_condition(kube, ns, name, reason="Ready", timeout=60)
    worker = f"{name}-worker"

    old_uid = kobj(kube, "deployment", ns, worker)["metadata"]["uid"]
    kube.kubectl("delete", "deployment", worker, "-n", ns)
    kube.wait_for(lambda: (kobj(kube, "deployment", ns, worker) or {}).get("metadata", {}).get("uid") not in (None, old_uid),
                  timeout=60, what="the deleted worker Deployment re-created")
    wait_condition(kube, ns, name, reason="Ready", timeout=60)

    kube.kubectl("scale", "deployment", worker, "-n", ns, "--replicas=3")
    kube.wait_for(lambda: kobj(kube, "deployment", ns, worker)["spec"]["replicas"] == 1, timeout=60,
                  what="the hand-scaled worker back at spec.worker.replicas")
    kube.wait_for(lambda: len(_worker_pods(kube, ns, name)) == 1, timeout=60, what="one worker pod again")

    kube.kubectl("patch", "evp", name, "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_condition(kube, ns, name, reason="Suspended", timeout=60)
    assert kobj(kube, "deployment", ns, worker)["spec"]["replicas"] == 0
    kube.wait_for(lambda: not _worker_pods(kube, ns, name), timeout=60, what="worker pods gone")


def test_restricted_pod_security_admits_the_worker_pods(kube, operator) -> None:
    ns = f"psa-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(ns, labels=RESTRICTED)
    try:
        kube.kubectl(*_readme_secret_command(), "-n", ns)
        for i, file in enumerate(("pipeline.yaml", "pipeline-kubernetes.yaml")):
            doc = example(file, pool=f"psa{i}-{ns}")
            apply(kube, ns, doc)
            name = doc["metadata"]["name"]
            cr = wait_condition(kube, ns, name, reason="Ready", timeout=60)
            assert condition(cr, "WorkerAvailable")["status"] == "True"
            rs = kube.kubectl_json("get", "replicasets", "-n", ns)["items"]
            assert all(r["status"].get("readyReplicas") for r in rs if r["metadata"]["name"].startswith(name))
        refused = [e["message"] for e in kube.kubectl_json("get", "events", "-n", ns)["items"]
                   if e["reason"] == "FailedCreate"]
        assert not refused, refused
    finally:
        # Its pipelines are named like the examples the next tests apply: their finalizers must
        # release the Prefect deployments before another namespace's "market-history" claims them.
        kube.kubectl("delete", "evp", "--all", "-n", ns, "--wait=true", "--timeout=30s", check=False, timeout=40)
        kube.delete_namespace(ns)


def test_restricted_pod_security_admits_the_flow_run_job_pods(kube) -> None:
    """The Job a kubernetes pool's worker creates for a flow run (Prefect's job template with
    eveflow's additions and the deployment's job variables), created in a restricted namespace:
    the Job controller's pods are admitted, scheduled and run to completion on kwok."""
    from prefect.utilities.templating import apply_values

    ns = f"psa-job-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(ns, labels=RESTRICTED)
    try:
        pipeline = with_worker_image(load_pipeline(ROOT / "examples" / "pipeline-kubernetes.yaml"),
                                     OperatorSettings(worker_image="registry.example/eveflow:1"))
        template = new_pool_template(pipeline)
        values = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
        values.update(flow_run_job_variables(pipeline, ns))
        values.update(name="flow-run", command=["python", "-m", "prefect.engine"], labels={}, annotations={},
                      env=[{"name": "PREFECT__FLOW_RUN_ID", "value": "0"}], service_account_name="default",
                      image_pull_policy="IfNotPresent")
        job = apply_values(template["job_configuration"], values)["job_manifest"]
        # Unset resource values: Prefect's worker leaves them out of the Job it creates.
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["resources"] = {k: {r: q for r, q in v.items() if q not in (None, "", "None")}
                                  for k, v in container.get("resources", {}).items()}
        container["resources"] = {k: v for k, v in container["resources"].items() if v}
        # --validate=warn: what the Prefect worker's client gets (Prefect's template puts
        # completions/parallelism in the pod spec; the server drops them with a warning).
        out = kube.kubectl("create", "-n", ns, "--validate=warn", "-f", "-", "-o", "json", input=json.dumps(job))
        name = json.loads(out.stdout)["metadata"]["name"]

        def finished():
            j = kobj(kube, "job", ns, name) or {}
            return (j.get("status") or {}).get("succeeded")
        def refused():
            return [e["message"] for e in kube.kubectl_json("get", "events", "-n", ns)["items"]
                    if e["reason"] == "FailedCreate"]
        kube.wait_for(lambda: finished() or refused(), timeout=60, what=f"job {name} ran or was refused")
        assert not refused(), refused()
        assert finished() == 1
    finally:
        kube.delete_namespace(ns)


@pytest.mark.parametrize("cascade", ["background", "foreground"])
def test_deleting_the_pipeline_lets_the_garbage_collector_remove_its_children(kube, ns, cascade) -> None:
    name = f"gc-{cascade[:4]}-{ns}"
    apply(kube, ns, example(cr=name, pool=f"{name}"))
    wait_condition(kube, ns, name, reason="Ready", timeout=60)
    worker = f"{name}-worker"
    assert _worker_pods(kube, ns, name)
    kube.kubectl("delete", "evp", name, "-n", ns, f"--cascade={cascade}", "--wait=true", "--timeout=60s")
    if cascade == "foreground":  # the owner goes only after its dependents
        assert _gone(kube, "deployment", ns, worker) and _gone(kube, "serviceaccount", ns, worker)
    kube.wait_for(lambda: _gone(kube, "deployment", ns, worker) and _gone(kube, "serviceaccount", ns, worker)
                  and not _worker_pods(kube, ns, name)
                  and not [r for r in kube.kubectl_json("get", "replicasets", "-n", ns)["items"]
                           if r["metadata"]["name"].startswith(worker)],
                  timeout=60, what="the garbage collector removing the worker, its ReplicaSet and pods")


def test_an_object_that_was_not_ours_is_never_adopted_into_deletion(kube, ns) -> None:
    """A ServiceAccount the user made before the pipeline, with the worker's name: the operator
    must not take it over (an ownerReference would let the garbage collector delete it)."""
    name = f"own-{ns}"
    worker = f"{name}-worker"
    kube.kubectl("create", "serviceaccount", worker, "-n", ns)
    apply(kube, ns, example(cr=name, pool=f"own-{ns}"))
    cr = wait_condition(kube, ns, name, status="False", timeout=60)
    assert worker in condition(cr)["message"], condition(cr)
    assert not kobj(kube, "serviceaccount", ns, worker)["metadata"].get("ownerReferences")
    kube.kubectl("delete", "evp", name, "-n", ns, "--wait=true", "--timeout=60s")
    kube.wait_for(lambda: _gone(kube, "deployment", ns, worker), timeout=60, what="our Deployment collected")
    assert kobj(kube, "serviceaccount", ns, worker) is not None, "the user's ServiceAccount was deleted"

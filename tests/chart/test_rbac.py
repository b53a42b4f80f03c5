"""The chart's RBAC is exactly what the operator uses.

`helm install` of the chart into the real control plane (tests/fixtures/control_plane.py), then
the operator started from the Deployment helm created there (its command, args and env, nothing
added but a kubeconfig holding a token of the chart's ServiceAccount, which stands in for the
in-cluster token) reconciles EvePipelines through their whole life against a real Prefect server.
The API server authorises every call with RBAC (a verb missing from the chart is a 403 and the
lifecycle below fails) and its audit log records each one; every granted (group, resource, verb)
must appear in that log -- except the documented few below.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ROOT

pytestmark = [pytest.mark.helm, pytest.mark.k8s, pytest.mark.prefect]

RELEASE = "rbac"
NAMESPACE = "eveflow-rbac"

# Granted but not in the audit log as a request of their own, each checked by the API server
# inside another request (removing any of them makes this module's lifecycle test fail):
GRANTED_UNUSED_OK = {
    # OwnerReferencesPermissionEnforcement (enabled on the test control plane): ownerReferences
    # with blockOwnerDeletion need update on the owner's finalizers -- an admission check.
    ("eveflow.dev", "evepipelines/finalizers", "update"),
    # Server-side apply of an object that does not exist yet is authorised as create as well as
    # patch; the request itself (and its audit event) is a PATCH.
    ("apps", "deployments", "create"),
    ("", "serviceaccounts", "create"),
    ("rbac.authorization.k8s.io", "rolebindings", "create"),
    # A RoleBinding of the chart's worker ClusterRole is authorised by `bind` on that ClusterRole
    # (escalation prevention), a check of the API server, not a request.
    ("rbac.authorization.k8s.io", "clusterroles", "bind"),
    # The jobs namespace's labels are read only for a jobs namespace other than the pipeline's own.
    ("", "namespaces", "get"),
}


def _expand(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _example(name: str, cr: str, pool: str, **spec) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / name).read_text())
    doc["metadata"]["name"] = cr
    doc["spec"]["workPool"]["name"] = pool
    doc["spec"].update(spec)
    return doc


def _ready(kube, ns: str, name: str, status: str = "True", reason: str | None = None,
           generation: int | None = None) -> dict:
    def check():
        proc = kube.kubectl("get", "evp", name, "-n", ns, "-o", "json", check=False)
        if proc.returncode != 0:
            return None
        cr = json.loads(proc.stdout)
        ready = next((c for c in (cr.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
        ok = ready.get("status") == status and (reason is None or ready.get("reason") == reason)
        if generation is not None:
            ok = ok and cr["status"].get("observedGeneration") == generation
        return cr if ok else None
    return kube.wait_for(check, timeout=30, interval=0.1, what=f"{ns}/{name} Ready={status} {reason or ''}")


@pytest.fixture(scope="module")
def installed(kube, prefect_server):
    """`helm install` of the chart into the control plane; returns the ports the operator uses."""
    metrics_port, health_port = _free_port(), _free_port()
    kube.helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace",
        "--wait", "--timeout", "120s",
        "--set", f"prefect.apiUrl={prefect_server.api_url}",
        "--set", "operator.resyncPeriodSeconds=2", "--set", "operator.resyncJitterSeconds=0",
        "--set", f"operator.metricsPort={metrics_port}", "--set", f"operator.healthPort={health_port}",
        "--set", "operator.logLevel=verbose",
    )
    assert "deployed" in kube.helm("status", RELEASE, "-n", NAMESPACE).stdout
    yield {"metrics_port": metrics_port, "health_port": health_port}
    kube.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)


def _stored(kube, resource: str, group: str, namespace: str | None, name: str) -> dict:
    found = [o for o in kube.objects(resource, group, namespace) if o["metadata"]["name"] == name]
    assert found, f"helm did not create {resource} {name}"
    return found[0]


@pytest.fixture(scope="module")
def operator_from_chart(kube, installed, tmp_path_factory):
    """The operator process, started exactly as the chart's Deployment says."""
    deployment = _stored(kube, "deployments", "apps", NAMESPACE, f"{RELEASE}-eveflow")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {k: v for k, v in kube.env.items() if not k.startswith(("EVEFLOW_OPERATOR_", "PREFECT_"))}
    for entry in container["env"]:
        assert "value" in entry, f"{entry['name']}: only literal env is expected on the operator"
        env[entry["name"]] = entry["value"]
    env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))  # the pod's /tmp emptyDir
    # The pod's ServiceAccount token, as a kubeconfig (the in-cluster config outside a pod).
    env["KUBECONFIG"] = str(kube.kubeconfig_for(NAMESPACE, deployment["spec"]["template"]["spec"]["serviceAccountName"]))
    argv = [shutil.which(container["command"][0], path=str(Path(sys.executable).parent)) or container["command"][0],
            *container.get("args", [])]
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    kube.clear_requests()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    # The liveness endpoint the chart's probes call answers once kopf runs.
    import urllib.request

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{installed['health_port']}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return proc.poll() is not None and pytest.fail(f"operator exited:\n{log.read_text()[-4000:]}")
    try:
        kube.wait_for(healthy, timeout=60, interval=0.2, what="the operator's /healthz (liveness probe path)")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if os.environ.get("EVEFLOW_SHOW_OPERATOR_LOG"):
            print(log.read_text()[-20000:])


def test_rendered_rbac_covers_exactly_what_the_operator_calls(kube, installed, operator_from_chart,
                                                                kube_namespace) -> None:
    ns = kube_namespace
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "eveflow-postgres"},
              "stringData": {"PGHOST": "db", "PGPASSWORD": "not-logged"}}
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(secret))

    # A kubernetes pool (Deployment, ServiceAccount, Role, RoleBinding) through its life.
    k8s = _example("pipeline-kubernetes.yaml", "rbac-k8s", f"rbac-k8s-{ns}")
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(k8s))
    _ready(kube, ns, "rbac-k8s")
    k8s["spec"]["schedules"][0]["cron"] = "*/20 * * * *"
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(k8s))
    _ready(kube, ns, "rbac-k8s", generation=2)
    k8s["spec"]["suspend"] = True
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(k8s))
    _ready(kube, ns, "rbac-k8s", reason="Suspended", generation=3)
    # Moving to a process pool removes the worker's RoleBinding.
    k8s["spec"]["workPool"] = {"name": f"rbac-proc2-{ns}", "type": "process"}
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(k8s))
    _ready(kube, ns, "rbac-k8s", reason="Suspended", generation=4)
    kube.wait_for(lambda: not [o for o in kube.objects("rolebindings", "rbac.authorization.k8s.io", ns)],
                  timeout=15, what="the stale worker RoleBinding deleted")
    # A process pool whose destination Secret is missing: an error path (Event, status).
    broken = _example("pipeline.yaml", "rbac-broken", f"rbac-proc-{ns}")
    broken["spec"]["destination"]["secretRef"] = "missing-secret"
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(broken))
    _ready(kube, ns, "rbac-broken", status="False", reason="SecretNotFound")
    time.sleep(3)  # one resync period: the timer's reads are in the record too
    for name in ("rbac-k8s", "rbac-broken"):
        kube.kubectl("delete", "evp", name, "-n", ns, "--wait=true", "--timeout=30s")

    sa = _stored(kube, "deployments", "apps", NAMESPACE, f"{RELEASE}-eveflow")["spec"]["template"]["spec"]["serviceAccountName"]
    records = kube.requests(user=f"system:serviceaccount:{NAMESPACE}:{sa}")
    forbidden = sorted({(r["verb"], r["group"], r["resource"], r["subresource"]) for r in records if r["code"] == 403})
    assert not forbidden, f"the API server refused the operator (a rule missing from the chart): {forbidden}"
    assert records, "no requests recorded from the operator"
    used = {((r["group"] or ""), r["resource"] + (f"/{r['subresource']}" if r["subresource"] else ""), r["verb"])
            for r in records if not r["non_resource"]}

    cluster_role = _stored(kube, "clusterroles", "rbac.authorization.k8s.io", None, f"{RELEASE}-eveflow")
    granted = _expand(cluster_role["rules"])
    assert not {("batch", "jobs"), ("", "pods")} & {(g, r) for g, r, _ in granted}, "no Job/pod rights"
    # Kubernetes resolves subresource rules by exact name; "*" is never used by the chart.
    assert not any("*" in part for rule in granted for part in rule), "no wildcards in the ClusterRole"

    missing = used - granted
    assert not missing, f"the operator calls what the ClusterRole does not grant: {sorted(missing)}"

    unused = granted - used - GRANTED_UNUSED_OK
    assert not unused, f"the ClusterRole grants what the operator never uses: {sorted(unused)}"

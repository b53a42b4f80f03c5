"""The operator end to end: a real `eveflow operator` (kopf) subprocess, the Kubernetes API
emulator, kubectl as a user, and a real Prefect server behind a counting proxy.

One operator process serves the module (cluster-wide, resync every 2 s); every test works in
its own namespace with its own pipeline and pool names, so tests do not see each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.k8s, pytest.mark.prefect]

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "evepipelines.eveflow.dev.yaml"
RESYNC = 2.0
USER_AGENTS = ("kopf", "eveflow-operator")


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator(kube, _prefect_counting_proxy, tmp_path_factory):
    """`eveflow operator` against the emulator; Prefect through the counting proxy."""
    kube.kubectl("apply", "-f", str(CRD))
    kube.wait_for(lambda: kube.kubectl("get", "evp", "-A", check=False).returncode == 0, what="CRD served")
    log = Path(os.environ.get("EVEFLOW_OPERATOR_TEST_LOG") or tmp_path_factory.mktemp("operator") / "operator.log")
    health_port = free_port()
    env = {**kube.env,
           "EVEFLOW_OPERATOR_PREFECT_API_URL": _prefect_counting_proxy.api_url,
           "EVEFLOW_OPERATOR_RESYNC_SECONDS": str(RESYNC),
           "EVEFLOW_OPERATOR_RESYNC_JITTER_SECONDS": "0.5",
           "EVEFLOW_OPERATOR_RESYNC_IDLE_SECONDS": "1",
           "EVEFLOW_OPERATOR_RETRY_BACKOFF_SECONDS": "0.5",
           "EVEFLOW_OPERATOR_FINALIZER_MAX_RETRIES": "2",
           "EVEFLOW_OPERATOR_METRICS_PORT": "0",
           "EVEFLOW_OPERATOR_HEALTH_PORT": str(health_port),
           "EVEFLOW_OPERATOR_WORKER_IMAGE": "example.org/eveflow:test", "PYTHONUNBUFFERED": "1"}
    env.pop("EVEFLOW_OPERATOR_NAMESPACES", None)
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "eveflow"), "operator", "--verbose"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_healthy(proc, health_port, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if os.environ.get("EVEFLOW_SHOW_OPERATOR_LOG"):
            print(log.read_text()[-20000:])


@pytest.fixture
def ns(kube, kube_namespace, operator):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "eveflow-postgres"},
              "stringData": {"PGHOST": "db", "PGPASSWORD": "not-logged"}}
    kube.kubectl("apply", "-n", kube_namespace, "-f", "-", input=json.dumps(secret))
    return kube_namespace


@pytest.fixture
def prefect(prefect_server):
    with httpx.Client(base_url=prefect_server.api_url, timeout=30) as client:
        yield client


# --- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 60) -> None:
    """kopf's liveness endpoint answers once startup is done and the watches are running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the operator exited:\n{log.read_text()[-5000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the operator did not become healthy:\n{log.read_text()[-5000:]}")


def example(name: str = "pipeline.yaml", *, cr: str | None = None, pool: str | None = None, **spec: Any) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / name).read_text())
    if cr:
        doc["metadata"]["name"] = cr
    if pool:
        doc["spec"]["workPool"]["name"] = pool
    doc["spec"].update(spec)
    return doc


def apply(kube, ns: str, doc: dict) -> None:
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))


def get_cr(kube, ns: str, name: str) -> dict | None:
    proc = kube.kubectl("get", "evp", name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def condition(cr: dict | None, type_: str = "Ready") -> dict:
    for c in ((cr or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def wait_condition(kube, ns: str, name: str, status: str = "True", reason: str | None = None,
                   generation: int | None = None, timeout: float = 15.0) -> dict:
    def check():
        cr = get_cr(kube, ns, name)
        c = condition(cr)
        ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
        if generation is not None:
            ok = ok and cr["status"].get("observedGeneration") == generation
        return cr if ok else None
    return kube.wait_for(check, timeout=timeout, interval=0.1,
                         what=f"{ns}/{name} Ready={status} {reason or ''} (last: {condition(get_cr(kube, ns, name))})")


def deployment(prefect, name: str) -> dict | None:
    found = prefect.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}).json()
    return found[0] if found else None


def schedules(prefect, deployment_id: str) -> list[dict]:
    return prefect.get(f"/deployments/{deployment_id}/schedules").json()


def pool(prefect, name: str) -> dict | None:
    r = prefect.get(f"/work_pools/{name}")
    return r.json() if r.status_code == 200 else None


def events(kube, ns: str, name: str) -> list[dict]:
    items = kube.kubectl_json("get", "events", "-n", ns)["items"]
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]


def kobj(kube, kind: str, ns: str, name: str) -> dict | None:
    proc = kube.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


# --- tests ------------------------------------------------------------------------------------


def test_apply_example_becomes_ready(kube, ns, prefect) -> None:
    start = time.monotonic()
    kube.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples" / "pipeline.yaml"))
    cr = wait_condition(kube, ns, "market-history", timeout=10)
    elapsed = time.monotonic() - start
    assert elapsed < 10, elapsed
    status = cr["status"]
    assert status["observedGeneration"] == cr["metadata"]["generation"]
    assert {c["type"] for c in status["conditions"]} == {"Ready", "PrefectSynced", "WorkerAvailable"}

    # Prefect: the pool and the deployments, with the right schedules.
    assert pool(prefect, "eveflow-process")["type"] == "process"
    etl = deployment(prefect, "market-history")
    assert etl is not None and deployment(prefect, "market-history-maintenance") is not None
    by_slug = {s["slug"]: s for s in schedules(prefect, etl["id"])}
    assert by_slug["daily"]["schedule"]["cron"] == "15 12 * * *"
    assert by_slug["hub-refresh"]["schedule"]["cron"] == "0 */6 * * *"
    assert by_slug["hub-refresh"]["schedule"]["timezone"] == "Europe/Oslo"
    assert status["scheduleIds"]["daily"] == by_slug["daily"]["id"]
    assert status["deploymentIds"]["market-history"] == etl["id"]

    # Kubernetes children, owned by the CR.
    uid = cr["metadata"]["uid"]
    for kind in ("deployment", "serviceaccount"):
        obj = kobj(kube, kind, ns, "market-history-worker")
        assert obj is not None, kind
        assert [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [uid]
    assert kobj(kube, "role", ns, "market-history-worker") is None  # process pool: no API access
    worker = kobj(kube, "deployment", ns, "market-history-worker")
    assert worker["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/eveflow:test"

    # kubectl get evp: the printer columns.
    table = kube.kubectl("get", "evp", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "POOL", "SCHEDULES", "LAST", "RUN", "AGE"], table
    assert table[1].split()[:4] == ["market-history", "True", "eveflow-process", "2"], table
    reasons = {e["reason"] for e in events(kube, ns, "market-history")}
    assert {"PrefectSynced", "Applied", "Ready"} <= reasons, reasons


def test_kubernetes_pool_gets_role_and_binding(kube, ns, prefect) -> None:
    name = f"ob-{ns}"
    apply(kube, ns, example("pipeline-kubernetes.yaml", cr=name, pool=f"k8s-{ns}"))
    cr = wait_condition(kube, ns, name)
    uid = cr["metadata"]["uid"]
    for kind in ("deployment", "serviceaccount", "role", "rolebinding"):
        obj = kobj(kube, kind, ns, f"{name}-worker")
        assert obj is not None and [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [uid], kind
    role = kobj(kube, "role", ns, f"{name}-worker")
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"jobs", "pods", "pods/log", "events"}
    env = {e["name"]: e.get("value") for e in
           kobj(kube, "deployment", ns, f"{name}-worker")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == ns
    assert pool(prefect, f"k8s-{ns}")["type"] == "kubernetes"


def test_edits_update_in_place(kube, ns, prefect) -> None:
    name = f"mh-{ns}"
    doc = example(cr=name, pool=f"p-{ns}")
    apply(kube, ns, doc)
    cr = wait_condition(kube, ns, name, generation=1)
    daily_id = cr["status"]["scheduleIds"]["daily"]

    doc["spec"]["schedules"][0]["cron"] = "20 12 * * *"
    apply(kube, ns, doc)
    cr = wait_condition(kube, ns, name, generation=2)
    assert cr["status"]["scheduleIds"]["daily"] == daily_id  # updated in place, same id
    by_slug = {s["slug"]: s for s in schedules(prefect, deployment(prefect, name)["id"])}
    assert by_slug["daily"]["id"] == daily_id and by_slug["daily"]["schedule"]["cron"] == "20 12 * * *"

    before = kobj(kube, "deployment", ns, f"{name}-worker")
    doc["spec"]["worker"]["image"] = "example.org/eveflow:2"
    apply(kube, ns, doc)
    cr = wait_condition(kube, ns, name, generation=3)
    after = kobj(kube, "deployment", ns, f"{name}-worker")
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/eveflow:2"
    assert after["metadata"]["generation"] > before["metadata"]["generation"]  # a new rollout
    assert all(c["observedGeneration"] == 3 for c in cr["status"]["conditions"])


def test_idle_makes_no_prefect_writes_and_drift_is_repaired(kube, ns, prefect, prefect_write_counter) -> None:
    name = f"idle-{ns}"
    apply(kube, ns, example(cr=name, pool=f"p-{ns}"))
    wait_condition(kube, ns, name)
    time.sleep(1.0)  # let the create pass's retries settle
    prefect_write_counter.reset()
    time.sleep(3 * RESYNC + 1.5)
    assert prefect_write_counter.writes == []
    assert prefect_write_counter.reads or prefect_write_counter.filter_reads  # the resync did read

    gone = deployment(prefect, name)
    assert prefect.delete(f"/deployments/{gone['id']}").status_code in (200, 204)
    back = kube.wait_for(lambda: deployment(prefect, name), timeout=RESYNC + 4, what="deployment recreated")
    assert back["id"] != gone["id"]
    kube.wait_for(lambda: (get_cr(kube, ns, name)["status"]["deploymentIds"][name] == back["id"]),
                  timeout=RESYNC + 4, what="status follows the new id")


def test_suspend_and_resume(kube, ns, prefect) -> None:
    name = f"sus-{ns}"
    doc = example(cr=name, pool=f"p-{ns}")
    apply(kube, ns, doc)
    wait_condition(kube, ns, name)
    apply(kube, ns, {**doc, "spec": {**doc["spec"], "suspend": True}})
    cr = wait_condition(kube, ns, name, reason="Suspended", generation=2)
    assert cr["status"]["schedules"] == 0
    assert kobj(kube, "deployment", ns, f"{name}-worker")["spec"]["replicas"] == 0
    assert deployment(prefect, name)["paused"] is True
    apply(kube, ns, doc)
    wait_condition(kube, ns, name, reason="Ready", generation=3)
    assert kobj(kube, "deployment", ns, f"{name}-worker")["spec"]["replicas"] == 1
    assert deployment(prefect, name)["paused"] is False


def test_delete_with_delete_and_orphan(kube, ns, prefect) -> None:
    gone, kept = f"del-{ns}", f"orph-{ns}"
    apply(kube, ns, example(cr=gone, pool=f"pd-{ns}", deletionPolicy="Delete"))
    apply(kube, ns, example(cr=kept, pool=f"po-{ns}", deletionPolicy="Orphan"))
    wait_condition(kube, ns, gone)
    wait_condition(kube, ns, kept)
    kube.kubectl("delete", "evp", gone, kept, "-n", ns, "--wait=true", timeout=30)
    assert get_cr(kube, ns, gone) is None and get_cr(kube, ns, kept) is None
    assert deployment(prefect, gone) is None and deployment(prefect, f"{gone}-maintenance") is None
    assert pool(prefect, f"pd-{ns}") is None  # created by eveflow, used by nothing else
    assert deployment(prefect, kept) is not None and pool(prefect, f"po-{ns}") is not None
    # Children are garbage-collected with their owner.
    kube.wait_for(lambda: kobj(kube, "deployment", ns, f"{gone}-worker") is None, timeout=5, what="GC")


def test_two_pipelines_share_a_pool(kube, ns, prefect) -> None:
    shared = f"shared-{ns}"
    a, b = f"a-{ns}", f"b-{ns}"
    apply(kube, ns, example(cr=a, pool=shared))
    apply(kube, ns, example(cr=b, pool=shared))
    wait_condition(kube, ns, a)
    wait_condition(kube, ns, b)
    kube.kubectl("delete", "evp", a, "-n", ns, "--wait=true", timeout=30)
    assert deployment(prefect, a) is None
    assert pool(prefect, shared) is not None and deployment(prefect, b) is not None
    reasons = [e.get("message", "") for e in events(kube, ns, a) if e["reason"] == "Deleted"]
    assert any("kept work pool" in m for m in reasons), reasons


def test_invalid_spec_is_reported_and_nothing_created(kube, ns, prefect, prefect_write_counter) -> None:
    name = f"bad-{ns}"
    doc = example(cr=name, pool=f"p-{ns}")
    doc["spec"]["schedules"][1]["timezone"] = "Europe/Olso"  # passes the CRD pattern, not zoneinfo
    apply(kube, ns, doc)
    cr = wait_condition(kube, ns, name, status="False", reason="InvalidSpec")
    assert "Europe/Olso" in condition(cr)["message"] and "IANA" in condition(cr)["message"]
    assert "spec.schedules[1].timezone" in condition(cr)["message"]
    warnings = [e for e in events(kube, ns, name) if e["type"] == "Warning" and e["reason"] == "InvalidSpec"]
    assert len(warnings) == 1
    time.sleep(RESYNC + 1)  # no retry storm: still one event, nothing created
    assert len([e for e in events(kube, ns, name) if e["reason"] == "InvalidSpec"]) == 1
    assert kobj(kube, "deployment", ns, f"{name}-worker") is None
    assert kobj(kube, "serviceaccount", ns, f"{name}-worker") is None
    assert deployment(prefect, name) is None and pool(prefect, f"p-{ns}") is None

    # Fixing the spec recovers.
    doc["spec"]["schedules"][1]["timezone"] = "Europe/Oslo"
    apply(kube, ns, doc)
    wait_condition(kube, ns, name, generation=2)


def test_missing_secret_is_reported(kube, ns) -> None:
    name = f"nosecret-{ns}"
    doc = example(cr=name, pool=f"p-{ns}")
    doc["spec"]["destination"]["secretRef"] = "does-not-exist"
    apply(kube, ns, doc)
    cr = wait_condition(kube, ns, name, status="False", reason="SecretNotFound")
    assert "does-not-exist" in condition(cr)["message"]
    assert kobj(kube, "deployment", ns, f"{name}-worker") is None


def test_prefect_down_then_back(kube, ns, prefect, prefect_write_counter) -> None:
    name = f"down-{ns}"
    prefect_write_counter.fail_after_writes(0)  # every request dropped from now on
    try:
        apply(kube, ns, example(cr=name, pool=f"p-{ns}"))
        cr = wait_condition(kube, ns, name, status="False", reason="PrefectUnavailable")
        assert "unreachable" in condition(cr)["message"]
    finally:
        prefect_write_counter.heal()
    wait_condition(kube, ns, name, timeout=20)
    etl = deployment(prefect, name)
    assert sorted(s["slug"] for s in schedules(prefect, etl["id"])) == ["daily", "hub-refresh"]
    found = prefect.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}).json()
    assert len(found) == 1


def test_operator_api_calls(kube, operator) -> None:
    """Every Kubernetes API call the operator made during this module (the chart's RBAC)."""
    calls = sorted({(r["group"] or "", r["resource"] + (f"/{r['subresource']}" if r["subresource"] else ""), r["verb"])
                    for r in kube.requests()
                    if r["resource"] and any(ua in (r["user_agent"] or "") for ua in USER_AGENTS)})
    print("\n".join(f"{g or 'core'} {res} {verb}" for g, res, verb in calls))
    allowed = {
        ("eveflow.dev", "evepipelines", "get"), ("eveflow.dev", "evepipelines", "list"),
        ("eveflow.dev", "evepipelines", "watch"),
        ("eveflow.dev", "evepipelines", "patch"), ("eveflow.dev", "evepipelines/status", "patch"),
        ("", "events", "create"), ("", "secrets", "get"),
        ("", "serviceaccounts", "get"), ("", "serviceaccounts", "patch"),
        ("apps", "deployments", "get"), ("apps", "deployments", "patch"),
        ("apps", "deployments", "list"), ("apps", "deployments", "watch"),
        ("rbac.authorization.k8s.io", "roles", "get"), ("rbac.authorization.k8s.io", "roles", "patch"),
        ("rbac.authorization.k8s.io", "roles", "delete"), ("rbac.authorization.k8s.io", "roles", "list"),
        ("rbac.authorization.k8s.io", "rolebindings", "get"), ("rbac.authorization.k8s.io", "rolebindings", "patch"),
        ("rbac.authorization.k8s.io", "rolebindings", "delete"), ("rbac.authorization.k8s.io", "rolebindings", "list"),
        ("", "namespaces", "list"), ("", "namespaces", "watch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }
    assert set(calls) <= allowed, set(calls) - allowed

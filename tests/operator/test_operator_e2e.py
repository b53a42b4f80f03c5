"""The operator end to end: a real `eveflow operator` (kopf) subprocess, the Kubernetes API
emulator, kubectl as a user, and a real Prefect server behind a counting proxy.

One operator process serves the module (cluster-wide, resync every 2 s); every test works in
its own namespace with its own pipeline and pool names, so tests do not see each other.
"""

from __future__ import annotations

import time

import pytest

from .e2e import (
    RESYNC,
    ROOT,
    USER_AGENTS,
    apply,
    condition,
    deployment,
    events,
    example,
    get_cr,
    kobj,
    mark_available,
    pool,
    schedules,
    wait_condition,
)

pytestmark = [pytest.mark.k8s, pytest.mark.prefect]


# --- tests ------------------------------------------------------------------------------------


def test_apply_example_becomes_ready(kube, ns, prefect) -> None:
    kube.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples" / "pipeline.yaml"))
    cr = wait_condition(kube, ns, "market-history")
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


def test_kubernetes_pool_gets_a_binding_of_the_worker_cluster_role(kube, ns, prefect) -> None:
    name = f"ob-{ns}"
    apply(kube, ns, example("pipeline-kubernetes.yaml", cr=name, pool=f"k8s-{ns}"))
    cr = wait_condition(kube, ns, name)
    uid = cr["metadata"]["uid"]
    for kind in ("deployment", "serviceaccount", "rolebinding"):
        obj = kobj(kube, kind, ns, f"{name}-worker")
        assert obj is not None and [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [uid], kind
    assert kobj(kube, "role", ns, f"{name}-worker") is None  # the worker's rules are the chart's ClusterRole
    binding = kobj(kube, "rolebinding", ns, f"{name}-worker")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "eveflow-worker"}
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
    back = kube.wait_for(lambda: deployment(prefect, name), timeout=RESYNC + 30, what="deployment recreated")
    assert back["id"] != gone["id"]
    kube.wait_for(lambda: (get_cr(kube, ns, name)["status"]["deploymentIds"][name] == back["id"]),
                  timeout=RESYNC + 30, what="status follows the new id")


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
    kube.kubectl("delete", "evp", gone, kept, "-n", ns, "--wait=true", timeout=90)
    assert get_cr(kube, ns, gone) is None and get_cr(kube, ns, kept) is None
    assert deployment(prefect, gone) is None and deployment(prefect, f"{gone}-maintenance") is None
    assert pool(prefect, f"pd-{ns}") is None  # created by eveflow, used by nothing else
    assert deployment(prefect, kept) is not None and pool(prefect, f"po-{ns}") is not None
    # Children are garbage-collected with their owner.
    kube.wait_for(lambda: kobj(kube, "deployment", ns, f"{gone}-worker") is None, timeout=30, what="GC")


def test_two_pipelines_share_a_pool(kube, ns, prefect) -> None:
    shared = f"shared-{ns}"
    a, b = f"a-{ns}", f"b-{ns}"
    apply(kube, ns, example(cr=a, pool=shared))
    apply(kube, ns, example(cr=b, pool=shared))
    wait_condition(kube, ns, a)
    wait_condition(kube, ns, b)
    kube.kubectl("delete", "evp", a, "-n", ns, "--wait=true", timeout=90)
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


def _rbac(kube, namespace: str) -> set[str]:
    """The worker Roles and RoleBindings in ``namespace``, as Kind/name."""
    return {f"{kind}/{o['metadata']['name']}" for plural, kind in (("roles", "Role"), ("rolebindings", "RoleBinding"))
            for o in kube.objects(plural, "rbac.authorization.k8s.io", namespace)}


def _jobs_namespace_for(kube, name: str, source: str) -> None:
    """A namespace whose admin allowed flow-run Jobs from namespace ``source`` (issue 12)."""
    status, out = kube.api("POST", "/api/v1/namespaces",
                           {"metadata": {"name": name, "labels": {f"jobs.eveflow.dev/{source}": "true"}}})
    assert status == 201, out


def _cross_namespace_name(name: str, ns: str) -> str:
    """The worker Role/RoleBinding name outside the pipeline's namespace: '<name>-worker-<hash>'."""
    import hashlib

    return f"{name}-worker-{hashlib.sha256(f'{ns}/{name}'.encode()).hexdigest()[:8]}"


def test_jobs_namespace_change_moves_role_and_binding(kube, ns) -> None:
    # In another namespace than the EvePipeline these carry no ownerReference: nothing but the
    # operator removes them.
    name, first, second = f"jn-{ns}", f"{ns}-jobs-a", f"{ns}-jobs-b"
    role = _cross_namespace_name(name, ns)
    pair = {f"RoleBinding/{role}"}
    for n in (first, second):
        _jobs_namespace_for(kube, n, ns)
    try:
        doc = example("pipeline-kubernetes.yaml", cr=name, pool=f"jn-{ns}")
        doc["spec"]["workPool"]["kubernetes"]["namespace"] = first
        apply(kube, ns, doc)
        wait_condition(kube, ns, name, generation=1)
        assert _rbac(kube, first) == pair

        doc["spec"]["workPool"]["kubernetes"]["namespace"] = second
        apply(kube, ns, doc)
        wait_condition(kube, ns, name, generation=2)
        assert _rbac(kube, second) == pair and _rbac(kube, first) == set()
        binding = kobj(kube, "rolebinding", second, role)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{name}-worker", "namespace": ns}]
        deleted = [e["message"] for e in events(kube, ns, name)
                   if e["reason"] == "Applied" and "deleted" in e["message"]]
        assert any(first in m for m in deleted), deleted

        kube.kubectl("delete", "evp", name, "-n", ns, "--wait=true", timeout=90)
        assert _rbac(kube, first) == set() and _rbac(kube, second) == set()
        kube.wait_for(lambda: not _rbac(kube, ns), timeout=30, what="nothing left in the pipeline's namespace")
    finally:
        for n in (first, second):
            kube.delete_namespace(n)


def test_leaving_a_kubernetes_pool_removes_role_in_the_jobs_namespace(kube, ns) -> None:
    name, jobs = f"kp-{ns}", f"{ns}-jobs"
    _jobs_namespace_for(kube, jobs, ns)
    try:
        doc = example("pipeline-kubernetes.yaml", cr=name, pool=f"kp-{ns}")
        doc["spec"]["workPool"]["kubernetes"]["namespace"] = jobs
        apply(kube, ns, doc)
        wait_condition(kube, ns, name, generation=1)
        role = _cross_namespace_name(name, ns)
        assert _rbac(kube, jobs) == {f"RoleBinding/{role}"}
        doc["spec"]["workPool"] = {"name": f"kp2-{ns}", "type": "process"}
        apply(kube, ns, doc)
        wait_condition(kube, ns, name, generation=2)
        assert _rbac(kube, jobs) == set() and _rbac(kube, ns) == set()
    finally:
        kube.delete_namespace(jobs)


def test_worker_available_follows_the_deployment_without_retry_noise(kube, ns, operator) -> None:
    name = f"wa-{ns}"
    start = operator.log_size()
    kube.configure(mark_deployments_available=False)  # no rollout until this test says so
    try:
        apply(kube, ns, example(cr=name, pool=f"wa-{ns}"))
        cr = wait_condition(kube, ns, name, status="False", reason="WorkerUnavailable")
        assert condition(cr, "PrefectSynced")["status"] == "True"
        assert condition(cr, "WorkerAvailable")["message"] == "0/1 worker replicas available"
        time.sleep(RESYNC + 1)  # the wait goes on through resyncs: the noise the old polling made
        assert condition(get_cr(kube, ns, name))["reason"] == "WorkerUnavailable"

        mark_available(kube, ns, f"{name}-worker")
        cr = wait_condition(kube, ns, name, reason="Ready")
        assert condition(cr, "WorkerAvailable")["message"] == "1/1 worker replicas available"
        assert "Ready" in {e["reason"] for e in events(kube, ns, name)}
    finally:
        kube.configure(mark_deployments_available=True)
    log = operator.log_since(start)
    assert "failed temporarily" not in log, [line for line in log.splitlines() if "failed temporarily" in line]
    # The Deployment's events reached the pipeline through their handler (not only the resyncs,
    # which would bring Ready too, later): kopf logs a handler's exception and goes on.
    assert "failed with an exception" not in log, [line for line in log.splitlines() if "exception" in line]
    # Only the worker Deployments are watched, filtered by the API server.
    watches = kube.requests(verb="watch", resource="deployments", user_agent="kopf")
    assert watches and all("labelSelector=" in w["query"] and "eveflow-operator" in w["query"] for w in watches)


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
        ("", "namespaces", "get"),  # a jobs namespace's consent label
        ("rbac.authorization.k8s.io", "rolebindings", "get"), ("rbac.authorization.k8s.io", "rolebindings", "patch"),
        ("rbac.authorization.k8s.io", "rolebindings", "delete"), ("rbac.authorization.k8s.io", "rolebindings", "list"),
        ("", "namespaces", "list"), ("", "namespaces", "watch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }
    assert set(calls) <= allowed, set(calls) - allowed

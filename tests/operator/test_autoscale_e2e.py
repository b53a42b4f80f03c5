"""Queue-depth autoscaling end to end: a real `eveflow operator`, the real control plane (kwok
runs the worker pods), a real Prefect server behind the counting proxy.

minReplicas 0, maxReplicas 3, runsPerReplica 1: five flow runs come due -> the worker goes to
3; they finish -> back to 0 after scaleDownDelaySeconds; while nothing changes, the operator
writes nothing to Kubernetes (audit log) or Prefect (proxy).
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.prefect import prefect_api

from .e2e import apply, events, example, get_cr, kobj, wait_condition

pytestmark = [pytest.mark.k8s, pytest.mark.prefect]

POLL = 5
DELAY = 5
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def _replicas(kube, ns: str, name: str) -> int | None:
    return ((kobj(kube, "deployment", ns, name) or {}).get("spec") or {}).get("replicas")


def _wait_replicas(kube, ns: str, name: str, n: int, timeout: float) -> None:
    kube.wait_for(lambda: _replicas(kube, ns, name) == n, timeout=timeout, interval=0.25,
                  what=f"worker {ns}/{name} replicas == {n} (now {_replicas(kube, ns, name)})")


def _idle_writes(kube, operator, proxy, seconds: float) -> tuple[list[str], list[str], int]:
    """Kubernetes writes by the operator and Prefect writes during ``seconds`` of nothing changing;
    also the number of flow-run filter reads (the queue-depth reads plus the resync's)."""
    offset = kube.audit_offset()
    proxy.reset()
    time.sleep(seconds)
    k8s = [f"{e['verb']} {e.get('requestURI', '')}" for e in kube.audit(offset, user=operator.user)
           if e.get("verb") in WRITE_VERBS]
    return k8s, list(proxy.writes), sum(r.endswith("/flow_runs/filter") for r in proxy.filter_reads)


def _create_run(prefect, deployment_id: str) -> str:
    response = prefect.post(f"deployments/{deployment_id}/create_flow_run", json={})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_worker_follows_the_runs_due_and_idles_without_writes(kube, ns, operator, prefect_server,
                                                              prefect_write_counter) -> None:
    prefect = prefect_api(prefect_server)  # retries the 503s a busy SQLite server answers
    name, pool = "autoscaled", "autoscale-pool"
    doc = example(cr=name, pool=pool, schedules=[], maintenance={"enabled": False})
    doc["spec"]["worker"] = {"autoscaling": {"minReplicas": 0, "maxReplicas": 3, "runsPerReplica": 1,
                                             "scaleDownDelaySeconds": DELAY, "pollSeconds": POLL}}
    kube.uncordon_nodes()
    apply(kube, ns, doc)
    cr = wait_condition(kube, ns, name, timeout=30)
    worker = f"{name}-worker"
    assert _replicas(kube, ns, worker) == 0  # minReplicas, nothing due
    assert "--limit" in kobj(kube, "deployment", ns, worker)["spec"]["template"]["spec"]["containers"][0]["command"]
    deployment_id = cr["status"]["deploymentIds"][name]
    # The first poll records what it saw (Steady at 0); from then on nothing changes.
    kube.wait_for(lambda: (get_cr(kube, ns, name) or {}).get("status", {}).get("worker", {}).get("reason") == "Steady",
                  timeout=3 * POLL, what="status.worker after the first poll")
    time.sleep(1)

    # Idle at zero: polls happen, nothing is written anywhere.
    k8s, prefect_writes, _ = _idle_writes(kube, operator, prefect_write_counter, 3 * POLL + 1)
    assert (k8s, prefect_writes) == ([], [])

    # Five runs come due: the worker scales from zero to maxReplicas.
    runs = [_create_run(prefect, deployment_id) for _ in range(5)]
    _wait_replicas(kube, ns, worker, 3, timeout=6 * POLL)
    status = kube.wait_for(lambda: ((get_cr(kube, ns, name) or {}).get("status") or {}).get("worker", {}).get(
        "desiredReplicas") == 3 and get_cr(kube, ns, name)["status"], timeout=10, what="status.worker")
    assert status["worker"]["waiting"] == 5 and status["worker"]["reason"] == "ScaledUp"
    assert any(e["reason"] == "ScaledUp" and "0 -> 3" in e["message"] for e in events(kube, ns, name))
    # kwok runs the three pods; the status follows them (1/3, 2/3, 3/3 are real changes, written
    # as they happen), so the idle window starts once WorkerAvailable says 3/3.
    def _worker_available_3_of_3() -> bool:
        conditions = ((get_cr(kube, ns, name) or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "WorkerAvailable" and c.get("status") == "True"
                   and str(c.get("message", "")).startswith("3/3") for c in conditions)
    kube.wait_for(_worker_available_3_of_3, timeout=60, what="WorkerAvailable 3/3")
    wait_condition(kube, ns, name, timeout=60)
    # The poll after a scale reports the same count as Steady (once); from then on nothing changes.
    kube.wait_for(lambda: (get_cr(kube, ns, name) or {}).get("status", {}).get("worker", {}).get("reason") == "Steady",
                  timeout=3 * POLL, what="status.worker Steady at 3")
    time.sleep(1)

    # Still five due, three replicas: steady, no writes.
    k8s, prefect_writes, _ = _idle_writes(kube, operator, prefect_write_counter, 2 * POLL + 1)
    assert (k8s, prefect_writes) == ([], [])

    # The runs finish: after the delay, back to zero.
    for run in runs:
        response = prefect.post(f"flow_runs/{run}/set_state", json={"state": {"type": "COMPLETED"}, "force": True})
        assert response.status_code in (200, 201), response.text
    finished = time.monotonic()
    _wait_replicas(kube, ns, worker, 0, timeout=DELAY + 6 * POLL)
    assert time.monotonic() - finished >= DELAY  # not before the scale-down delay
    assert any(e["reason"] == "ScaledDown" and "3 -> 0" in e["message"] for e in events(kube, ns, name))
    kube.wait_for(lambda: (get_cr(kube, ns, name) or {}).get("status", {}).get("worker", {}).get("waiting") == 0,
                  timeout=10, what="status.worker.waiting == 0")

    # Suspend wins: runs due, the worker stays at 0.
    for _ in range(2):
        _create_run(prefect, deployment_id)
    apply(kube, ns, {**doc, "spec": {**doc["spec"], "suspend": True}})
    wait_condition(kube, ns, name, reason="Suspended", timeout=30)
    time.sleep(2 * POLL + 1)
    assert _replicas(kube, ns, worker) == 0

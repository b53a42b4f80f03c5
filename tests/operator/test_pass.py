"""Every branch of a reconcile pass, the worker's event path and the finalizer pass, as unit tests:
the Kubernetes API and the Prefect side are the in-memory fakes of ``fakes.py``. What is checked
is what a user sees: the status conditions, the Events, and what was (not) written where."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Awaitable, Callable

import pytest
from eveflow_etl.orchestration.types import PrefectAuthError, PrefectConflict, PrefectRejected, PrefectUnavailable
from eveflow_operator.kube import object_path
from eveflow_operator.prefect_conn import PREFECT_CREDENTIALS_OPT_IN
from eveflow_operator.finalize_pass import finalize
from eveflow_operator.reconcile import PassResult, Reconciler, pipeline_path
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.status import (
    INVALID_SPEC,
    NOT_OWNED,
    PREFECT_AUTH_FAILED,
    PREFECT_CONFLICT,
    PREFECT_REJECTED,
    PREFECT_UNAVAILABLE,
    READY,
    SECRET_NOT_FOUND,
    SECRET_NOT_OPTED_IN,
    WORKER_AVAILABLE,
    get_condition,
)

from .fakes import FakeKube, FakePrefect, example, team

NS = "team-a"
NAME = "order-books"
CR = pipeline_path(NS, NAME)
WORKER = object_path("apps/v1", "Deployment", NS, f"{NAME}-worker")


def _run(kube: FakeKube, prefect: FakePrefect, step: Callable[[Reconciler], Awaitable[Any]],
         settings: OperatorSettings | None = None) -> Any:
    async def main() -> Any:
        return await step(Reconciler(settings or OperatorSettings(), kube, prefect))  # type: ignore[arg-type]
    return asyncio.run(main())


def _pass(kube: FakeKube, prefect: FakePrefect, settings: OperatorSettings | None = None) -> PassResult:
    """One pass over the EvePipeline as it is stored now (as kopf would hand it over)."""
    body = asyncio.run(kube.get(CR))
    return _run(kube, prefect, lambda r: r.reconcile(body), settings)


def _stored(kube: FakeKube, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    team(kube, NS)
    return kube.put(doc or example(NAME, NS))


def _ready(kube: FakeKube) -> dict[str, Any]:
    return get_condition(kube.objects[CR].get("status"), READY) or {}


# --- preflight: stops before Prefect ------------------------------------------------------------------


def test_an_invalid_spec_is_permanent_told_once_and_not_rewritten() -> None:
    kube, prefect = FakeKube(), FakePrefect()
    doc = example(NAME, NS)
    doc["spec"]["schedules"][0]["cron"] = "not a cron"
    _stored(kube, doc)
    first = _pass(kube, prefect)
    assert first.problem is not None and first.problem.reason == INVALID_SPEC and first.permanent
    assert [e.type for e in first.events] == ["Warning"] and "cron" in first.events[0].message
    assert _ready(kube)["reason"] == INVALID_SPEC and not first.events[0].message.startswith("EvePipeline ")
    assert kube.writes == [f"status {NAME}"] and prefect.conns == []
    again = _pass(kube, prefect)  # a resync, or kopf's retry: nothing new to say or write
    assert again.events == [] and kube.writes == [f"status {NAME}"]


def test_credentials_in_the_prefect_url_past_an_older_crd_are_an_invalid_spec() -> None:
    # An EvePipeline stored before the CRD had the rule: the status never shows the password.
    kube, prefect = FakeKube(), FakePrefect()
    doc = example(NAME, NS)
    doc["spec"]["prefect"] = {"apiUrl": "https://admin:s3cret@prefect.example.org/api"}
    _stored(kube, doc)
    result = _pass(kube, prefect)
    assert result.problem is not None and result.problem.reason == INVALID_SPEC and result.permanent
    ready = _ready(kube)
    assert ready["status"] == "False" and ready["reason"] == INVALID_SPEC
    assert "spec.prefect.apiUrl" in ready["message"] and "authStringSecretRef" in ready["message"]
    assert "s3cret" not in str(kube.objects[CR]["status"]) and all("s3cret" not in e.message for e in result.events)


def test_a_jobs_namespace_outside_the_watched_ones_is_an_invalid_spec_naming_both() -> None:
    # A namespaced operator has no rights in other namespaces: the RoleBinding there would fail
    # with a bare 403 on every pass. Listing it as allowed does not help either.
    for allowed in ([], ["flow-jobs"]):
        kube, prefect = FakeKube(), FakePrefect()
        doc = example(NAME, NS)
        doc["spec"]["workPool"]["kubernetes"]["namespace"] = "flow-jobs"
        _stored(kube, doc)
        settings = OperatorSettings(namespaces=[NS, "team-b"], allowed_jobs_namespaces=allowed)
        result = _pass(kube, prefect, settings)
        assert result.problem is not None and result.problem.reason == INVALID_SPEC and result.permanent
        message = _ready(kube)["message"]
        assert "spec.workPool.kubernetes.namespace" in message and "'flow-jobs'" in message
        assert "team-a, team-b" in message and "operator.watchNamespaces" in message
        assert prefect.conns == [] and kube.writes == [f"status {NAME}"]


def test_a_missing_destination_secret_is_retried_and_nothing_is_synced() -> None:
    kube, prefect = FakeKube(), FakePrefect()
    _stored(kube)
    del kube.objects[object_path("v1", "Secret", NS, "eveflow-postgres")]
    result = _pass(kube, prefect)
    assert result.problem is not None and result.problem.reason == SECRET_NOT_FOUND and not result.permanent
    assert "spec.destination.secretRef" in _ready(kube)["message"]
    assert prefect.conns == [] and kube.writes == [f"status {NAME}"]


def _with_auth_secret(kube: FakeKube, labels: dict[str, str]) -> None:
    doc = example(NAME, NS)
    doc["spec"]["prefect"] = {"mode": "selfHosted", "apiUrl": "https://prefect.example.org/api",
                              "authStringSecretRef": {"name": "prefect-auth", "key": "auth"}}
    _stored(kube, doc)
    kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prefect-auth", "namespace": NS,
                                                                  "labels": labels},
              "data": {"auth": base64.b64encode(b"admin:pw").decode()}})


def test_a_secret_not_marked_as_prefect_credentials_is_never_sent() -> None:
    kube, prefect = FakeKube(), FakePrefect()
    _with_auth_secret(kube, {})
    result = _pass(kube, prefect)
    assert result.problem is not None and result.problem.reason == SECRET_NOT_OPTED_IN
    assert prefect.conns == [] and not any(w.startswith("apply") for w in kube.writes)
    kube2, prefect2 = FakeKube(), FakePrefect()
    _with_auth_secret(kube2, {PREFECT_CREDENTIALS_OPT_IN: "true"})
    assert _pass(kube2, prefect2).problem is None
    assert [c.auth_string for c in prefect2.conns] == ["admin:pw"]


def test_an_object_under_a_childs_name_that_is_not_ours_stops_the_pass_before_prefect() -> None:
    kube, prefect = FakeKube(), FakePrefect()
    _stored(kube)
    kube.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{NAME}-worker", "namespace": NS},
              "spec": {"replicas": 5}})
    result = _pass(kube, prefect)
    assert result.problem is not None and result.problem.reason == NOT_OWNED and not result.permanent
    assert prefect.conns == [] and kube.objects[WORKER]["spec"] == {"replicas": 5}


# --- sync: Prefect's answers, from the one error table ----------------------------------------------


@pytest.mark.parametrize(("error", "reason", "permanent", "says"), [
    (PrefectUnavailable("connection refused"), PREFECT_UNAVAILABLE, False, "unreachable"),
    (PrefectAuthError("401"), PREFECT_AUTH_FAILED, False, "refused the credentials"),
    (PrefectConflict("deployment changed"), PREFECT_CONFLICT, False, "concurrent change"),
    (PrefectRejected("422 bad schedule"), PREFECT_REJECTED, True, "rejected the pipeline"),
])
def test_a_prefect_error_is_its_reason_and_nothing_is_applied(error: Exception, reason: str, permanent: bool,
                                                              says: str) -> None:
    kube, prefect = FakeKube(), FakePrefect(fail=error)
    _stored(kube)
    result = _pass(kube, prefect)
    assert result.problem is not None and (result.problem.reason, result.permanent) == (reason, permanent)
    ready = _ready(kube)
    assert ready["reason"] == reason and says in ready["message"] and str(error) in ready["message"]
    assert kube.writes == [f"status {NAME}"] and [e.reason for e in result.events] == [reason]


# --- apply and observe --------------------------------------------------------------------------------


def test_a_new_pipeline_is_applied_synced_and_ready_in_one_status_write() -> None:
    kube, prefect = FakeKube(), FakePrefect(actions=["created work pool eveflow-kubernetes"])
    _stored(kube)
    result = _pass(kube, prefect)
    assert result.problem is None and result.prefect_writes == 1
    assert [e.reason for e in result.events] == ["PrefectSynced", "Applied", "Ready"]
    status = kube.objects[CR]["status"]
    assert _ready(kube)["status"] == "True" and status["workPoolName"] == "eveflow-kubernetes"
    assert status["observedGeneration"] == 1
    assert [w for w in kube.writes if w.startswith("status")] == [f"status {NAME}"]
    assert f"apply Deployment/{NAME}-worker" in kube.writes


def test_a_resync_that_finds_nothing_new_writes_nothing() -> None:
    kube, prefect = FakeKube(), FakePrefect()
    _stored(kube)
    _pass(kube, prefect)
    writes = list(kube.writes)
    again = _pass(kube, prefect)
    assert again.problem is None and again.events == [] and kube.writes == writes


def test_a_worker_not_yet_available_is_written_by_its_deployments_event() -> None:
    kube, prefect = FakeKube(available=False), FakePrefect()
    _stored(kube)
    result = _pass(kube, prefect)
    assert get_condition(result.status, WORKER_AVAILABLE)["status"] == "False"
    assert _ready(kube)["status"] == "False" and "Ready" not in [e.reason for e in result.events]
    # The rollout completes: the Deployment's event brings WorkerAvailable and Ready, once.
    kube.objects[WORKER]["status"] = {"observedGeneration": 1, "availableReplicas": 1}
    worker = asyncio.run(kube.get(WORKER))
    written, events = _run(kube, prefect, lambda r: r.observe_worker(worker))
    assert written is not None and [e.reason for e in events] == ["Ready"]
    assert _ready(kube)["status"] == "True" and kube.objects[CR]["status"]["workPoolName"] == "eveflow-kubernetes"
    writes = list(kube.writes)
    assert _run(kube, prefect, lambda r: r.observe_worker(worker)) == (None, []) and kube.writes == writes


@pytest.mark.parametrize("copy_is", ["current", "from-before-the-pass", "older-than-a-spec-edit"])
def test_a_worker_event_reads_its_pipeline_from_the_watch_when_it_can(copy_is: str) -> None:
    """The owner comes from kopf's index of EvePipelines, without a GET, when the copy carries the
    status this operator last wrote. A copy from before the pass wrote (the watch not caught up)
    is not trusted: it would say "a newer generation awaits its pass" and write nothing, leaving
    the pipeline not Ready (bench/operator.py: 5 of 100). A copy older than someone else's write
    fails the guarded write and is re-read once. Ready is written in each case."""
    kube, prefect = FakeKube(available=False), FakePrefect()
    _stored(kube)

    async def scenario(rec: Reconciler) -> tuple[Any, Any]:
        before_the_pass = await kube.get(CR)
        await rec.reconcile(before_the_pass)
        seen = before_the_pass if copy_is == "from-before-the-pass" else await kube.get(CR)
        if copy_is == "older-than-a-spec-edit":
            kube.touch(CR)
        kube.objects[WORKER]["status"] = {"observedGeneration": 1, "availableReplicas": 1}
        worker = await kube.get(WORKER)
        kube.reads.clear()
        return await rec.observe_worker(worker, known={seen["metadata"]["uid"]: [seen]})

    written, events = _run(kube, prefect, scenario)
    assert written is not None and [e.reason for e in events] == ["Ready"] and _ready(kube)["status"] == "True"
    assert kube.reads == ([] if copy_is == "current" else [CR])


def test_a_worker_event_leaves_a_newer_generation_to_its_pass() -> None:
    kube, prefect = FakeKube(available=False), FakePrefect()
    _stored(kube)
    _pass(kube, prefect)
    kube.objects[CR]["metadata"]["generation"] = 2  # a spec change whose pass has not run yet
    kube.objects[WORKER]["status"] = {"observedGeneration": 1, "availableReplicas": 1}
    worker = asyncio.run(kube.get(WORKER))
    writes = list(kube.writes)
    assert _run(kube, prefect, lambda r: r.observe_worker(worker)) == (None, []) and kube.writes == writes


def test_a_status_conflict_recomputes_from_the_fresh_status_without_a_second_sync() -> None:
    kube, prefect = FakeKube(available=False), FakePrefect()
    _stored(kube)
    _pass(kube, prefect)
    long_ago = "2020-01-01T00:00:00Z"
    for condition in kube.objects[CR]["status"]["conditions"]:
        condition["lastTransitionTime"] = long_ago
    body = asyncio.run(kube.get(CR))
    # Meanwhile another writer marked the worker available (the object moved on).
    kube.objects[CR]["status"]["conditions"] = [
        c if c["type"] != WORKER_AVAILABLE else {**c, "status": "True", "reason": "X", "message": "m"}
        for c in kube.objects[CR]["status"]["conditions"]]
    kube.touch(CR)
    prefect.actions = ["updated deployment order-books"]
    result = _run(kube, prefect, lambda r: r.reconcile(body))
    assert len(prefect.conns) == 2  # one sync per pass: the conflict re-reads, it does not sync again
    assert result.problem is None and kube.writes.count(f"status {NAME}") == 2
    synced = get_condition(kube.objects[CR]["status"], "PrefectSynced")
    assert "updated deployment order-books" in synced["message"]
    # Reduced from the fresh status: this pass's WorkerAvailable False is a transition from its
    # True (from the stale one it would have kept the old time).
    available = get_condition(kube.objects[CR]["status"], WORKER_AVAILABLE)
    assert available["status"] == "False" and available["lastTransitionTime"] != long_ago


def test_a_worker_event_is_not_held_up_by_a_pass_waiting_for_a_sync_slot() -> None:
    # One sync slot, taken by another pipeline's slow sync: this pipeline's next pass waits for
    # it, and its worker's event still writes meanwhile (the pass holds no lock while it waits).
    kube, prefect = FakeKube(available=False), FakePrefect()
    _stored(kube)
    other = kube.put(example("other", NS))
    settings = OperatorSettings(max_concurrent_syncs=1)

    async def scenario(rec: Reconciler) -> tuple[Any, Any]:
        await rec.reconcile(await kube.get(CR))
        kube.objects[WORKER]["status"] = {"observedGeneration": 1, "availableReplicas": 1}
        prefect.gate = asyncio.Event()
        slow = asyncio.create_task(rec.reconcile(other))
        waiting = asyncio.create_task(rec.reconcile(await kube.get(CR)))
        while prefect.entered < 2:
            await asyncio.sleep(0.01)
        observed = await asyncio.wait_for(rec.observe_worker(await kube.get(WORKER)), timeout=5)
        prefect.gate.set()
        await slow
        return observed, await waiting

    (written, events), after = _run(kube, prefect, scenario, settings)
    assert written is not None and [e.reason for e in events] == ["Ready"]
    assert after.problem is None and _ready(kube)["status"] == "True"


def test_autoscaling_removed_drops_the_autoscalers_status() -> None:
    kube, prefect = FakeKube(), FakePrefect()
    doc = example(NAME, NS)
    doc["spec"]["worker"] = {"autoscaling": {"maxReplicas": 3}}
    _stored(kube, doc)
    _pass(kube, prefect)
    kube.objects[CR]["status"]["worker"] = {"desiredReplicas": 2, "reason": "Steady", "waiting": 2, "running": 0}
    kube.objects[CR]["spec"]["worker"] = {"replicas": 1}
    kube.objects[CR]["metadata"]["generation"] = 2
    result = _pass(kube, prefect)
    assert result.problem is None and "worker" not in kube.objects[CR]["status"]


# --- the finalizer pass --------------------------------------------------------------------------------


def test_delete_removes_the_prefect_side_and_forgets_the_pipeline() -> None:
    kube, prefect = FakeKube(), FakePrefect()
    body = _stored(kube)

    async def delete(rec: Reconciler) -> tuple[Any, bool]:
        rec.lock(body["metadata"]["uid"])
        result = await finalize(rec, body, 0)
        return result, body["metadata"]["uid"] in rec._locks

    result, locked = _run(kube, prefect, delete)
    assert result.release and [e.reason for e in result.events] == ["Deleted"] and not locked
    assert prefect.deleted == [f"{NS}/{NAME}"]


@pytest.mark.parametrize(("error", "reason"), [
    (PrefectUnavailable("down"), PREFECT_UNAVAILABLE),
    (PrefectConflict("changed"), PREFECT_CONFLICT),
])
def test_delete_errors_have_the_passes_reasons_and_retry_up_to_the_bound(error: Exception, reason: str) -> None:
    kube, prefect = FakeKube(), FakePrefect(fail=error)
    body = _stored(kube)
    settings = OperatorSettings(finalizer_max_retries=1)
    first = _run(kube, prefect, lambda r: finalize(r, body, 0), settings)
    assert not first.release and first.problem is not None and first.problem.reason == reason
    last = _run(kube, prefect, lambda r: finalize(r, body, 1), settings)
    assert last.release and [e.reason for e in last.events] == ["DeleteAbandoned"]
    assert reason in last.events[0].message and "remove them by hand" in last.events[0].message


def test_delete_with_prefect_credentials_not_opted_in_says_so() -> None:
    kube, prefect = FakeKube(), FakePrefect()
    _with_auth_secret(kube, {})
    body = asyncio.run(kube.get(CR))
    result = _run(kube, prefect, lambda r: finalize(r, body, 0))
    assert not result.release and result.problem is not None and result.problem.reason == SECRET_NOT_OPTED_IN
    assert prefect.deleted == []


def test_two_passes_queued_for_a_sync_slot_apply_the_children_once() -> None:
    # The create pass and an early resync of a new pipeline both wait behind another pipeline's
    # sync: the second sees what the first applied (children read under the lock), writes nothing.
    kube, prefect = FakeKube(), FakePrefect()
    body = _stored(kube)
    other = kube.put(example("other", NS))

    async def scenario(rec: Reconciler) -> list[PassResult]:
        prefect.gate = asyncio.Event()
        slow = asyncio.create_task(rec.reconcile(other))
        queued = [asyncio.create_task(rec.reconcile(body)) for _ in range(2)]
        while prefect.entered < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        prefect.gate.set()
        await slow
        return [await task for task in queued]

    results = _run(kube, prefect, scenario, OperatorSettings(max_concurrent_syncs=1))
    assert all(r.problem is None for r in results)
    assert kube.writes.count(f"apply Deployment/{NAME}-worker") == 1
    assert [e.reason for e in results[1].events] == []

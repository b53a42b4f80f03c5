"""Status reducers: conditions, transitions, carried-over fields, minimal patches."""

from __future__ import annotations

from eveflow_etl.orchestration.types import SyncResult
from eveflow_etl.spec import EvePipelineStatus, RunSummary

from eveflow_operator.status import (
    INVALID_SPEC,
    PREFECT_UNAVAILABLE,
    Condition,
    Observation,
    Problem,
    WorkerState,
    get_condition,
    reduce_status,
    reduce_worker,
    set_condition,
    status_patch,
)

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"


def _sync(**kw) -> SyncResult:
    base = dict(work_pool_name="pool", work_pool_id="wp-1", deployment_ids={"p": "d-1", "p-maintenance": "d-2"},
                schedule_ids={"daily": "s-1"}, spec_hash="h1",
                next_run=RunSummary(deployment="p", state="SCHEDULED", time="2026-01-02T12:15:00Z"))
    base.update(kw)
    return SyncResult(**base)


def _ok(gen: int = 1, available: int = 1, desired: int = 1, **kw) -> Observation:
    return Observation(generation=gen, sync=_sync(**kw), worker=WorkerState(desired, available))


def _cond(status: dict, type_: str) -> dict:
    c = get_condition(status, type_)
    assert c is not None
    return c


def test_all_good_is_ready_with_standard_conditions() -> None:
    s = reduce_status({}, _ok(), T0)
    assert [c["type"] for c in s["conditions"]] == ["Ready", "PrefectSynced", "WorkerAvailable"]
    for c in s["conditions"]:
        assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
        assert c["status"] == "True" and c["lastTransitionTime"] == T0 and c["observedGeneration"] == 1
    assert s["observedGeneration"] == 1
    assert s["workPoolId"] == "wp-1" and s["deploymentIds"] == {"p": "d-1", "p-maintenance": "d-2"}
    assert s["schedules"] == 1 and s["nextRun"]["state"] == "SCHEDULED"
    EvePipelineStatus.model_validate(s)  # the status model (and so the CRD) accepts it


def test_transition_time_kept_while_status_unchanged() -> None:
    s1 = reduce_status({}, _ok(), T0)
    s2 = reduce_status(s1, _ok(gen=2), T1)
    assert _cond(s2, "Ready")["lastTransitionTime"] == T0
    assert _cond(s2, "Ready")["observedGeneration"] == 2 and s2["observedGeneration"] == 2
    s3 = reduce_status(s2, Observation(generation=2, problem=Problem(PREFECT_UNAVAILABLE, "down")), T2)
    ready = _cond(s3, "Ready")
    assert (ready["status"], ready["reason"], ready["message"], ready["lastTransitionTime"]) == (
        "False", "PrefectUnavailable", "down", T2)
    # The worker was not observed during the outage: its condition and ids are carried over.
    assert _cond(s3, "WorkerAvailable")["status"] == "True"
    assert s3["workPoolId"] == "wp-1"


def test_invalid_spec_on_a_new_object() -> None:
    s = reduce_status(None, Observation(generation=1, problem=Problem(INVALID_SPEC, "spec.x: bad")), T0)
    assert _cond(s, "Ready")["reason"] == "InvalidSpec" and _cond(s, "Ready")["message"] == "spec.x: bad"
    assert _cond(s, "PrefectSynced")["status"] == "False"
    assert _cond(s, "WorkerAvailable")["status"] == "Unknown"
    assert "workPoolId" not in s


def test_worker_unavailable_is_not_ready() -> None:
    s = reduce_status({}, _ok(available=0), T0)
    assert _cond(s, "WorkerAvailable")["reason"] == "WorkerUnavailable"
    assert _cond(s, "Ready")["status"] == "False" and _cond(s, "Ready")["message"] == "0/1 worker replicas available"


def test_suspended_is_ready_with_reason_and_no_active_schedules() -> None:
    obs = Observation(generation=3, sync=_sync(paused=True), worker=WorkerState(0, 0), suspended=True)
    s = reduce_status({}, obs, T0)
    assert (_cond(s, "Ready")["status"], _cond(s, "Ready")["reason"]) == ("True", "Suspended")
    assert _cond(s, "WorkerAvailable")["reason"] == "ScaledToZero"
    assert s["schedules"] == 0


def test_reduce_is_idempotent_and_patch_is_minimal() -> None:
    s1 = reduce_status({}, _ok(), T0)
    s2 = reduce_status(s1, _ok(), T1)
    assert s1 == s2
    assert status_patch(s1, s2) is None
    s3 = reduce_status(s2, _ok(last_run=RunSummary(state="COMPLETED", rows_loaded=10)), T2)
    assert status_patch(s2, s3) == {"lastRun": {"state": "COMPLETED", "rowsLoaded": 10}}


def test_patch_leaves_kopf_bookkeeping_and_removes_dropped_keys() -> None:
    old = {"kopf": {"progress": {}}, "nextRun": {"state": "SCHEDULED"}, "observedGeneration": 1}
    new = {"observedGeneration": 1}
    assert status_patch(old, new) == {"nextRun": None}


def test_patch_removes_keys_dropped_inside_nested_objects() -> None:
    # kopf sends the patch as a JSON merge patch, which merges nested objects: the API server's
    # result must be the new status, and the next pass must then find nothing to write.
    from tests.harness.kube_emulator.patching import merge_patch

    old = reduce_status({}, _ok(last_run=RunSummary(state="COMPLETED", rows_loaded=10)), T0)
    # Maintenance disabled (its deployment and schedule ids go), a new run without row counts yet.
    new = reduce_status(old, _ok(deployment_ids={"p": "d-1"}, schedule_ids={},
                                    last_run=RunSummary(state="RUNNING")), T1)
    stored = merge_patch(old, status_patch(old, new))
    assert stored == new
    assert status_patch(stored, new) is None
    assert merge_patch(new, status_patch(new, old)) == old


def test_set_condition_replaces_one_type_and_keeps_order() -> None:
    conds = set_condition([], "WorkerAvailable", Condition("True", "R", "m"), 1, T0)
    conds = set_condition(conds, "Ready", Condition("True", "R", "m"), 1, T0)
    conds = set_condition(conds, "Custom", Condition("False", "R", "m"), None, T0)
    assert [c["type"] for c in conds] == ["Ready", "WorkerAvailable", "Custom"]
    assert "observedGeneration" not in conds[-1]


def test_worker_change_alone_updates_worker_and_ready_only() -> None:
    pending = reduce_status({}, _ok(available=0), T0)
    assert _cond(pending, "Ready")["reason"] == "WorkerUnavailable"
    s = reduce_worker(pending, WorkerState(desired=1, available=1), suspended=False, now=T1)
    assert (_cond(s, "WorkerAvailable")["status"], _cond(s, "Ready")["status"]) == ("True", "True")
    assert _cond(s, "Ready")["lastTransitionTime"] == T1
    assert _cond(s, "PrefectSynced") == _cond(pending, "PrefectSynced")
    assert {k: v for k, v in s.items() if k != "conditions"} == {k: v for k, v in pending.items() if k != "conditions"}
    assert all(c["observedGeneration"] == 1 for c in s["conditions"])
    assert status_patch(s, reduce_worker(s, WorkerState(1, 1), False, T2)) is None  # no-op: no write


def test_worker_change_keeps_a_prefect_problem_in_ready() -> None:
    down = reduce_status(None, Observation(generation=1, problem=Problem(PREFECT_UNAVAILABLE, "down")), T0)
    s = reduce_worker(down, WorkerState(1, 1), suspended=False, now=T1)
    assert _cond(s, "WorkerAvailable")["status"] == "True"
    assert (_cond(s, "Ready")["status"], _cond(s, "Ready")["reason"]) == ("False", "PrefectUnavailable")


def test_worker_change_before_any_pass_writes_nothing() -> None:
    assert reduce_worker({}, WorkerState(1, 1), suspended=False, now=T0) == {}

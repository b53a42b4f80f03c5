"""Pure status reducers: what one reconcile pass observed -> the EvePipeline's new ``.status``.

Three standard conditions (type/status/reason/message/lastTransitionTime/observedGeneration):

* ``PrefectSynced`` -- the pool, deployments and schedules in Prefect match the spec.
* ``WorkerAvailable`` -- the worker Deployment has its desired replicas available.
* ``Ready`` -- both (a suspended pipeline, scaled to 0 on purpose, is Ready with reason Suspended).

``lastTransitionTime`` only moves when a condition's status changes, so a resync that finds
nothing new produces the same status and the caller can skip the write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, NamedTuple

from eveflow_etl.orchestration.types import SyncResult

READY = "Ready"
PREFECT_SYNCED = "PrefectSynced"
WORKER_AVAILABLE = "WorkerAvailable"
CONDITION_ORDER = (READY, PREFECT_SYNCED, WORKER_AVAILABLE)

# Reasons (CamelCase, stable: alerts and tests key on them).
INVALID_SPEC = "InvalidSpec"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_NOT_OPTED_IN = "SecretNotOptedIn"  # a Secret named as Prefect credentials lacks the opt-in label
NOT_OWNED = "NotOwned"  # an object under a child's name exists and is not eveflow's
PREFECT_UNAVAILABLE = "PrefectUnavailable"
PREFECT_AUTH_FAILED = "PrefectAuthFailed"
PREFECT_REJECTED = "PrefectRejected"
PREFECT_CONFLICT = "PrefectConflict"
KUBERNETES_ERROR = "KubernetesError"
SYNCED = "Synced"
SUSPENDED = "Suspended"
WORKER_UNAVAILABLE = "WorkerUnavailable"
MINIMUM_REPLICAS = "MinimumReplicasAvailable"
SCALED_TO_ZERO = "ScaledToZero"
NOT_RECONCILED = "NotReconciled"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Problem:
    """Why a pass stopped: a reason from above and a message that says what to fix."""

    reason: str
    message: str


class Condition(NamedTuple):
    """One condition as a reducer decides it (``type``, times and generation are added when set)."""

    state: str  # "True" | "False" | "Unknown": the condition's ``status`` field
    reason: str
    message: str

    @classmethod
    def stored(cls, condition: Mapping[str, Any]) -> Condition:
        return cls(condition["status"], condition["reason"], condition.get("message", ""))


@dataclass(frozen=True)
class WorkerState:
    desired: int
    available: int


@dataclass(frozen=True)
class Observation:
    """Everything one pass learned; ``problem`` set means it stopped there."""

    generation: int | None
    problem: Problem | None = None
    sync: SyncResult | None = None
    worker: WorkerState | None = None
    suspended: bool = False


def get_condition(status: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def set_condition(
    conditions: list[dict[str, Any]], type_: str, condition: Condition, generation: int | None, now: str,
) -> list[dict[str, Any]]:
    """A new list with ``type_`` set; ``lastTransitionTime`` kept when the status did not change."""
    previous = next((c for c in conditions if c.get("type") == type_), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == condition.state else now
    new = {"type": type_, "status": condition.state, "reason": condition.reason, "message": condition.message,
           "lastTransitionTime": since}
    if generation is not None:
        new["observedGeneration"] = generation
    others = [c for c in conditions if c.get("type") != type_]
    return sorted(others + [new], key=lambda c: _order(c.get("type", "")))


def _order(type_: str) -> tuple[int, str]:
    return (CONDITION_ORDER.index(type_) if type_ in CONDITION_ORDER else len(CONDITION_ORDER), type_)


def _prefect_condition(obs: Observation) -> Condition:
    if obs.problem is not None:
        return Condition("False", obs.problem.reason, obs.problem.message)
    if obs.sync is None:
        return Condition("Unknown", NOT_RECONCILED, "not synced to Prefect yet")
    sync = obs.sync
    what = (f"work pool {sync.work_pool_name}, {len(sync.deployment_ids)} deployment(s), "
            f"{len(sync.schedule_ids)} schedule(s)")
    if obs.suspended:
        return Condition("True", SUSPENDED, f"{what}; schedules paused (spec.suspend: true)")
    done = "; ".join(sync.actions) if sync.actions else "in sync"
    return Condition("True", SYNCED, f"{what}: {done}")


def _worker_condition(obs: Observation, previous: Mapping[str, Any] | None) -> Condition:
    if obs.worker is None:
        if previous:
            return Condition.stored(previous)
        return Condition("Unknown", NOT_RECONCILED, "worker Deployment not created yet")
    worker = obs.worker
    if worker.desired == 0:
        return Condition("False", SCALED_TO_ZERO, "worker scaled to 0" + (" (suspended)" if obs.suspended else ""))
    counted = f"{worker.available}/{worker.desired} worker replicas available"
    if worker.available >= worker.desired:
        return Condition("True", MINIMUM_REPLICAS, counted)
    return Condition("False", WORKER_UNAVAILABLE, counted)


def _ready_condition(obs: Observation, prefect: Condition, worker: Condition) -> Condition:
    if prefect.state != "True":
        return Condition("False", prefect.reason, prefect.message)
    if obs.suspended:
        return Condition("True", SUSPENDED, "suspended: schedules paused and worker scaled to 0")
    if worker.state == "True" or worker.reason == SCALED_TO_ZERO:
        return Condition("True", "Ready", "Prefect objects in sync and worker available")
    return Condition("False", worker.reason, worker.message)


def _with_conditions(previous: Mapping[str, Any], decided: Mapping[str, Condition],
                     generation: int | None, now: str) -> list[dict[str, Any]]:
    conditions = [dict(c) for c in previous.get("conditions") or []]
    for type_, condition in decided.items():
        conditions = set_condition(conditions, type_, condition, generation, now)
    return conditions


def reduce_status(previous: Mapping[str, Any] | None, obs: Observation, now: str) -> dict[str, Any]:
    """The whole new ``.status`` (camelCase) from the previous one and this pass's observation.

    Fields the pass did not observe (ids after a Prefect outage, last run) are carried over.
    """
    previous = dict(previous or {})
    status: dict[str, Any] = {k: v for k, v in previous.items() if k != "conditions"}
    prefect = _prefect_condition(obs)
    worker = _worker_condition(obs, get_condition(previous, WORKER_AVAILABLE))
    ready = _ready_condition(obs, prefect, worker)
    status["conditions"] = _with_conditions(
        previous, {PREFECT_SYNCED: prefect, WORKER_AVAILABLE: worker, READY: ready}, obs.generation, now)
    if obs.generation is not None:
        status["observedGeneration"] = obs.generation
    if obs.sync is not None:
        status.update(_synced_fields(obs.sync, obs.suspended))
    return {k: v for k, v in status.items() if v is not None}


def _synced_fields(sync: SyncResult, suspended: bool) -> dict[str, Any]:
    """The status fields a successful sync reports (a None removes the field)."""
    return {
        "workPoolName": sync.work_pool_name,
        "workPoolId": sync.work_pool_id,
        "deploymentIds": dict(sorted(sync.deployment_ids.items())),
        "scheduleIds": dict(sorted(sync.schedule_ids.items())),
        # The pipeline's own schedules (maintenance ids are keyed "<deployment>/<slug>").
        "schedules": 0 if sync.paused or suspended else len([k for k in sync.schedule_ids if "/" not in k]),
        "specHash": sync.spec_hash,
        "lastRun": sync.last_run.model_dump(by_alias=True, exclude_none=True) if sync.last_run else None,
        "nextRun": sync.next_run.model_dump(by_alias=True, exclude_none=True) if sync.next_run else None,
    }


def reduce_worker(previous: Mapping[str, Any] | None, worker: WorkerState, suspended: bool, now: str) -> dict[str, Any]:
    """``previous`` with WorkerAvailable and Ready recomputed for a change of the worker
    Deployment alone; PrefectSynced and the rest are kept (a reconcile pass observes those).

    Unchanged when no pass has written a status yet: there is no Prefect side to combine with.
    """
    previous = dict(previous or {})
    synced = get_condition(previous, PREFECT_SYNCED)
    if synced is None:
        return previous
    generation = previous.get("observedGeneration")
    obs = Observation(generation=generation, worker=worker, suspended=suspended)
    worker_condition = _worker_condition(obs, None)
    ready = _ready_condition(obs, Condition.stored(synced), worker_condition)
    conditions = _with_conditions(previous, {WORKER_AVAILABLE: worker_condition, READY: ready}, generation, now)
    return {**previous, "conditions": conditions}


def ready_message(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    """Ready's message when ``after`` turned Ready from ``before`` (the "Ready" Event), else None."""
    was, now = get_condition(before, READY) or {}, get_condition(after, READY) or {}
    if now.get("status") == "True" and was.get("status") != "True":
        return str(now.get("message", ""))
    return None


def is_new_problem(before: Mapping[str, Any] | None, problem: Problem, generation: int | None) -> bool:
    """``problem`` is not already what Ready says for this generation (one Warning per distinct
    problem, not one per retry)."""
    ready = get_condition(before, READY) or {}
    return (ready.get("reason"), ready.get("message"), ready.get("observedGeneration")) != (
        problem.reason, problem.message, generation)


def status_patch(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch (RFC 7386, what kopf sends) turning ``previous`` into ``new``; None if
    equal. Nested objects are diffed too: a merge patch merges them, so a key dropped inside one
    (a schedule id, a deployment id, ``lastRun.rowsLoaded``) must be sent as None, else it stays
    on the object and every later pass finds it again and rewrites the status."""
    previous = dict(previous or {})
    # kopf keeps its own bookkeeping under status.kopf; leave it alone.
    patch = _merge_diff({k: v for k, v in previous.items() if k != "kopf"},
                        {k: v for k, v in new.items() if k != "kopf"})
    return patch or None


def _merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for key in set(old) | set(new):
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        if isinstance(was, Mapping) and isinstance(now, Mapping):
            patch[key] = _merge_diff(was, now)
        else:
            patch[key] = now  # lists and scalars are replaced whole; None removes
    return patch

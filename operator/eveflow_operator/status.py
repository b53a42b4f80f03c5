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
from typing import Any, Mapping

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
    conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
    generation: int | None, now: str,
) -> list[dict[str, Any]]:
    """A new list with ``type_`` set; ``lastTransitionTime`` kept when the status did not change."""
    previous = next((c for c in conditions if c.get("type") == type_), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == status else now
    new = {"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": since}
    if generation is not None:
        new["observedGeneration"] = generation
    others = [c for c in conditions if c.get("type") != type_]
    return sorted(others + [new], key=lambda c: _order(c.get("type", "")))


def _order(type_: str) -> tuple[int, str]:
    return (CONDITION_ORDER.index(type_) if type_ in CONDITION_ORDER else len(CONDITION_ORDER), type_)


def _prefect_condition(obs: Observation) -> tuple[str, str, str]:
    if obs.problem is not None:
        return "False", obs.problem.reason, obs.problem.message
    if obs.sync is None:
        return "Unknown", NOT_RECONCILED, "not synced to Prefect yet"
    sync = obs.sync
    what = (f"work pool {sync.work_pool_name}, {len(sync.deployment_ids)} deployment(s), "
            f"{len(sync.schedule_ids)} schedule(s)")
    if obs.suspended:
        return "True", SUSPENDED, f"{what}; schedules paused (spec.suspend: true)"
    done = "; ".join(sync.actions) if sync.actions else "in sync"
    return "True", SYNCED, f"{what}: {done}"


def _worker_condition(obs: Observation, previous: dict[str, Any] | None) -> tuple[str, str, str]:
    if obs.worker is None:
        if previous:
            return previous["status"], previous["reason"], previous.get("message", "")
        return "Unknown", NOT_RECONCILED, "worker Deployment not created yet"
    w = obs.worker
    if w.desired == 0:
        return "False", SCALED_TO_ZERO, "worker scaled to 0" + (" (suspended)" if obs.suspended else "")
    if w.available >= w.desired:
        return "True", MINIMUM_REPLICAS, f"{w.available}/{w.desired} worker replicas available"
    return "False", WORKER_UNAVAILABLE, f"{w.available}/{w.desired} worker replicas available"


def _ready_condition(obs: Observation, prefect: tuple[str, str, str], worker: tuple[str, str, str]) -> tuple[str, str, str]:
    if prefect[0] != "True":
        return "False", prefect[1], prefect[2]
    if obs.suspended:
        return "True", SUSPENDED, "suspended: schedules paused and worker scaled to 0"
    if worker[0] == "True" or worker[1] == SCALED_TO_ZERO:
        return "True", "Ready", "Prefect objects in sync and worker available"
    return "False", worker[1], worker[2]


def reduce_status(previous: Mapping[str, Any] | None, obs: Observation, now: str) -> dict[str, Any]:
    """The whole new ``.status`` (camelCase) from the previous one and this pass's observation.

    Fields the pass did not observe (ids after a Prefect outage, last run) are carried over.
    """
    previous = dict(previous or {})
    status: dict[str, Any] = {k: v for k, v in previous.items() if k != "conditions"}
    conditions = [dict(c) for c in previous.get("conditions") or []]
    prefect = _prefect_condition(obs)
    worker = _worker_condition(obs, get_condition(previous, WORKER_AVAILABLE))
    ready = _ready_condition(obs, prefect, worker)
    for type_, (state, reason, message) in ((PREFECT_SYNCED, prefect), (WORKER_AVAILABLE, worker), (READY, ready)):
        conditions = set_condition(conditions, type_, state, reason, message, obs.generation, now)
    status["conditions"] = conditions
    if obs.generation is not None:
        status["observedGeneration"] = obs.generation
    if obs.sync is not None:
        sync = obs.sync
        status.update({
            "workPoolName": sync.work_pool_name,
            "workPoolId": sync.work_pool_id,
            "deploymentIds": dict(sorted(sync.deployment_ids.items())),
            "scheduleIds": dict(sorted(sync.schedule_ids.items())),
            # The pipeline's own schedules (maintenance ids are keyed "<deployment>/<slug>").
            "schedules": 0 if sync.paused or obs.suspended else len([k for k in sync.schedule_ids if "/" not in k]),
            "specHash": sync.spec_hash,
            "lastRun": sync.last_run.model_dump(by_alias=True, exclude_none=True) if sync.last_run else None,
            "nextRun": sync.next_run.model_dump(by_alias=True, exclude_none=True) if sync.next_run else None,
        })
    return {k: v for k, v in status.items() if v is not None}


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
    prefect = (synced["status"], synced["reason"], synced.get("message", ""))
    worker_c = _worker_condition(obs, None)
    ready = _ready_condition(obs, prefect, worker_c)
    conditions = [dict(c) for c in previous.get("conditions") or []]
    for type_, (state, reason, message) in ((WORKER_AVAILABLE, worker_c), (READY, ready)):
        conditions = set_condition(conditions, type_, state, reason, message, generation, now)
    return {**previous, "conditions": conditions}


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

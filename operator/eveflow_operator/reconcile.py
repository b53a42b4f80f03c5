"""One reconcile pass and the worker's event path, as plain coroutines (no kopf decorators here).

A pass: preflight (parse the spec into the model, the tenant boundary, Secrets, children not
ours) -> sync Prefect (the sync library writes nothing when in sync) -> apply children (GETs
only when in sync) -> observe the worker and write the status. The status of an EvePipeline
has one writer, :meth:`Reconciler.write_status`, called under the pipeline's lock with a
resourceVersion-guarded patch; ``handlers.py`` turns what a pass returns into Events, metrics
and kopf's Permanent/Temporary errors. The finalizer pass is ``finalize_pass.py``.
"""

from __future__ import annotations

import asyncio
import copy
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Collection, Mapping

from eveflow_etl.errors import ConfigError
from eveflow_etl.orchestration.queue_depth import SharedPoolReader
from eveflow_etl.orchestration.types import (
    PrefectAuthError,
    PrefectConflict,
    PrefectConnection,
    PrefectRejected,
    PrefectUnavailable,
    SyncResult,
)
from eveflow_etl.plan import pipeline_plan
from eveflow_etl.spec import API_GROUP, API_VERSION, KIND, EvePipeline, parse_pipeline

from eveflow_operator.apply import (
    ApplyResult,
    apply_children,
    delete_stale,
    find_labelled,
    read_children,
    takeover_problem,
)
from eveflow_operator.autoscale import AutoscaleMemory, status_desired
from eveflow_operator.boundary import image_problem, plain_http_problem
from eveflow_operator.children import build_children
from eveflow_operator.kube import (
    KubeApi,
    KubeConflict,
    KubeError,
    namespace_path,
    object_path,
)
from eveflow_operator.labels import child_labels, owner_selector
from eveflow_operator.prefect_conn import (
    SecretNotFound,
    SecretNotOptedIn,
    build_connection,
    check_destination_secret,
)
from eveflow_operator.prefect_side import PipelineSync
from eveflow_operator.rbac import (
    RBAC_API_VERSION,
    RBAC_KINDS,
    jobs_namespace,
    jobs_namespace_problem,
    needs_namespace_consent,
    stale_rbac,
    wanted_rbac,
)
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.status import (
    INVALID_SPEC,
    KUBERNETES_ERROR,
    NOT_OWNED,
    PREFECT_AUTH_FAILED,
    PREFECT_CONFLICT,
    PREFECT_REJECTED,
    PREFECT_UNAVAILABLE,
    SECRET_NOT_FOUND,
    SECRET_NOT_OPTED_IN,
    Observation,
    Problem,
    WorkerState,
    is_new_problem,
    now_rfc3339,
    ready_message,
    reduce_status,
    reduce_worker,
    status_patch,
)
from eveflow_operator.worker_deployment import worker_name, worker_replicas

# Problems the user must fix in the spec: no retries (PermanentError); a new generation retries.
PERMANENT = {INVALID_SPEC, PREFECT_REJECTED}

# The one table from an error a pass (or a delete) stops at to its condition reason and message.
# Looked up along the error's class hierarchy: a subclass listed first (SecretNotOptedIn,
# PrefectConflict) keeps its own reason. {url} and {credentials} describe the Prefect connection.
PROBLEMS: dict[type[Exception], tuple[str, str]] = {
    SecretNotOptedIn: (SECRET_NOT_OPTED_IN, "{exc}"),
    SecretNotFound: (SECRET_NOT_FOUND, "{exc}"),
    PrefectUnavailable: (PREFECT_UNAVAILABLE, "Prefect API at {url} unreachable: {exc}; retrying"),
    PrefectAuthError: (PREFECT_AUTH_FAILED, "Prefect refused the credentials ({credentials}): {exc}"),
    # A concurrent change the sync library could not adopt by itself: not the spec.
    PrefectConflict: (PREFECT_CONFLICT, "concurrent change in Prefect, retrying: {exc}"),
    PrefectRejected: (PREFECT_REJECTED, "Prefect rejected the pipeline: {exc}"),
    KubeError: (KUBERNETES_ERROR, "{exc}"),
}
# What a reconcile pass reports in the status; a KubeError there goes to kopf as a TemporaryError.
PASS_STOPS = (SecretNotFound, PrefectUnavailable, PrefectAuthError, PrefectRejected)
STATUS_WRITE_ATTEMPTS = 5


def problem_of(exc: Exception, conn: PrefectConnection | None = None) -> Problem:
    """The condition reason and message for ``exc`` (one of :data:`PROBLEMS`' error types)."""
    reason, template = next(PROBLEMS[cls] for cls in type(exc).__mro__ if cls in PROBLEMS)
    return Problem(reason, template.format(exc=exc, url=conn.safe_url if conn else "(not read)",
                                           credentials=conn.describe() if conn else "not read"))


@dataclass
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class PassResult:
    status: dict[str, Any]  # as the pass left it (written, or already so)
    problem: Problem | None = None
    events: list[EventSpec] = field(default_factory=list)
    prefect_writes: int = 0

    @property
    def permanent(self) -> bool:
        return self.problem is not None and self.problem.reason in PERMANENT


@dataclass
class StatusWrite:
    before: dict[str, Any]  # the stored status the reduction started from (re-read after a conflict)
    after: dict[str, Any]  # the status now stored
    stored: dict[str, Any] | None  # the EvePipeline the patch returned; None: nothing was sent


# The EvePipeline as stored -> its new .status (recomputed from the fresh object after a conflict).
Reduce = Callable[[Mapping[str, Any]], dict[str, Any]]


class PassStopped(Exception):
    """A pass stops at a problem: the status says it, no further step runs."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.reason}: {problem.message}")
        self.problem = problem


@dataclass
class Preflight:
    """What a pass established before it waits for a sync slot: the spec and the connection."""

    pipeline: EvePipeline
    conn: PrefectConnection


def pipeline_from_body(body: Mapping[str, Any]) -> EvePipeline:
    meta = body.get("metadata") or {}
    document = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind", KIND),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": dict(body.get("spec") or {}),
    }
    return parse_pipeline(document, origin=f"{KIND} {meta.get('namespace')}/{meta.get('name')}")


def pipeline_path(namespace: str, name: str) -> str:
    return object_path(f"{API_GROUP}/{API_VERSION}", KIND, namespace, name)


def with_worker_image(pipeline: EvePipeline, settings: OperatorSettings) -> EvePipeline:
    """The pipeline as synced to Prefect: flow-run Jobs of a kubernetes pool use the same image
    as the worker, which is the operator's default when the spec names none."""
    image = pipeline_plan(pipeline, default_image=settings.worker_image).worker_image
    if pipeline.spec.worker.image == image:
        return pipeline
    worker = pipeline.spec.worker.model_copy(update={"image": image})
    return pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"worker": worker})})


def _spec_message(error: ConfigError) -> str:
    # parse_pipeline prefixes "<origin>: "; the condition is already on the object, keep the rest.
    text = str(error)
    prefix = f"{KIND} "
    if text.startswith(prefix) and ": " in text:
        text = text.split(": ", 1)[1]
    return text


def pipeline_uid(meta: Mapping[str, Any]) -> str:
    """The key of a pipeline's lock and autoscaler memory."""
    return str(meta.get("uid", meta["name"]))


class Reconciler:
    """Holds the shared clients; one instance per operator process."""

    def __init__(self, settings: OperatorSettings, kube: KubeApi, prefect: PipelineSync) -> None:
        self.settings = settings
        self.kube = kube
        self.prefect = prefect
        self._locks: dict[str, asyncio.Lock] = {}
        # The status this process last wrote (or read back) per pipeline: the one status writer
        # knows which copy of an object already carries its latest write (see observe_worker).
        self._status_written: dict[str, dict[str, Any]] = {}
        self._syncs = asyncio.Semaphore(settings.max_concurrent_syncs)
        self.autoscale = AutoscaleMemory()  # autoscale_pass.poll's memory between polls
        self.pool_reader = SharedPoolReader()  # one queue-depth read per pool per poll

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._status_written.pop(uid, None)
        self.autoscale.forget(uid)

    def autoscaled(self, uid: str, status: Mapping[str, Any] | None) -> int | None:
        """The autoscaler's last count for the worker: this process's, else the status's."""
        return self.autoscale.desired.get(uid, status_desired(status))

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get(object_path("v1", "Secret", namespace, name))

    async def read_secret_metadata(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get(object_path("v1", "Secret", namespace, name), metadata_only=True)

    async def boundary_problem(self, pipeline: EvePipeline, namespace: str) -> str | None:
        """What in the spec reaches beyond the pipeline's namespace, or None (checked before anything
        is read or written for it: the jobs namespace, the image, where credentials go)."""
        settings = self.settings
        labels = None
        if needs_namespace_consent(pipeline, namespace, settings.allowed_jobs_namespaces) and (
                not settings.namespaces or jobs_namespace(pipeline, namespace) in settings.namespaces):
            target = await self.kube.get(namespace_path(jobs_namespace(pipeline, namespace)))
            labels = ((target or {}).get("metadata") or {}).get("labels") or {}
        return (jobs_namespace_problem(pipeline, namespace, settings.namespaces, settings.allowed_jobs_namespaces, labels)
                or image_problem(pipeline, settings) or plain_http_problem(pipeline, settings))

    async def find_rbac(self, pipeline: str, namespace: str) -> dict[str, list[dict[str, Any]]]:
        """The worker Roles/RoleBindings of pipeline ``namespace/pipeline``, wherever they are
        (a jobs namespace the spec names no longer is found this way, too)."""
        return await find_labelled(self.kube, RBAC_API_VERSION, RBAC_KINDS, owner_selector(pipeline, namespace),
                                   self.settings.namespaces)

    # --- the status: one writer ---------------------------------------------------------------

    async def write_status(self, cr: Mapping[str, Any], reduce: Reduce) -> StatusWrite | None:
        """Write ``reduce(cr)`` as the EvePipeline's ``.status``, only what changed, guarded by the
        resourceVersion it was computed from. A conflict re-reads the object and reduces again
        (nothing else is redone). None: the EvePipeline is gone. The caller holds its lock.

        The only writer of an EvePipeline's status: reconcile passes, the worker's events and
        the autoscaler all come here (kopf persists only its annotations)."""
        meta = cr["metadata"]
        path = pipeline_path(meta["namespace"], meta["name"])
        for _ in range(STATUS_WRITE_ATTEMPTS):
            before = dict(cr.get("status") or {})
            after = reduce(cr)
            changes = status_patch(before, after)
            if not changes:
                return StatusWrite(before, after, None)
            try:
                stored = await self.kube.patch_status(path, changes, cr["metadata"]["resourceVersion"])
                self._status_written[pipeline_uid(meta)] = copy.deepcopy(stored.get("status") or {})
                return StatusWrite(before, after, stored)
            except KubeConflict:
                fresh = await self.kube.get(path)
                if fresh is None or pipeline_uid(fresh["metadata"]) != pipeline_uid(meta):
                    return None
                self._status_written[pipeline_uid(meta)] = copy.deepcopy(fresh.get("status") or {})
                cr = fresh
        raise KubeConflict(409, f"the status of {path} kept changing under {STATUS_WRITE_ATTEMPTS} writes")

    # --- a reconcile pass --------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any]) -> PassResult:
        """One pass over ``body`` (as kopf saw it); the status is written before it returns."""
        # A copy: kopf hands timers a live view that follows later events, and every step of a
        # pass must see one generation (its spec, its generation, its status and resourceVersion).
        body = copy.deepcopy(dict(body))
        uid = pipeline_uid(body["metadata"])
        try:
            ready = await self._preflight(body)
        except PassStopped as stop:
            async with self.lock(uid):
                return await self._stopped(body, stop.problem)
        async with self._sync_slot_then_lock(uid) as sync_done:
            # The children as they are now, under the lock (a pass that waited for its slot
            # behind another pass of the same pipeline sees what that one applied).
            live = await self._owned_children(body, ready.pipeline)
            synced = await self._sync(body, ready) if not isinstance(live, Problem) else live
            sync_done()
            if isinstance(synced, Problem):
                return await self._stopped(body, synced)
            assert not isinstance(live, Problem)
            events = [EventSpec("Normal", "PrefectSynced", "; ".join(synced.actions)[:1000])] if synced.actions else []
            applied = await self._apply(body, ready.pipeline, live, events)
            return await self._observe(body, ready.pipeline, synced, applied, events)

    @asynccontextmanager
    async def _sync_slot_then_lock(self, uid: str) -> AsyncIterator[Callable[[], None]]:
        """One of the ``max_concurrent_syncs`` Prefect slots, then the pipeline's lock; yields a
        call that gives the slot back once the sync is done (the pass keeps the lock). Waiting
        for a slot holds no lock: the worker's events and the autoscaler go on meanwhile."""
        await self._syncs.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._syncs.release()
        try:
            async with self.lock(uid):
                yield release
        finally:
            release()

    async def _preflight(self, body: Mapping[str, Any]) -> Preflight:
        """Everything checked before Prefect: nothing is written for a pipeline that cannot run."""
        namespace = body["metadata"]["namespace"]
        try:
            pipeline = pipeline_from_body(body)
        except ConfigError as exc:
            raise PassStopped(Problem(INVALID_SPEC, _spec_message(exc))) from None
        problem = await self.boundary_problem(pipeline, namespace)
        if problem is not None:
            raise PassStopped(Problem(INVALID_SPEC, problem))
        try:
            conn = await build_connection(pipeline, self.settings, namespace, self.read_secret)
            await check_destination_secret(pipeline, namespace, self.read_secret_metadata)
        except SecretNotFound as exc:
            raise PassStopped(problem_of(exc)) from None
        return Preflight(pipeline, conn)

    async def _owned_children(self, body: Mapping[str, Any], pipeline: EvePipeline) -> list[dict[str, Any] | None] | Problem:
        """The live object under each child's name, or NotOwned when one is not ours (checked
        before Prefect: a pipeline that cannot have its worker writes nothing there)."""
        # Names only (the autoscaled count is read when applying).
        children = build_children(pipeline, self.settings, body["metadata"]["namespace"])
        live = await read_children(self.kube, children)
        refused = takeover_problem(children, live)
        return Problem(NOT_OWNED, refused) if refused is not None else live

    async def _sync(self, body: Mapping[str, Any], ready: Preflight) -> SyncResult | Problem:
        """Prefect brought in line with the spec, or why not."""
        try:
            return await self.prefect.sync(with_worker_image(ready.pipeline, self.settings), ready.conn,
                                           namespace=body["metadata"]["namespace"])
        except PASS_STOPS as exc:
            return problem_of(exc, ready.conn)

    async def _apply(self, body: Mapping[str, Any], pipeline: EvePipeline, live: list[dict[str, Any] | None],
                     events: list[EventSpec]) -> ApplyResult:
        """The children, with the autoscaler's current count; stale worker RBAC removed."""
        meta = body["metadata"]
        namespace, uid = meta["namespace"], pipeline_uid(meta)
        if pipeline.spec.worker.autoscaling is None:  # removed: a fixed count again, no stale memory
            self.autoscale.forget(uid)
        children = build_children(pipeline, self.settings, namespace, autoscaled=self._autoscaled(pipeline, body))
        applied = await apply_children(self.kube, children, body, self.settings.field_manager, live)
        found = await self.find_rbac(meta["name"], namespace)
        applied.deleted = await delete_stale(self.kube, stale_rbac(found, wanted_rbac(pipeline, namespace)))
        if applied.applied or applied.deleted:
            parts = [f"applied {', '.join(applied.applied)}"] if applied.applied else []
            parts += [f"deleted {', '.join(applied.deleted)}"] if applied.deleted else []
            events.append(EventSpec("Normal", "Applied", "; ".join(parts)))
        return applied

    def _autoscaled(self, pipeline: EvePipeline, body: Mapping[str, Any]) -> int | None:
        if pipeline.spec.worker.autoscaling is None:
            return None
        return self.autoscaled(pipeline_uid(body["metadata"]), body.get("status"))

    async def _observe(self, body: Mapping[str, Any], pipeline: EvePipeline, synced: SyncResult,
                       applied: ApplyResult, events: list[EventSpec]) -> PassResult:
        """The worker as applied, reduced with the sync into the status, written."""
        desired = worker_replicas(pipeline, self._autoscaled(pipeline, body))
        deployment = await self._rollout_glance(body, pipeline, applied, desired)
        worker = WorkerState(desired=desired, available=_available(deployment))
        obs = Observation(generation=body["metadata"].get("generation"), sync=synced, worker=worker,
                          suspended=pipeline.spec.suspend)
        now = now_rfc3339()

        def reduce(cr: Mapping[str, Any]) -> dict[str, Any]:
            new = reduce_status(cr.get("status"), obs, now)
            if pipeline.spec.worker.autoscaling is None:
                new.pop("worker", None)  # the autoscaler's status.worker, left from when it was on
            return new

        write = await self.write_status(body, reduce)
        if write is None:
            return PassResult(status=reduce(body), events=events, prefect_writes=synced.writes)
        message = ready_message(write.before, write.after)
        if message is not None:
            events.append(EventSpec("Normal", "Ready", message))
        return PassResult(status=write.after, events=events, prefect_writes=synced.writes)

    async def _rollout_glance(self, body: Mapping[str, Any], pipeline: EvePipeline, applied: ApplyResult,
                              desired: int) -> Mapping[str, Any]:
        """The worker Deployment; a fresh rollout is often available within moments, so a short
        look here saves a second status write (a slower one is left to the Deployment's own
        events: :meth:`observe_worker`)."""
        deployment = applied.objects.get("Deployment") or {}
        name = worker_name(pipeline)
        if f"Deployment/{name}" not in applied.applied:
            return deployment
        path = object_path("apps/v1", "Deployment", body["metadata"]["namespace"], name)
        for _ in range(3):
            if _available(deployment) >= desired:
                break
            await asyncio.sleep(0.1)
            deployment = await self.kube.get(path) or deployment
        return deployment

    async def _stopped(self, body: Mapping[str, Any], problem: Problem) -> PassResult:
        """The status of a pass that stopped at ``problem``, written; a Warning when it is new."""
        generation = body["metadata"].get("generation")
        obs = Observation(generation=generation, problem=problem)
        now = now_rfc3339()
        write = await self.write_status(body, lambda cr: reduce_status(cr.get("status"), obs, now))
        before, after = (write.before, write.after) if write else (body.get("status"), reduce_status(body.get("status"), obs, now))
        events = [EventSpec("Warning", problem.reason, problem.message)] if is_new_problem(before, problem, generation) else []
        return PassResult(status=after, problem=problem, events=events)

    # --- the worker Deployment's events ------------------------------------------------------

    async def observe_worker(self, deployment: Mapping[str, Any],
                             known: Mapping[str, Collection[Mapping[str, Any]]] | None = None,
                             ) -> tuple[dict[str, Any] | None, list[EventSpec]]:
        """Bring the owning EvePipeline's WorkerAvailable and Ready in line with its worker
        Deployment; called on the Deployment's changes, so no pass waits for a rollout.

        Writes only the status, from the latest EvePipeline, and not while a newer generation
        awaits its pass (that pass observes the Deployment itself). Returns the EvePipeline it
        wrote (None: nothing to write) and the Events to post on it.

        ``known``: EvePipelines by uid as the operator's watch last saw them (kopf's index). The
        owner is read there instead of with a GET (a rollout brings 3-4 Deployment events, each
        was a GET) when that copy carries the status this process last wrote: only this process
        writes the status, so such a copy is current where it matters, and any other change since
        (a spec edit) fails the guarded write, which re-reads. A copy from before that write could
        answer "nothing to write" wrongly (e.g. "a newer generation awaits its pass" when that
        pass has just written): it is not used.
        """
        owner = _worker_owner(deployment)
        if owner is None:
            return None, []
        uid = owner["uid"]
        async with self.lock(uid):
            seen = next(iter((known or {}).get(uid) or ()), None)
            current = seen is not None and uid in self._status_written and (
                (seen.get("status") or {}) == self._status_written[uid])
            cr = seen if current else await self.kube.get(
                pipeline_path(deployment["metadata"]["namespace"], owner["name"]))
            if cr is None or pipeline_uid(cr["metadata"]) != uid:
                self._locks.pop(uid, None)  # a late event of a deleted pipeline
                self._status_written.pop(uid, None)
                return None, []
            if not current:
                self._status_written[uid] = copy.deepcopy(cr.get("status") or {})
            try:
                pipeline = pipeline_from_body(cr)
            except ConfigError:
                return None, []
            available, now = _available(deployment), now_rfc3339()

            def reduce(fresh: Mapping[str, Any]) -> dict[str, Any]:
                status = dict(fresh.get("status") or {})
                meta = fresh["metadata"]
                if meta.get("deletionTimestamp") or status.get("observedGeneration") != meta.get("generation"):
                    return status  # a newer generation's pass observes the Deployment itself
                worker = WorkerState(desired=worker_replicas(pipeline, self.autoscaled(uid, status)), available=available)
                return reduce_worker(status, worker, pipeline.spec.suspend, now)

            write = await self.write_status(cr, reduce)
            if write is None or write.stored is None:
                return None, []
            message = ready_message(write.before, write.after)
            return write.stored, [EventSpec("Normal", "Ready", message)] if message is not None else []


def _worker_owner(deployment: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The EvePipeline ownerReference of the operator's own worker Deployment, else None
    (anyone who may create Deployments can add an ownerReference)."""
    meta = deployment.get("metadata") or {}
    owner = next((r for r in meta.get("ownerReferences") or []
                  if r.get("kind") == KIND and str(r.get("apiVersion", "")).startswith(f"{API_GROUP}/")), None)
    if owner is None or not is_our_worker(deployment, owner["name"]):
        return None
    return owner


def is_our_worker(deployment: Mapping[str, Any], pipeline: str) -> bool:
    """The worker Deployment the operator created for EvePipeline ``pipeline``: its name, and
    the labels it was given (a look-alike with another name never counts)."""
    meta = deployment.get("metadata") or {}
    labels = meta.get("labels") or {}
    wanted = child_labels(pipeline, "worker")
    return meta.get("name") == f"{pipeline}-worker" and all(
        labels.get(k) == v for k, v in wanted.items() if k != "app.kubernetes.io/version")


def _available(deployment: Mapping[str, Any]) -> int:
    """Available replicas of the current generation (0 while a rollout is not yet observed)."""
    status = deployment.get("status") or {}
    current = status.get("observedGeneration", 0) >= (deployment.get("metadata") or {}).get("generation", 0)
    return int(status.get("availableReplicas") or 0) if current else 0


def backoff(settings: OperatorSettings, retry: int, *, cap: float = 300.0) -> float:
    """Exponential backoff for TemporaryError: base, 2x base, 4x base ... capped."""
    return min(cap, settings.retry_backoff_seconds * (2 ** min(retry, 10)))

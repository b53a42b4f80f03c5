"""One reconcile pass and one finalizer pass, as plain coroutines (no kopf decorators here).

A pass: parse the spec into the model -> read Secrets -> sync Prefect (the sync library writes
nothing when in sync) -> apply children (GETs only when in sync) -> reduce the status. It
returns what happened; ``handlers.py`` turns that into a status patch, Events, and kopf's
Permanent/Temporary errors.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from eveflow_etl.errors import ConfigError
from eveflow_etl.orchestration.queue_depth import SharedPoolReader
from eveflow_etl.orchestration.types import (
    PrefectAuthError,
    PrefectConflict,
    PrefectRejected,
    PrefectUnavailable,
    SyncResult,
)
from eveflow_etl.spec import API_GROUP, API_VERSION, KIND, EvePipeline, parse_pipeline

from eveflow_operator import status as st
from eveflow_operator.apply import apply_children, delete_stale, find_labelled, read_children, takeover_problem
from eveflow_operator.autoscale import AutoscaleMemory, status_desired
from eveflow_operator.boundary import image_problem, plain_http_problem
from eveflow_operator.children import build_children
from eveflow_operator.kube import KubeApi, KubeConflict, KubeError, namespace_path, object_path
from eveflow_operator.labels import child_labels, owner_selector
from eveflow_operator.prefect_conn import (
    SecretNotFound,
    SecretNotOptedIn,
    build_connection,
    check_destination_secret,
)
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
from eveflow_operator.worker import worker_name, worker_replicas

# Problems the user must fix in the spec: no retries (PermanentError); a new generation retries.
PERMANENT = {st.INVALID_SPEC, st.PREFECT_REJECTED}


@dataclass
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class PassResult:
    status: dict[str, Any]
    problem: st.Problem | None = None
    events: list[EventSpec] = field(default_factory=list)
    prefect_writes: int = 0

    @property
    def permanent(self) -> bool:
        return self.problem is not None and self.problem.reason in PERMANENT


@dataclass
class DeletePassResult:
    release: bool  # False: retry later
    events: list[EventSpec] = field(default_factory=list)
    problem: st.Problem | None = None


def pipeline_from_body(body: Mapping[str, Any]) -> EvePipeline:
    meta = body.get("metadata") or {}
    document = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind", KIND),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": dict(body.get("spec") or {}),
    }
    return parse_pipeline(document, origin=f"{KIND} {meta.get('namespace')}/{meta.get('name')}")


def with_worker_image(pipeline: EvePipeline, settings: OperatorSettings) -> EvePipeline:
    """The pipeline as synced to Prefect: flow-run Jobs of a kubernetes pool use the same image
    as the worker, which is the operator's default when the spec names none."""
    if pipeline.spec.worker.image:
        return pipeline
    worker = pipeline.spec.worker.model_copy(update={"image": settings.worker_image})
    return pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"worker": worker})})


def _spec_message(error: ConfigError, name: str) -> str:
    # parse_pipeline prefixes "<origin>: "; the condition is already on the object, keep the rest.
    text = str(error)
    prefix = f"{KIND} "
    if text.startswith(prefix) and ": " in text:
        text = text.split(": ", 1)[1]
    return text


class Reconciler:
    """Holds the shared clients; one instance per operator process."""

    def __init__(self, settings: OperatorSettings, kube: KubeApi) -> None:
        self.settings = settings
        self.kube = kube
        self._locks: dict[str, asyncio.Lock] = {}
        # uid -> the status changes of the last pass, which kopf writes after the pass returns.
        self._unwritten: dict[str, dict[str, Any]] = {}
        self._syncs = asyncio.Semaphore(settings.max_concurrent_syncs)
        self.autoscale = AutoscaleMemory()  # autoscale_pass.poll's memory between polls
        self.pool_reader = SharedPoolReader()  # one queue-depth read per pool per poll

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._unwritten.pop(uid, None)
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

    async def reconcile(self, body: Mapping[str, Any]) -> PassResult:
        meta = body["metadata"]
        uid = meta.get("uid", meta["name"])
        async with self.lock(uid):
            result = await self._reconcile(body)
            changes = st.status_patch(body.get("status"), result.status)
            if changes:
                # The values kopf's write leaves, not the patch (a nested removal is a None in it).
                self._unwritten[uid] = {k: result.status.get(k) for k in changes}
            return result

    async def _reconcile(self, body: Mapping[str, Any]) -> PassResult:
        from eveflow_etl.orchestration import sync

        meta = body["metadata"]
        namespace, generation = meta["namespace"], meta.get("generation")
        previous = dict(body.get("status") or {})
        now = st.now_rfc3339()
        events: list[EventSpec] = []

        def stop(reason: str, message: str) -> PassResult:
            problem = st.Problem(reason, message)
            obs = st.Observation(generation=generation, problem=problem)
            new = st.reduce_status(previous, obs, now)
            old_ready = st.get_condition(previous, st.READY) or {}
            # One Warning per distinct problem, not one per retry.
            if (old_ready.get("reason"), old_ready.get("message"), old_ready.get("observedGeneration")) != (
                    reason, message, generation):
                events.append(EventSpec("Warning", reason, message))
            return PassResult(status=new, problem=problem, events=events)

        try:
            pipeline = pipeline_from_body(body)
        except ConfigError as exc:
            return stop(st.INVALID_SPEC, _spec_message(exc, meta["name"]))
        problem = await self.boundary_problem(pipeline, namespace)
        if problem is not None:  # before Prefect: nothing is written for a pipeline that cannot run
            return stop(st.INVALID_SPEC, problem)
        try:
            conn = await build_connection(pipeline, self.settings, namespace, self.read_secret)
            await check_destination_secret(pipeline, namespace, self.read_secret_metadata)
        except SecretNotOptedIn as exc:
            return stop(st.SECRET_NOT_OPTED_IN, str(exc))
        except SecretNotFound as exc:
            return stop(st.SECRET_NOT_FOUND, str(exc))
        autoscaled = self.autoscaled(meta.get("uid", meta["name"]), previous)
        if pipeline.spec.worker.autoscaling is None:  # removed: a fixed count again, no stale memory
            self.autoscale.forget(meta.get("uid", meta["name"]))
            autoscaled = None
        children = build_children(pipeline, self.settings, namespace, autoscaled=autoscaled)
        live = await read_children(self.kube, children)
        refused = takeover_problem(children, live)
        if refused is not None:  # before Prefect, too: a pipeline that cannot have its worker writes nothing
            return stop(st.NOT_OWNED, refused)

        try:
            async with self._syncs:
                result: SyncResult = await sync.sync_pipeline(
                    with_worker_image(pipeline, self.settings), conn, namespace=namespace)
        except PrefectUnavailable as exc:
            return stop(st.PREFECT_UNAVAILABLE, f"Prefect API at {conn.safe_url} unreachable: {exc}; retrying")
        except PrefectAuthError as exc:
            return stop(st.PREFECT_AUTH_FAILED, f"Prefect refused the credentials ({conn.describe()}): {exc}")
        except PrefectConflict as exc:
            # A concurrent change the sync library could not adopt by itself: not the spec.
            return stop(st.PREFECT_CONFLICT, f"concurrent change in Prefect, retrying: {exc}")
        except PrefectRejected as exc:
            return stop(st.PREFECT_REJECTED, f"Prefect rejected the pipeline: {exc}")
        if result.actions:
            events.append(EventSpec("Normal", "PrefectSynced", "; ".join(result.actions)[:1000]))

        applied = await apply_children(self.kube, children, body, self.settings.field_manager, live)
        found = await self.find_rbac(meta["name"], namespace)
        deleted = await delete_stale(self.kube, stale_rbac(found, wanted_rbac(pipeline, namespace)))
        if applied.applied or deleted:
            parts = [f"applied {', '.join(applied.applied)}"] if applied.applied else []
            parts += [f"deleted {', '.join(deleted)}"] if deleted else []
            events.append(EventSpec("Normal", "Applied", "; ".join(parts)))

        # A fresh rollout is often available within moments: a short look here saves a second
        # status write; a slower one is left to the Deployment's own events (observe_worker).
        deployment = applied.objects.get("Deployment") or {}
        desired = worker_replicas(pipeline, autoscaled)
        name = worker_name(pipeline)
        if f"Deployment/{name}" in applied.applied:
            for _ in range(3):
                if _available(deployment) >= desired:
                    break
                await asyncio.sleep(0.1)
                deployment = await self.kube.get(object_path("apps/v1", "Deployment", namespace, name)) or deployment
        available = _available(deployment)
        worker = st.WorkerState(desired=desired, available=available)
        obs = st.Observation(generation=generation, sync=result, worker=worker, suspended=pipeline.spec.suspend)
        new = st.reduce_status(previous, obs, now)
        if pipeline.spec.worker.autoscaling is None:
            new.pop("worker", None)  # the autoscaler's status.worker, left from when it was on
        if (st.get_condition(previous, st.READY) or {}).get("status") != "True" and \
                (st.get_condition(new, st.READY) or {}).get("status") == "True":
            events.append(EventSpec("Normal", "Ready", st.get_condition(new, st.READY)["message"]))
        return PassResult(status=new, events=events, prefect_writes=result.writes)

    async def observe_worker(self, deployment: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[EventSpec]]:
        """Bring the owning EvePipeline's WorkerAvailable and Ready in line with its worker
        Deployment; called on the Deployment's changes, so no pass waits for a rollout.

        Writes only the status, from the latest EvePipeline, and not while a newer generation
        awaits its pass (that pass observes the Deployment itself). Returns the EvePipeline it
        wrote (None: nothing to write) and the Events to post on it.
        """
        meta = deployment.get("metadata") or {}
        owner = next((r for r in meta.get("ownerReferences") or []
                      if r.get("kind") == KIND and str(r.get("apiVersion", "")).startswith(f"{API_GROUP}/")), None)
        if owner is None or not is_our_worker(deployment, owner["name"]):
            return None, []  # anyone who may create Deployments can add an ownerReference
        path = object_path(f"{API_GROUP}/{API_VERSION}", KIND, meta["namespace"], owner["name"])
        async with self.lock(owner["uid"]):
            for _ in range(3):  # a conflict: someone wrote the status meanwhile; recompute from theirs
                cr = await self._written(path, owner["uid"])
                cr_meta = (cr or {}).get("metadata") or {}
                status = (cr or {}).get("status") or {}
                if cr is None or cr_meta.get("uid") != owner["uid"]:
                    self._locks.pop(owner["uid"], None)  # a late event of a deleted pipeline
                    return None, []
                if cr_meta.get("deletionTimestamp") or status.get("observedGeneration") != cr_meta.get("generation"):
                    return None, []
                try:
                    pipeline = pipeline_from_body(cr)
                except ConfigError:
                    return None, []
                worker = st.WorkerState(desired=worker_replicas(pipeline, self.autoscaled(owner["uid"], status)),
                                        available=_available(deployment))
                new = st.reduce_worker(status, worker, pipeline.spec.suspend, st.now_rfc3339())
                changes = st.status_patch(status, new)
                if not changes:
                    return None, []
                try:
                    written = await self.kube.patch_status(path, changes, cr_meta["resourceVersion"])
                except KubeConflict:
                    continue
                ready = st.get_condition(new, st.READY) or {}
                became_ready = ready.get("status") == "True" and \
                    (st.get_condition(status, st.READY) or {}).get("status") != "True"
                return written, [EventSpec("Normal", "Ready", ready["message"])] if became_ready else []
        return None, []

    async def _written(self, path: str, uid: str) -> dict[str, Any] | None:
        """The EvePipeline once kopf has written the last pass's status (kopf writes it after the
        pass returns, unconditionally: changes computed from an older status would be lost)."""
        cr = None
        delay, waited = 0.05, 0.0
        while True:
            cr = await self.kube.get(path)
            pending = self._unwritten.get(uid)
            if cr is None or pending is None or all((cr.get("status") or {}).get(k) == v for k, v in pending.items()):
                break
            if waited >= 5.0:
                break
            # Backing off: a hundred pipelines rolling out at once must not poll the API server
            # ten times a second each.
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)
        # Seen, or kopf's write failed (bounded wait): either way the next pass starts afresh.
        self._unwritten.pop(uid, None)
        return cr

    async def finalize(self, body: Mapping[str, Any], retry: int) -> DeletePassResult:
        """Delete (or orphan) the Prefect objects; after the retry bound, give up and release."""
        meta = body["metadata"]
        result = await self._finalize(body, retry)
        if result.release:
            # Every way out (Orphan, an invalid spec, given up): the pipeline is gone, and so
            # must be its lock and pending status (the GC's DELETED event of the worker does not).
            self.forget(meta.get("uid", meta["name"]))
        return result

    async def _finalize(self, body: Mapping[str, Any], retry: int) -> DeletePassResult:
        from eveflow_etl.orchestration import sync

        meta = body["metadata"]
        namespace = meta["namespace"]
        try:
            # Owner references cannot cross namespaces: no garbage collector removes these. Found
            # by label, not from the spec, so an invalid spec or an old jobs namespace leaks none.
            found = await self.find_rbac(meta["name"], namespace)
            stale = [s for s in stale_rbac(found, None) if s[2] != namespace]  # the GC takes those
            await delete_stale(self.kube, stale)
        except KubeError as exc:
            problem = st.Problem(st.KUBERNETES_ERROR, str(exc))
            if retry >= self.settings.finalizer_max_retries:
                return DeletePassResult(True, [EventSpec(
                    "Warning", "DeleteAbandoned",
                    f"gave up removing the worker Roles/RoleBindings in other namespaces after "
                    f"{retry + 1} attempts ({exc}); find them with -l {owner_selector(meta['name'], namespace)} "
                    "and remove them by hand")], problem)
            return DeletePassResult(False, [], problem)
        try:
            pipeline = pipeline_from_body(body)
        except ConfigError:
            return DeletePassResult(True, [EventSpec("Normal", "Deleted", "spec was invalid: nothing to remove in Prefect")])
        if pipeline.spec.deletion_policy == "Orphan":
            return DeletePassResult(True, [EventSpec("Normal", "Orphaned",
                                                     "deletionPolicy: Orphan -- Prefect pool and deployments kept")])
        try:
            async with self.lock(meta.get("uid", meta["name"])):
                conn = await build_connection(pipeline, self.settings, namespace, self.read_secret)
                result = await sync.delete_pipeline(pipeline, conn, namespace=namespace)
        except (SecretNotFound, PrefectUnavailable, PrefectAuthError, PrefectRejected, KubeError) as exc:
            reason = {SecretNotFound: st.SECRET_NOT_FOUND, PrefectUnavailable: st.PREFECT_UNAVAILABLE,
                      PrefectAuthError: st.PREFECT_AUTH_FAILED}.get(type(exc), st.PREFECT_REJECTED)
            if isinstance(exc, KubeError):  # reading the Secret; not caught, kopf would retry forever
                reason = st.KUBERNETES_ERROR
            if retry >= self.settings.finalizer_max_retries:
                return DeletePassResult(True, [EventSpec(
                    "Warning", "DeleteAbandoned",
                    f"gave up removing the Prefect deployments after {retry + 1} attempts ({reason}: {exc}); "
                    "they may remain in Prefect -- remove them by hand")], st.Problem(reason, str(exc)))
            return DeletePassResult(False, [], st.Problem(reason, str(exc)))
        finally:
            self.forget(meta.get("uid", meta["name"]))
        message = "; ".join(result.actions) or "nothing to remove in Prefect"
        if result.kept_work_pool_reason:
            message += f"; kept work pool: {result.kept_work_pool_reason}"
        return DeletePassResult(True, [EventSpec("Normal", "Deleted", message[:1000])])


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


def monotonic() -> float:
    return time.monotonic()

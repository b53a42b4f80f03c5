"""kopf handlers: register, delegate to the Reconciler, map outcomes to Events/metrics/errors.

Nothing is registered at import: :func:`register` is called with settings already loaded
(by ``eveflow_operator.entrypoint``), so decorator arguments such as the resync
period come from the environment the operator was started with.
"""

from __future__ import annotations

import copy
import logging
import random
from typing import Any, Mapping

import kopf

from eveflow_etl.orchestration import deployments
from eveflow_etl.orchestration.types import redact_url
from eveflow_etl.spec import API_GROUP, API_VERSION, PLURAL

from eveflow_operator import autoscale_pass, finalize_pass, metrics
from eveflow_operator.kube import KubeApi, KubeConflict, KubeError
from eveflow_operator.labels import WORKER_LABELS, WORKER_SELECTOR
from eveflow_operator.prefect_side import PrefectSync
from eveflow_operator.reconcile import PERMANENT, EventSpec, PassResult, Reconciler, backoff, pipeline_uid
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.status import (
    NOT_OWNED,
    PREFECT_AUTH_FAILED,
    PREFECT_CONFLICT,
    READY,
    SECRET_NOT_FOUND,
    SECRET_NOT_OPTED_IN,
    get_condition,
)

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
AUTOSCALE_TICK_SECONDS = 5.0  # the least spec.worker.autoscaling.pollSeconds
FINALIZER = f"{API_GROUP}/finalizer"


def warm_up() -> None:
    """Compute the flows' parameter schemas before serving, not in the first pass (~5 s; in a
    worker thread under the event loop it takes twice that)."""
    for entrypoint in (deployments.ETL_ENTRYPOINT, deployments.MAINTENANCE_ENTRYPOINT):
        deployments.flow_parameter_schema(entrypoint)


class _Runtime:
    reconciler: Reconciler | None = None


def _post(body: Mapping[str, Any], events: list[EventSpec]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)  # type: ignore[arg-type]


def _finish(body: Mapping[str, Any], result: PassResult, tracker: metrics.PassTracker,
            settings: OperatorSettings, retry: int, *, raise_errors: bool) -> None:
    """Post Events, count the pass, and tell kopf what to do next (the pass wrote the status)."""
    _post(body, result.events)
    metrics.PREFECT_WRITES.inc(result.prefect_writes)
    meta = body.get("metadata") or {}
    metrics.observe_last_run(meta.get("namespace", ""), meta.get("name", ""), result.status)
    if result.problem is None:
        return
    tracker.problem(result.problem.reason)
    if not raise_errors:
        return
    if result.permanent:
        raise kopf.PermanentError(f"{result.problem.reason}: {result.problem.message}")
    delay = backoff(settings, retry)
    if result.problem.reason == PREFECT_CONFLICT:
        delay = 0.2 + random.uniform(0, 0.5)
    if result.problem.reason in (SECRET_NOT_FOUND, SECRET_NOT_OPTED_IN, NOT_OWNED, PREFECT_AUTH_FAILED):
        delay = max(delay, 30.0)  # the user has to act; do not hammer the API meanwhile
    raise kopf.TemporaryError(f"{result.problem.reason}: {result.problem.message}", delay=delay)


def register(operator_settings: OperatorSettings, registry: kopf.OperatorRegistry | None = None) -> None:
    """Register every handler of the operator on ``registry`` (kopf's default one if None)."""
    registry = registry or kopf.get_default_registry()  # type: ignore[attr-defined]
    runtime = _Runtime()
    _register_lifecycle(registry, runtime, operator_settings)
    _register_passes(registry, runtime, operator_settings)
    _register_autoscaler(registry, runtime)
    _register_worker_events(registry, runtime)
    _register_finalizer(registry, runtime, operator_settings)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    # kopf keeps its progress and diffbase in annotations and our handlers return None (no
    # results under .status): the status has one writer, Reconciler.write_status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events say what happened
    settings.watching.server_timeout = 300
    # The worker Deployments only, filtered by the API server, not every Deployment in sight.
    settings.watching.label_selectors["apps", "deployments"] = WORKER_SELECTOR
    settings.networking.request_timeout = 60


def _register_lifecycle(registry: kopf.OperatorRegistry, runtime: _Runtime, operator_settings: OperatorSettings) -> None:
    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
        configure_kopf(settings)
        runtime.reconciler = Reconciler(operator_settings, KubeApi.from_environment(), PrefectSync())
        metrics.serve(operator_settings.metrics_port)
        logger.info("eveflow operator: Prefect %s, resync %ss (+%ss jitter), namespaces %s",
                    redact_url(operator_settings.prefect_api_url), operator_settings.resync_seconds,
                    operator_settings.resync_jitter_seconds, operator_settings.namespaces or "all")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if runtime.reconciler is not None:
            await runtime.reconciler.kube.close()


def _register_passes(registry: kopf.OperatorRegistry, runtime: _Runtime, operator_settings: OperatorSettings) -> None:
    async def reconcile(trigger: str, body: Mapping[str, Any], retry: int, raise_errors: bool = True) -> None:
        assert runtime.reconciler is not None
        with metrics.track(trigger) as tracker:
            try:
                result = await runtime.reconciler.reconcile(body)
            except KubeConflict as exc:
                raise kopf.TemporaryError(f"conflict, retrying: {exc}", delay=1.0) from None
            except KubeError as exc:
                raise kopf.TemporaryError(str(exc), delay=backoff(operator_settings, retry)) from None
            _finish(body, result, tracker, operator_settings, retry, raise_errors=raise_errors)

    @kopf.on.resume(*RESOURCE, registry=registry)
    async def on_resume(body: kopf.Body, retry: int, **_: Any) -> None:
        await reconcile("resume", body, retry)

    @kopf.on.create(*RESOURCE, registry=registry)
    async def on_create(body: kopf.Body, retry: int, **_: Any) -> None:
        await reconcile("create", body, retry)

    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    async def on_update(body: kopf.Body, retry: int, **_: Any) -> None:
        await reconcile("update", body, retry)

    def first_resync(body: kopf.Body, **_: Any) -> float:
        # kopf's first tick comes after initial_delay, then every interval. A pipeline whose status
        # has its next run gets a full period first (its create or resume pass has just run: after
        # an operator restart, a tick within the phase was a second pass of every pipeline). One
        # without (just created: Prefect's scheduler adds the runs seconds after the deployment, so
        # the creating pass cannot see them) gets its first resync within the phase: it fills
        # status.nextRun within a minute, not after a full period. The phase spreads pipelines.
        phase = random.uniform(0, operator_settings.resync_jitter_seconds)
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if spec.get("schedules") and not spec.get("suspend") and not status.get("nextRun"):
            return phase
        return operator_settings.resync_seconds + phase

    @kopf.timer(*RESOURCE, registry=registry, interval=operator_settings.resync_seconds,
                idle=operator_settings.resync_idle_seconds,
                initial_delay=first_resync, when=lambda body, **_: not body["metadata"].get("deletionTimestamp"))
    async def resync(body: kopf.Body, **_: Any) -> None:
        ready = get_condition(body.get("status"), READY) or {}
        if ready.get("reason") in PERMANENT and ready.get("observedGeneration") == body["metadata"].get("generation"):
            return  # already told the user what to fix; a spec change brings the next pass
        await reconcile("resync", body, 0, raise_errors=False)


def _register_autoscaler(registry: kopf.OperatorRegistry, runtime: _Runtime) -> None:
    # Queue-depth autoscaling: ticks at the smallest pollSeconds; each pipeline polls at its own.
    # Only pipelines with worker.autoscaling get this timer; an unchanged poll writes nothing.
    @kopf.timer(*RESOURCE, registry=registry, interval=AUTOSCALE_TICK_SECONDS,
                when=lambda body, spec, **_: bool((spec.get("worker") or {}).get("autoscaling"))
                and not body["metadata"].get("deletionTimestamp"))
    async def autoscale(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
        assert runtime.reconciler is not None
        try:
            result = await autoscale_pass.poll(runtime.reconciler, body)
        except KubeError as exc:
            logger.warning("autoscaling: worker not scaled (%s); the next poll retries", exc)
            return
        if result.decision is not None:
            meta = body["metadata"]
            metrics.WORKER_DESIRED_REPLICAS.labels(meta["namespace"], meta["name"]).set(result.decision.desired)
            metrics.WORKER_WAITING_RUNS.labels(meta["namespace"], meta["name"]).set(result.depth.waiting)
        _post(body, result.events)


def _register_worker_events(registry: kopf.OperatorRegistry, runtime: _Runtime) -> None:
    # The EvePipelines by uid, as kopf's watch last saw them: a worker's event reads its owner
    # here instead of with a GET (Reconciler.observe_worker).
    @kopf.index(*RESOURCE, id="evepipelines_by_uid", registry=registry)  # the id names the kwarg
    def evepipelines_by_uid(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {pipeline_uid(body["metadata"]): copy.deepcopy(dict(body))}

    # WorkerAvailable follows the worker Deployment's own changes: a pass never polls a rollout
    # (each poll was a full pass with Prefect reads, a CR write and a "failed temporarily" line).
    @kopf.on.event("apps", "v1", "deployments", labels=WORKER_LABELS, registry=registry)
    async def worker_changed(type: str, body: kopf.Body, logger: logging.Logger,
                             evepipelines_by_uid: kopf.Index, **_: Any) -> None:
        if type == "DELETED" or runtime.reconciler is None:
            return  # a deleted worker is re-created by the next pass
        metrics.observe_worker_deployment(body)
        try:
            pipeline, events = await runtime.reconciler.observe_worker(body, known=evepipelines_by_uid)
            if pipeline is not None:
                _post(pipeline, events)
        except KubeError as exc:
            logger.warning("worker availability not written to the EvePipeline (%s); the resync will", exc)


def _register_finalizer(registry: kopf.OperatorRegistry, runtime: _Runtime, operator_settings: OperatorSettings) -> None:
    @kopf.on.delete(*RESOURCE, registry=registry)
    async def on_delete(body: kopf.Body, retry: int, **_: Any) -> None:
        assert runtime.reconciler is not None
        with metrics.track("delete") as tracker:
            result = await finalize_pass.finalize(runtime.reconciler, body, retry)
            _post(body, result.events)
            if result.problem is not None:
                tracker.problem(result.problem.reason)
            if result.release:
                metrics.forget_pipeline(body["metadata"].get("namespace", ""), body["metadata"]["name"])
                return
            problem = result.problem
            raise kopf.TemporaryError(f"{problem.reason}: {problem.message}" if problem else "retry",
                                      delay=min(backoff(operator_settings, retry), 60.0))

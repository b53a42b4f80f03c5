"""One autoscaling poll of one EvePipeline (the kopf timer in ``handlers.py`` calls it).

Reads the pool's queue depth (shared with the other pipelines on the pool), decides with
:func:`eveflow_operator.autoscale.decide`, and writes only on change: the worker Deployment
(server-side apply of the same object a reconcile pass builds, with the new count), then
``status.worker``. An unchanged poll writes nothing to Kubernetes or Prefect.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from eveflow_etl.errors import ConfigError
from eveflow_etl.orchestration.queue_depth import QueueDepth
from eveflow_etl.plan import pipeline_plan

from eveflow_operator import autoscale as asc
from eveflow_operator.apply import owned
from eveflow_operator.prefect_conn import build_connection
from eveflow_operator.reconcile import PASS_STOPS, EventSpec, Reconciler, pipeline_from_body
from eveflow_operator.status import PREFECT_SYNCED, get_condition
from eveflow_operator.worker_deployment import build_worker_deployment, worker_replicas

log = logging.getLogger(__name__)

# A run due within the next poll plus about the time a worker pod takes to start counts now,
# so the replica is up when the run is due.
WORKER_START_SECONDS = 30


@dataclass
class PollResult:
    decision: asc.Decision | None = None  # None: not due, or nothing to decide (see skipped)
    events: list[EventSpec] = field(default_factory=list)
    depth: QueueDepth = QueueDepth(0, 0)
    skipped: str = ""


def lead_seconds(poll_seconds: int) -> float:
    return poll_seconds + WORKER_START_SECONDS


async def poll(rec: Reconciler, body: Mapping[str, Any], now: float | None = None) -> PollResult:
    meta = body["metadata"]
    uid, namespace = meta["uid"], meta["namespace"]
    memory = rec.autoscale
    try:
        pipeline = pipeline_from_body(body)
    except ConfigError:
        return PollResult(skipped="invalid spec")  # the reconcile pass reports it
    auto = pipeline.spec.worker.autoscaling
    status = dict(body.get("status") or {})
    if auto is None:
        memory.forget(uid)
        return PollResult(skipped="no autoscaling")
    if status.get("observedGeneration") != meta.get("generation"):
        return PollResult(skipped="a reconcile pass is due")  # it applies the new spec first
    if (get_condition(status, PREFECT_SYNCED) or {}).get("status") != "True":
        # The last pass stopped (a spec the boundary checks refused, a worker Deployment not
        # ours, Prefect down): the autoscaler must not apply what that pass would not.
        return PollResult(skipped="the last reconcile pass stopped")
    now = time.monotonic() if now is None else now
    # The timer ticks at the smallest pollSeconds; each pipeline polls at its own (0.5 s slack
    # for the tick's own jitter).
    if now - memory.polled.get(uid, float("-inf")) < auto.poll_seconds - 0.5:
        return PollResult(skipped="not due")
    memory.polled[uid] = now
    async with rec.lock(uid):
        current = memory.desired.get(uid, asc.status_desired(status))
        current = worker_replicas(pipeline, current)
        depth = QueueDepth(0, 0)
        if pipeline.spec.suspend:
            decision = asc.decide(auto, depth, current, None, now, suspended=True)
        else:
            try:
                conn = await build_connection(pipeline, rec.settings, namespace, rec.read_secret)
                runs = await rec.pool_reader.runs(conn, pipeline.spec.work_pool.name,
                                                  lead_seconds=lead_seconds(auto.poll_seconds),
                                                  max_age=auto.poll_seconds)
            except PASS_STOPS as exc:
                # Keep the current count; the reconcile pass reports Prefect/Secret problems.
                log.warning("autoscaling %s/%s: queue depth not read (%s); keeping %d replica(s)",
                            namespace, meta["name"], exc, current)
                return PollResult(skipped=f"queue depth not read: {type(exc).__name__}")
            queues = set(pipeline_plan(pipeline, namespace).worker_queues)
            depth = runs.depth(set((status.get("deploymentIds") or {}).values()), queues)
            decision = asc.decide(auto, depth, current, memory.low_since.get(uid), now)
        if decision.low_since is None:
            memory.low_since.pop(uid, None)
        else:
            memory.low_since[uid] = decision.low_since
        events = []
        if decision.desired != current:
            memory.desired[uid] = decision.desired
            deployment = build_worker_deployment(pipeline, rec.settings, namespace, autoscaled=decision.desired)
            await rec.kube.apply(owned(deployment, body), rec.settings.field_manager)
            events.append(EventSpec("Normal", decision.reason, decision.message))
        else:
            memory.desired.setdefault(uid, current)
        worker = asc.worker_status(decision, depth)
        await rec.write_status(body, lambda cr: {**(cr.get("status") or {}), "worker": worker})
        return PollResult(decision=decision, events=events, depth=depth)

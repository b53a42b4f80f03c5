"""Prometheus metrics of the operator (served on EVEFLOW_OPERATOR_METRICS_PORT at /metrics)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "eveflow_operator_reconciles_total", "Reconcile passes by trigger and result.",
    ["trigger", "result"], registry=REGISTRY,
)
ERRORS = Counter(
    "eveflow_operator_reconcile_errors_total", "Passes that ended in a problem, by reason.",
    ["trigger", "reason"], registry=REGISTRY,
)
DURATION = Histogram(
    "eveflow_operator_reconcile_duration_seconds", "Duration of reconcile passes.", ["trigger"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY,
)
PREFECT_WRITES = Counter(
    "eveflow_operator_prefect_writes_total", "Prefect API write calls made by syncs.", registry=REGISTRY,
)

LAST_RUN_ROWS_LOADED = Gauge(
    "eveflow_operator_last_run_rows_loaded",
    "Rows inserted or updated by each pipeline's last finished run (status.lastRun.rowsLoaded).",
    ["namespace", "pipeline"], registry=REGISTRY,
)
LAST_RUN_ROWS_QUARANTINED = Gauge(
    "eveflow_operator_last_run_rows_quarantined",
    "Rows the last finished run sent to quarantine (status.lastRun.rowsQuarantined).",
    ["namespace", "pipeline"], registry=REGISTRY,
)
WORKER_DESIRED_REPLICAS = Gauge(
    "eveflow_worker_desired_replicas",
    "Worker replicas the autoscaler wants for each pipeline (status.worker.desiredReplicas).",
    ["namespace", "pipeline"], registry=REGISTRY,
)
WORKER_READY_REPLICAS = Gauge(
    "eveflow_worker_ready_replicas",
    "Ready replicas of each pipeline's worker Deployment (as the operator last saw it).",
    ["namespace", "pipeline"], registry=REGISTRY,
)
WORKER_WAITING_RUNS = Gauge(
    "eveflow_worker_waiting_runs",
    "Flow runs due, pending or running on each autoscaled pipeline's worker queues.",
    ["namespace", "pipeline"], registry=REGISTRY,
)


def observe_last_run(namespace: str, pipeline: str, status: Mapping[str, Any]) -> None:
    """Export the row counts of the run the status reports (nothing before a first run)."""
    last_run = status.get("lastRun") or {}
    if last_run.get("rowsLoaded") is not None:
        LAST_RUN_ROWS_LOADED.labels(namespace, pipeline).set(last_run["rowsLoaded"])
    if last_run.get("rowsQuarantined") is not None:
        LAST_RUN_ROWS_QUARANTINED.labels(namespace, pipeline).set(last_run["rowsQuarantined"])


def observe_worker_deployment(deployment: Mapping[str, Any]) -> None:
    """Export a worker Deployment's ready replicas under its owning pipeline's name."""
    meta = deployment.get("metadata") or {}
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("kind") == "EvePipeline"), None)
    if owner is not None:
        ready = (deployment.get("status") or {}).get("readyReplicas") or 0
        WORKER_READY_REPLICAS.labels(meta.get("namespace", ""), owner["name"]).set(ready)


def forget_pipeline(namespace: str, pipeline: str) -> None:
    """Drop a deleted pipeline's series so dashboards do not show it forever."""
    for gauge in (LAST_RUN_ROWS_LOADED, LAST_RUN_ROWS_QUARANTINED, WORKER_DESIRED_REPLICAS, WORKER_WAITING_RUNS,
                  WORKER_READY_REPLICAS):
        try:
            gauge.remove(namespace, pipeline)
        except KeyError:
            pass


class PassTracker:
    def __init__(self, trigger: str) -> None:
        self.trigger = trigger
        self.result = "ok"

    def problem(self, reason: str) -> None:
        self.result = reason
        ERRORS.labels(self.trigger, reason).inc()


@contextmanager
def track(trigger: str) -> Iterator[PassTracker]:
    """Count and time one pass; exceptions count as result 'error' and propagate."""
    tracker = PassTracker(trigger)
    start = time.perf_counter()
    try:
        yield tracker
    except BaseException as exc:
        # kopf's own retry signals are outcomes we already labelled; anything else is an error.
        if tracker.result == "ok" and type(exc).__name__ not in ("TemporaryError", "PermanentError"):
            tracker.problem("Error")
        raise
    finally:
        DURATION.labels(trigger).observe(time.perf_counter() - start)
        RECONCILES.labels(trigger, tracker.result).inc()


def serve(port: int) -> None:
    if port:
        start_http_server(port, registry=REGISTRY)

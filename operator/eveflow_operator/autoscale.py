"""Queue-depth autoscaling of the worker: the pure decision and the per-process memory it needs.

Every ``pollSeconds`` the operator reads, once per work pool (shared by the pipelines on it),
the flow runs due soon or pending/running (``eveflow_etl.orchestration.queue_depth``), keeps
this pipeline's, and calls :func:`decide`. Only a changed count is written (the worker
Deployment's ``spec.replicas``, the status, one Event), so an idle pipeline makes no writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from eveflow_etl.orchestration.queue_depth import PoolRuns, QueueDepth
from eveflow_etl.spec import AutoscalingSpec, EvePipeline

# Reasons (status.worker.reason and the scale Event's reason).
SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
STEADY = "Steady"
HOLDING = "ScaleDownDelayed"
SUSPENDED = "Suspended"


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    message: str
    low_since: float | None  # when demand first fell below the current count (None: it has not)


def demand_replicas(runs: int, auto: AutoscalingSpec) -> int:
    """clamp(ceil(runs / runsPerReplica), minReplicas, maxReplicas)."""
    return max(auto.min_replicas, min(auto.max_replicas, math.ceil(runs / auto.runs_per_replica)))


def decide(auto: AutoscalingSpec, depth: QueueDepth, current: int, low_since: float | None, now: float, *,
           suspended: bool = False) -> Decision:
    """The worker's replica count for this poll.

    Up at once; down only after ``scaleDownDelaySeconds`` of lower demand (``low_since`` is when
    it began, carried between polls by the caller), and never below what the running runs need.
    A suspended pipeline gets 0 whatever waits.
    """
    if suspended:
        return Decision(0, SUSPENDED, "suspended: worker scaled to 0", None)
    waiting = depth.waiting
    target = demand_replicas(waiting, auto)
    what = f"{waiting} flow run(s) due or running ({depth.running} running)"
    if target > current:
        return Decision(target, SCALED_UP, f"{what}: {current} -> {target} replica(s)", None)
    if target == current:
        return Decision(current, STEADY, f"{what}: {current} replica(s)", None)
    floor = demand_replicas(depth.running, auto)  # the runs still running keep their replicas
    target = max(target, floor)
    if target >= current:
        return Decision(current, STEADY, f"{what}: {current} replica(s) kept for the running runs", None)
    since = now if low_since is None else low_since
    if now - since >= auto.scale_down_delay_seconds:
        return Decision(target, SCALED_DOWN, f"{what} for {now - since:.0f}s: {current} -> {target} replica(s)", None)
    left = auto.scale_down_delay_seconds - (now - since)
    return Decision(current, HOLDING, f"{what}: {target} replica(s) would do; scaling down in {left:.0f}s", since)


def pipeline_depth(pipeline: EvePipeline, runs: PoolRuns, deployment_ids: Mapping[str, str],
                   queues: list[str]) -> QueueDepth:
    """This pipeline's share of its pool's runs: its deployments, its worker's queues."""
    return runs.depth(set(deployment_ids.values()), set(queues))


@dataclass
class AutoscaleMemory:
    """What the operator remembers between polls, per pipeline uid (lost on restart, which only
    restarts a scale-down delay): the last count it wrote, when demand fell, when it polled."""

    desired: dict[str, int] = field(default_factory=dict)
    low_since: dict[str, float] = field(default_factory=dict)
    polled: dict[str, float] = field(default_factory=dict)

    def forget(self, uid: str) -> None:
        for table in (self.desired, self.low_since, self.polled):
            table.pop(uid, None)


def status_desired(status: Mapping[str, Any] | None) -> int | None:
    """``status.worker.desiredReplicas`` as last written (survives an operator restart)."""
    value = ((status or {}).get("worker") or {}).get("desiredReplicas")
    return value if isinstance(value, int) and value >= 0 else None


def worker_status(decision: Decision, depth: QueueDepth) -> dict[str, Any]:
    """``status.worker``: what the autoscaler decided, why, and the runs it counted."""
    return {"desiredReplicas": decision.desired, "reason": decision.reason, "waiting": depth.waiting,
            "running": depth.running}

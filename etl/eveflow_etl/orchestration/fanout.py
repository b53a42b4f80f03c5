"""Fan-out children: one flow run per region, started by a parent run, awaited by it, and never
left to run without it.

A child the parent stopped waiting for would still load data later (a worker that was down picks
it up hours afterwards) while the parent's summary says the region timed out. So at the parent's
deadline the children still pending are cancelled, and a parent that is itself cancelled, crashes
or fails cancels whatever it started (children are tagged with their parent's flow run id, the only
link that survives the parent's process).
"""

from __future__ import annotations

import time
from typing import Any, Iterable
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.states import Cancelled, Cancelling

from eveflow_etl.orchestration.summary import COUNT_FIELDS, TOTAL_ROW, RegionOutcome, rows_of_artifact

PARENT_TAG_PREFIX = "eveflow.dev/fan-out-parent:"


def parent_tag(flow_run_id: UUID | str) -> str:
    return f"{PARENT_TAG_PREFIX}{flow_run_id}"


def cancel_flow_runs(client: Any, flow_run_ids: Iterable[UUID], reason: str) -> list[UUID]:
    """Cancel every run of ``flow_run_ids`` not already final; the ids actually cancelled."""
    cancelled = []
    for run_id in flow_run_ids:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_final():
            continue
        # Not started anywhere yet (Scheduled, Late, AwaitingRetry, Paused): cancelled outright.
        # Pending or Running have a process or Job to stop, which only their worker can do: it
        # sees Cancelling and finishes the cancellation.
        not_started = state is None or state.is_scheduled() or state.is_paused()
        new_state = Cancelled(message=reason) if not_started else Cancelling(message=reason)
        client.set_flow_run_state(run_id, new_state, force=True)
        cancelled.append(run_id)
    return cancelled


def cancel_children(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (on cancellation, crash or failure): cancel the children this run left behind."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[parent_tag(flow_run.id)])))
        cancel_flow_runs(client, [r.id for r in runs if r.state is None or not r.state.is_final()],
                         f"parent flow run {flow_run.id} ended {getattr(state, 'type', state)}")


def read_child_outcomes(children: dict[int, Any], timeout_seconds: float, poll_seconds: float = 2.0) -> list[RegionOutcome]:
    """Wait for fan-out child flow runs, cancel those not done by the deadline, then read each
    child's summary artifact."""
    deadline = time.monotonic() + timeout_seconds
    states: dict[int, Any] = {}
    cancelled: set[int] = set()
    with get_client(sync_client=True) as client:
        pending = dict(children)
        while pending and time.monotonic() < deadline:
            for region, run in list(pending.items()):
                state = client.read_flow_run(run.id).state
                if state is not None and state.is_final():
                    states[region] = state
                    pending.pop(region)
            if pending:
                time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
        if pending:
            reason = f"the fan-out parent stopped waiting after {timeout_seconds:.0f} s"
            done = set(cancel_flow_runs(client, [run.id for run in pending.values()], reason))
            for region, run in pending.items():
                if run.id in done:
                    cancelled.add(region)
                    continue
                # Finished between the last poll and the cancel: it loaded its region, so its
                # own outcome stands (a timeout here would misreport data that is in the table).
                state = client.read_flow_run(run.id).state
                if state is not None and state.is_final():
                    states[region] = state
        ids = [run.id for run in children.values()]
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
    by_run: dict[str, dict[str, Any]] = {}
    for artifact in artifacts:
        if artifact.type == "table" and artifact.flow_run_id is not None:
            for row in rows_of_artifact({"data": artifact.data}):
                if row.get("region") not in (None, TOTAL_ROW):
                    by_run[str(artifact.flow_run_id)] = row
    outcomes = []
    for region, run in children.items():
        state = states.get(region)
        row = by_run.get(str(run.id), {})
        counts = {name: int(row.get(name) or 0) for name in COUNT_FIELDS}
        if state is None:
            what = "cancelled" if region in cancelled else "left running"
            outcomes.append(RegionOutcome(region, "TIMED_OUT", counts,
                                          f"flow run {run.id} not done after {timeout_seconds:.0f} s ({what})",
                                          str(run.id)))
        elif state.is_completed():
            outcomes.append(RegionOutcome(region, "COMPLETED", counts, None, str(run.id)))
        else:
            # The child's own row names its error; its state message would nest its whole summary.
            error = row.get("error") or state.message or state.type.value
            outcomes.append(RegionOutcome(region, state.type.value, counts, error, str(run.id)))
    return outcomes

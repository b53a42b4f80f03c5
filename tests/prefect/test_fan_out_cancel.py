"""Fan-out children are never left to run without their parent (real Prefect server, no worker).

With no worker polling the pool, children stay Scheduled — exactly the case where a worker that
comes back later would load data for a parent that already reported the region as timed out.
"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from eveflow_etl.orchestration.fanout import cancel_children, parent_tag, read_child_outcomes
from eveflow_etl.orchestration.sync import sync_pipeline
from eveflow_etl.orchestration.types import PrefectConnection
from eveflow_etl.spec import parse_pipeline

from tests.fixtures.prefect import pipeline_document

pytestmark = pytest.mark.prefect


@pytest.fixture
def prefect_client(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url, PREFECT_HOME: str(tmp_path / "home")}):
        with get_client(sync_client=True) as client:
            yield client


@pytest.fixture
def deployment_id(prefect_server) -> str:
    """A fan-out pipeline's deployment in a pool no worker polls."""
    name = f"fan-cancel-{uuid.uuid4().hex[:6]}"
    document = pipeline_document(name, f"{name}-pool", schedules=[], maintenance={"enabled": False},
                                 source={"kind": "esi-history", "regions": [10000002, 10000043],
                                         "types": [34], "fanOut": True})
    result = asyncio.run(sync_pipeline(parse_pipeline(document), PrefectConnection(prefect_server.api_url)))
    return result.deployment_ids[name]


def state_of(client, run) -> str:
    return client.read_flow_run(run.id).state.type.value


def test_children_not_done_by_the_parents_deadline_are_cancelled(prefect_client, deployment_id):
    parent = uuid.uuid4()
    children = {region: prefect_client.create_flow_run_from_deployment(deployment_id, tags=[parent_tag(parent)])
                for region in (10000002, 10000043)}

    outcomes = read_child_outcomes(children, timeout_seconds=1, poll_seconds=0.2)

    assert [(o.region, o.status) for o in outcomes] == [(10000002, "TIMED_OUT"), (10000043, "TIMED_OUT")]
    assert all("(cancelled)" in o.error for o in outcomes), [o.error for o in outcomes]
    # Final on the server: a worker that starts polling now finds nothing to run.
    assert {state_of(prefect_client, run) for run in children.values()} == {"CANCELLED"}


def test_a_parent_that_ends_early_cancels_only_its_own_unfinished_children(prefect_client, deployment_id):
    from prefect.states import Completed, Running

    parent, other_parent = uuid.uuid4(), uuid.uuid4()
    waiting, running, finished = (prefect_client.create_flow_run_from_deployment(deployment_id, tags=[parent_tag(parent)])
                                  for _ in range(3))
    prefect_client.set_flow_run_state(running.id, Running(), force=True)
    prefect_client.set_flow_run_state(finished.id, Completed(), force=True)
    someone_elses = prefect_client.create_flow_run_from_deployment(deployment_id, tags=[parent_tag(other_parent)])

    cancel_children(None, SimpleNamespace(id=parent), SimpleNamespace(type="CANCELLED"))

    assert state_of(prefect_client, waiting) == "CANCELLED"
    # A running child has a process to stop: Cancelling hands that to its worker.
    assert state_of(prefect_client, running) == "CANCELLING"
    assert state_of(prefect_client, finished) == "COMPLETED"
    assert state_of(prefect_client, someone_elses) == "SCHEDULED"


def test_a_child_that_finishes_as_the_deadline_passes_keeps_its_real_outcome(prefect_client, deployment_id):
    # Done after the last poll but before the cancel: it loaded its region, so the parent must
    # not report it timed out (nor "left running").
    from prefect.states import Completed

    parent = uuid.uuid4()
    finished = prefect_client.create_flow_run_from_deployment(deployment_id, tags=[parent_tag(parent)])
    prefect_client.set_flow_run_state(finished.id, Completed(), force=True)

    (outcome,) = read_child_outcomes({10000002: finished}, timeout_seconds=0, poll_seconds=0.2)

    assert (outcome.status, outcome.error) == ("COMPLETED", None)
    assert state_of(prefect_client, finished) == "COMPLETED"

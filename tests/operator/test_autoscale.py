"""Queue-depth autoscaling without a server: the decision table, the model's refusals, the
per-pool sharing of reads, and what the builders do with the autoscaler's count."""

from __future__ import annotations

import asyncio

import pytest

from eveflow_etl.errors import ConfigError
from eveflow_etl.orchestration.queue_depth import PoolRuns, QueueDepth, SharedPoolReader, runs_filter
from eveflow_etl.orchestration.types import PrefectConnection
from eveflow_etl.spec import AutoscalingSpec, parse_pipeline
from eveflow_operator.autoscale import HOLDING, SCALED_DOWN, SCALED_UP, STEADY, SUSPENDED, decide
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.worker_deployment import build_worker_deployment, worker_command

AUTO = AutoscalingSpec(min_replicas=0, max_replicas=3, runs_per_replica=1, scale_down_delay_seconds=60)
AUTO2 = AutoscalingSpec(min_replicas=1, max_replicas=4, runs_per_replica=2, scale_down_delay_seconds=0)

# (spec, waiting, running, current, low_since, now) -> (desired, reason, low_since)
TABLE = {
    "idle stays at zero": (AUTO, 0, 0, 0, None, 100, (0, STEADY, None)),
    "one due run scales from zero": (AUTO, 1, 0, 0, None, 100, (1, SCALED_UP, None)),
    "five due clamp at max": (AUTO, 5, 0, 0, None, 100, (3, SCALED_UP, None)),
    "up is immediate from 1": (AUTO, 3, 1, 1, 50, 100, (3, SCALED_UP, None)),
    "lower demand starts the delay": (AUTO, 1, 1, 3, None, 100, (3, HOLDING, 100)),
    "still within the delay": (AUTO, 0, 0, 3, 100, 159, (3, HOLDING, 100)),
    "delay over: down": (AUTO, 0, 0, 3, 100, 160, (0, SCALED_DOWN, None)),
    "down never below running runs": (AUTO, 2, 2, 3, 100, 200, (2, SCALED_DOWN, None)),
    "running runs hold the count": (AUTO, 3, 3, 3, None, 100, (3, STEADY, None)),
    "demand back up clears the delay": (AUTO, 3, 0, 3, 100, 130, (3, STEADY, None)),
    "runsPerReplica rounds up": (AUTO2, 3, 0, 1, None, 0, (2, SCALED_UP, None)),
    "minReplicas floor": (AUTO2, 0, 0, 2, None, 0, (1, SCALED_DOWN, None)),
    "max with runsPerReplica": (AUTO2, 100, 0, 1, None, 0, (4, SCALED_UP, None)),
    "running floor with runsPerReplica": (AUTO2, 3, 3, 4, None, 0, (2, SCALED_DOWN, None)),
}


@pytest.mark.parametrize("case", list(TABLE))
def test_decision_table(case: str) -> None:
    auto, waiting, running, current, low_since, now, expected = TABLE[case]
    d = decide(auto, QueueDepth(waiting, running), current, low_since, now)
    assert (d.desired, d.reason, d.low_since) == expected, d.message


def test_suspend_wins_whatever_waits() -> None:
    d = decide(AUTO, QueueDepth(50, 3), 3, None, 0, suspended=True)
    assert (d.desired, d.reason) == (0, SUSPENDED)


def _doc(worker: dict, pool_type: str = "process") -> dict:
    return {"apiVersion": "eveflow.dev/v1alpha1", "kind": "EvePipeline", "metadata": {"name": "p"},
            "spec": {"workPool": {"name": "pool", "type": pool_type}, "source": {"regions": [10000002]},
                     "worker": worker}}


def test_model_defaults_and_refusals() -> None:
    auto = parse_pipeline(_doc({"autoscaling": {}})).spec.worker.autoscaling
    assert (auto.min_replicas, auto.max_replicas, auto.runs_per_replica, auto.scale_down_delay_seconds,
            auto.poll_seconds) == (0, 3, 1, 300, 15)
    with pytest.raises(ConfigError, match="replicas and autoscaling are both set"):
        parse_pipeline(_doc({"replicas": 2, "autoscaling": {}}))
    with pytest.raises(ConfigError, match="is for process pools; this pool is type: kubernetes"):
        parse_pipeline(_doc({"autoscaling": {}}, "kubernetes"))
    with pytest.raises(ConfigError, match="minReplicas .4. is above maxReplicas .2."):
        parse_pipeline(_doc({"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}))
    with pytest.raises(ConfigError, match="pollSeconds"):
        parse_pipeline(_doc({"autoscaling": {"pollSeconds": 1}}))


def test_builder_uses_the_autoscalers_count_and_limits_runs_per_replica() -> None:
    settings = OperatorSettings(prefect_api_url="http://prefect:4200/api", worker_image="x/y:1")
    pipeline = parse_pipeline(_doc({"autoscaling": {"maxReplicas": 3, "runsPerReplica": 2}}))
    assert build_worker_deployment(pipeline, settings, "n")["spec"]["replicas"] == 0  # minReplicas first
    assert build_worker_deployment(pipeline, settings, "n", autoscaled=2)["spec"]["replicas"] == 2
    assert build_worker_deployment(pipeline, settings, "n", autoscaled=9)["spec"]["replicas"] == 3
    command = worker_command(pipeline)
    assert command[command.index("--limit") + 1] == "2"
    suspended = parse_pipeline({**_doc({"autoscaling": {}}), "spec": {**_doc({"autoscaling": {}})["spec"], "suspend": True}})
    assert build_worker_deployment(suspended, settings, "n", autoscaled=3)["spec"]["replicas"] == 0
    fixed = parse_pipeline(_doc({}))
    assert build_worker_deployment(fixed, settings, "n")["spec"]["replicas"] == 1


def test_pipelines_on_one_pool_share_one_read_per_poll() -> None:
    calls: list[str] = []

    async def reader(conn, pool, lead):
        calls.append(pool)
        await asyncio.sleep(0.01)
        return PoolRuns(runs=(("d1", "default", "SCHEDULED"), ("d2", "default", "RUNNING"),
                              ("d1", "other", "PENDING")), read_at=asyncio.get_running_loop().time())

    async def main() -> None:
        shared = SharedPoolReader(reader)
        conn = PrefectConnection(api_url="http://prefect/api")
        # Three pipelines on pool a poll at once, one on pool b: two reads.
        got = await asyncio.gather(*(shared.runs(conn, p, lead_seconds=45, max_age=15) for p in "aaab"))
        assert calls == ["a", "b"] and shared.reads == 2
        assert got[0].depth({"d1"}, {"default"}) == QueueDepth(1, 0)
        assert got[0].depth({"d1", "d2"}, {"default", "other"}) == QueueDepth(3, 1)

    asyncio.run(main())


def test_filter_is_one_pool_and_waiting_states() -> None:
    body = runs_filter("pool-a", 45)
    assert body["work_pools"] == {"name": {"any_": ["pool-a"]}}
    assert set(body["flow_runs"]["state"]["type"]["any_"]) == {"SCHEDULED", "PENDING", "RUNNING", "CANCELLING"}


def test_render_targets_map_or_document_autoscaling() -> None:
    from eveflow_etl.render import spcs, vm

    doc = _doc({"autoscaling": {"minReplicas": 0, "maxReplicas": 4, "runsPerReplica": 2}})
    pipeline = parse_pipeline(doc)
    names = spcs.names_for(pipeline)
    create = spcs.service_statements(names, spcs.service_instances(pipeline))["service-create.sql"]
    assert "MIN_INSTANCES = 1\n  MAX_INSTANCES = 4;" in create and "not on the Prefect queue depth" in create
    args = spcs.build_service_spec(pipeline, names)["spec"]["containers"][0]["args"]
    assert args[args.index("--limit") + 1] == "2"
    assert "is a Kubernetes feature" in vm.build_readme(pipeline)
    fixed = parse_pipeline(_doc({}))
    assert "MIN_INSTANCES = 1\n  MAX_INSTANCES = 1;" in spcs.service_statements(spcs.names_for(fixed))["service-create.sql"]
    assert "Kubernetes feature" not in vm.build_readme(fixed)


class _FakeKube:
    def __init__(self) -> None:
        self.writes: list[str] = []

    async def apply(self, obj, field_manager):
        self.writes.append(f"apply {obj['kind']}/{obj['metadata']['name']} replicas={obj['spec']['replicas']}")
        return obj

    async def patch_status(self, path, changes, resource_version):
        self.writes.append(f"status {changes}")
        return {}

    async def get(self, path):
        return None


def _poll(status: dict, runs: tuple) -> tuple[object, list[str]]:
    """One autoscale poll of a pipeline with five runs due, the given last status; what it wrote."""
    from eveflow_operator.autoscale_pass import poll
    from eveflow_operator.reconcile import Reconciler

    from .fakes import FakePrefect

    async def reader(conn, pool, lead):
        return PoolRuns(runs=runs, read_at=asyncio.get_running_loop().time())

    async def main():
        kube = _FakeKube()
        rec = Reconciler(OperatorSettings(prefect_api_url="http://prefect:4200/api", worker_image="x/y:1"), kube,
                         FakePrefect())
        rec.pool_reader = SharedPoolReader(reader)
        doc = _doc({"autoscaling": {"maxReplicas": 3}})
        body = {**doc, "metadata": {"name": "p", "namespace": "n", "uid": "u1", "generation": 1,
                                    "resourceVersion": "7"}, "status": status}
        result = await poll(rec, body, now=1000.0)
        return result, kube.writes

    return asyncio.run(main())


def _synced(status: str) -> dict:
    return {"observedGeneration": 1, "deploymentIds": {"p": "d1"},
            "conditions": [{"type": "PrefectSynced", "status": status, "reason": "X", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}


def test_poll_scales_and_writes_once_then_nothing_when_unchanged() -> None:
    five = tuple(("d1", "default", "SCHEDULED") for _ in range(5))
    result, writes = _poll(_synced("True"), five)
    assert result.decision.desired == 3
    assert writes[0] == "apply Deployment/p-worker replicas=3" and writes[1].startswith("status")
    steady = {**_synced("True"), "worker": {"desiredReplicas": 3, "reason": "Steady", "waiting": 5, "running": 0}}
    result, writes = _poll(steady, five)
    assert (result.decision.desired, writes) == (3, [])


def test_poll_does_not_apply_what_a_stopped_pass_refused() -> None:
    # The last pass stopped (e.g. the worker Deployment's name belongs to someone else's object,
    # or the image is not allowed): runs waiting must not make the autoscaler apply it.
    five = tuple(("d1", "default", "SCHEDULED") for _ in range(5))
    result, writes = _poll(_synced("False"), five)
    assert result.decision is None and writes == []

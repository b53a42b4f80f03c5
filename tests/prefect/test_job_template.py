"""What a kubernetes pool's flow-run Job gets: the eveflow image and the destination Secret by
reference (never literal credentials). Rendered with Prefect's own templating, no server needed."""

from __future__ import annotations

from prefect.utilities.templating import apply_values

from eveflow_etl.orchestration.deployments import desired_deployments, flow_run_job_variables
from eveflow_etl.orchestration.pools import new_pool_template
from eveflow_etl.spec import load_pipeline
from eveflow_operator.reconcile import with_worker_image
from eveflow_operator.settings import OperatorSettings
from tests.spec.test_spec import ROOT


def _job_container(pipeline, namespace: str) -> tuple[dict, dict]:
    template = new_pool_template(pipeline)
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    values = {**defaults, **flow_run_job_variables(pipeline, namespace)}
    manifest = apply_values(template["job_configuration"], values)["job_manifest"]
    return manifest, manifest["spec"]["template"]["spec"]["containers"][0]


def test_kubernetes_job_gets_the_worker_image_and_the_destination_secret() -> None:
    pipeline = with_worker_image(load_pipeline(ROOT / "examples" / "pipeline-kubernetes.yaml"),
                                 OperatorSettings(worker_image="registry.example/eveflow:9.9"))
    manifest, container = _job_container(pipeline, "pipelines")
    assert container["image"] == "registry.example/eveflow:9.9"
    assert container["envFrom"] == [{"secretRef": {"name": "eveflow-postgres"}}]
    assert manifest["metadata"]["namespace"] == "pipelines"
    etl = desired_deployments(pipeline, "pipelines")[0]
    assert etl.body["job_variables"] == flow_run_job_variables(pipeline, "pipelines")


def test_an_image_in_the_spec_wins_over_the_operator_default() -> None:
    pipeline = load_pipeline(ROOT / "examples" / "pipeline-kubernetes.yaml")
    pinned = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={
        "worker": pipeline.spec.worker.model_copy(update={"image": "mine/eveflow:1"})})})
    assert with_worker_image(pinned, OperatorSettings()).spec.worker.image == "mine/eveflow:1"
    _, container = _job_container(pinned, "ns")
    assert container["image"] == "mine/eveflow:1"


def test_process_pools_run_flows_in_the_worker_so_no_job_variables() -> None:
    pipeline = load_pipeline(ROOT / "examples" / "pipeline.yaml")
    assert flow_run_job_variables(pipeline, "default") == {}
    assert all(d.body["job_variables"] == {} for d in desired_deployments(pipeline, "default"))

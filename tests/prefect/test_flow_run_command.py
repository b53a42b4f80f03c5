"""A flow-run Job on a kubernetes pool starts Prefect's command, not ``eveflow prefect …``: the
eveflow image's ENTRYPOINT is ``eveflow`` and prefect-kubernetes passes the command as ``args``.
Built with prefect-kubernetes' own job configuration code (no cluster needed)."""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from eveflow_etl.orchestration.deployments import flow_run_job_variables
from eveflow_etl.orchestration.pools import new_pool_template
from eveflow_etl.spec import load_pipeline
from eveflow_operator.reconcile import with_worker_image
from eveflow_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]


async def test_kubernetes_flow_run_container_runs_prefects_command_through_env() -> None:
    pipeline = with_worker_image(load_pipeline(ROOT / "examples" / "pipeline-kubernetes.yaml"),
                                 OperatorSettings(worker_image="registry.example/eveflow:9.9"))
    # No block or variable references in the template: the client is never called.
    async with PrefectClient("http://127.0.0.1:9/api") as unused:
        configuration = await KubernetesWorkerJobConfiguration.from_template_and_values(
            new_pool_template(pipeline), flow_run_job_variables(pipeline, "pipelines"), client=unused)
    configuration.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="a-run"))
    container = configuration.job_manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/eveflow:9.9"
    assert container["command"] == ["/usr/bin/env"]
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert container["envFrom"] == [{"secretRef": {"name": "eveflow-postgres"}}]

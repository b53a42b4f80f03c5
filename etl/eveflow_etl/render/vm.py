"""A single VM: docker compose (process + docker workers, optional single-box Prefect server and
Postgres), a systemd unit for the process worker without Docker, prefect.yaml, .env.example."""

from __future__ import annotations

from dataclasses import dataclass

from eveflow_etl.plan import pipeline_plan
from eveflow_etl.render import inputs
from eveflow_etl.render.names import check_spcs_name
from eveflow_etl.spec import EvePipeline

PROCESS_POOL = "vm-process"
DOCKER_POOL = "vm-docker"
PREFECT_SERVER_IMAGE = "prefecthq/prefect:3-python3.11"
POSTGRES_IMAGE = "postgres:16"
INSTALL_DIR = "/opt/eveflow"
ENV_FILE = "/etc/eveflow/eveflow.env"
PREFECT_DATABASE = "prefect"
IMAGE_UID = 10001  # the eveflow image's USER (Dockerfile)
DOCKER_SOCKET = "/var/run/docker.sock"
# How to find the value of DOCKER_GID: the group owning the host's socket (usually `docker`).
DOCKER_GID_HOWTO = f"stat -c %g {DOCKER_SOCKET}"
# What worker-docker gets for DOCKER_GID when it only starts on request (--profile docker) and
# DOCKER_GID is unset: a group name no image has, so the engine refuses to start worker-docker,
# naming this group, rather than the worker failing later on the socket with "permission denied".
DOCKER_GID_UNSET = "set-DOCKER_GID-in-.env"


@dataclass(frozen=True)
class Pools:
    process: str
    docker: str
    deployments: str  # the pool the deployments go to
    deployments_type: str


def pools_for(pipeline: EvePipeline) -> Pools:
    """Keep the pipeline's pool when a VM can serve it (process, docker); a kubernetes pool
    becomes the process pool ``vm-process``."""
    pool = pipeline.spec.work_pool
    process = pool.name if pool.type == "process" else PROCESS_POOL
    docker = pool.name if pool.type == "docker" else DOCKER_POOL
    if pool.type == "docker":
        return Pools(process, docker, docker, "docker")
    return Pools(process, docker, process, "process")


def network_name(pipeline: EvePipeline) -> str:
    """The compose project's network. Named here, not left to compose (``<project>_default``,
    the project being the directory's name), so the docker worker's flow-run containers, which
    it starts itself outside compose, can join it and reach ``prefect-server``/``postgres``."""
    return f"eveflow-{check_spcs_name(pipeline.name, 'metadata.name')}"


def data_volume_name(pipeline: EvePipeline) -> str:
    """The workers' data volume (``EVEFLOW_DATA_DIR``), named for the same reason."""
    return f"{network_name(pipeline)}-data"


def worker_environment(pipeline: EvePipeline) -> dict[str, str]:
    """What compose sets on the workers besides ``.env``."""
    return {"EVEFLOW_DATA_DIR": inputs.DATA_DIR, **pipeline_plan(pipeline).database_fixed_env}


def adapt(pipeline: EvePipeline) -> EvePipeline:
    """The pipeline as the VM runs it: its deployments on the pool of :func:`pools_for`. On a
    docker pool the flow runs in containers the docker worker starts next to compose; their job
    variables put them on the compose network with the data volume, and give them the worker's
    own settings by reference (``{{ $NAME }}``, resolved by the worker when it starts a flow run,
    as the pool already does for the database variables: no value lands in Prefect or a file):
    what compose sets and every ``EVEFLOW_*`` setting, so the user's ``.env`` reaches flow runs
    (one the worker lacks arrives empty, which the settings take as the default)."""
    pools = pools_for(pipeline)
    adapted = inputs.with_pool(pipeline, pools.deployments, pools.deployments_type)
    if pools.deployments_type != "docker":
        return adapted
    pool = adapted.spec.work_pool
    variables = dict(pool.job_variables)
    network = network_name(pipeline)
    variables["networks"] = [network, *(n for n in variables.get("networks") or [] if n != network)]
    mount = f"{data_volume_name(pipeline)}:{inputs.DATA_DIR}"
    variables["volumes"] = [mount, *(v for v in variables.get("volumes") or [] if v != mount)]
    names = dict.fromkeys([*inputs.ETL_SETTING_VARIABLES, *worker_environment(pipeline)])
    references = {name: "{{ $" + name + " }}" for name in names}
    variables["env"] = {**references, **(variables.get("env") or {})}
    spec = adapted.spec.model_copy(update={"work_pool": pool.model_copy(update={"job_variables": variables})})
    return adapted.model_copy(update={"spec": spec})


def unit_name(pipeline: EvePipeline) -> str:
    return f"eveflow-{check_spcs_name(pipeline.name, 'metadata.name')}-worker.service"


def _image(pipeline: EvePipeline) -> str:
    return "${EVEFLOW_IMAGE:-" + (pipeline.spec.worker.image or inputs.DEFAULT_IMAGE) + "}"


def _healthcheck() -> dict:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{inputs.WORKER_PORT}/health', timeout=4)"
    return {
        "test": ["CMD", "python", "-c", probe],
        "interval": "30s",
        "timeout": "5s",
        "retries": 3,
        "start_period": "30s",
    }


def _docker_gid(required: bool) -> str:
    """The host's docker group for worker-docker's ``group_add``: the image's user (IMAGE_UID)
    reaches the host's socket (``root:docker``, mode 660) only through it. Required (``:?``,
    compose names the variable and the fix) when worker-docker starts by default; otherwise a
    process-pool user would need it for every ``docker compose up``: compose interpolates the
    services of inactive profiles too."""
    if required:
        return "${DOCKER_GID:?set DOCKER_GID in .env to the host's docker group id: " + DOCKER_GID_HOWTO + "}"
    return "${DOCKER_GID:-" + DOCKER_GID_UNSET + "}"


def build_compose(pipeline: EvePipeline) -> dict:
    process_worker, docker_worker = _worker_services(pipeline)
    return {
        "services": {
            "worker-process": process_worker,
            "worker-docker": docker_worker,
            **_single_box_services(),
        },
        "networks": {"default": {"name": network_name(pipeline)}},
        "volumes": {"eveflow-data": {"name": data_volume_name(pipeline)}, "postgres-data": {}},
    }


def _worker_services(pipeline: EvePipeline) -> tuple[dict, dict]:
    """The process and the docker worker; the one of the deployments' pool starts by default."""
    pools = pools_for(pipeline)
    queues = pipeline_plan(pipeline).worker_queues
    environment = worker_environment(pipeline)
    worker = {
        "image": _image(pipeline),
        # The image's own ENTRYPOINT, spelled out so a reader sees the whole command line:
        # `command` holds eveflow's arguments only (["eveflow", "worker", …] would run
        # `eveflow eveflow worker`).
        "entrypoint": ["eveflow"],
        "env_file": [".env"],
        "environment": environment,
        "restart": "unless-stopped",
        "healthcheck": _healthcheck(),
        "volumes": [f"eveflow-data:{inputs.DATA_DIR}"],
    }
    process_worker = dict(
        worker,
        command=inputs.worker_args(pools.process, "process", queues if pools.deployments_type == "process" else []),
    )
    docker_worker = dict(
        worker,
        command=inputs.worker_args(pools.docker, "docker", queues if pools.deployments_type == "docker" else []),
        volumes=[*worker["volumes"], f"{DOCKER_SOCKET}:{DOCKER_SOCKET}"],
        group_add=[_docker_gid(required=pools.deployments_type == "docker")],
    )
    # The worker of the pool the deployments are on starts by default; the other one on request.
    if pools.deployments_type == "process":
        docker_worker["profiles"] = ["docker"]
    else:
        process_worker["profiles"] = ["process"]
    return process_worker, docker_worker


def _single_box_services() -> dict:
    """``prefect-server`` and ``postgres``, started only with ``--profile single-box``."""
    # ${VAR:-}, not ${VAR:?}: compose interpolates services of inactive profiles too, and a
    # pipeline on Snowflake Postgres has no PG* variables (the postgres image refuses a blank
    # password by itself, with a clear message).
    db_login = {"POSTGRES_USER": "${PGUSER:-}", "POSTGRES_PASSWORD": "${PGPASSWORD:-}"}
    return {
        "prefect-server": {
            "image": PREFECT_SERVER_IMAGE,
            "profiles": ["single-box"],
            "command": ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"],
            "environment": {
                "PREFECT_SERVER_DATABASE_DRIVER": "postgresql+asyncpg",
                "PREFECT_SERVER_DATABASE_HOST": "postgres",
                "PREFECT_SERVER_DATABASE_PORT": "5432",
                "PREFECT_SERVER_DATABASE_NAME": PREFECT_DATABASE,
                "PREFECT_SERVER_DATABASE_USER": db_login["POSTGRES_USER"],
                "PREFECT_SERVER_DATABASE_PASSWORD": db_login["POSTGRES_PASSWORD"],
            },
            "ports": ["127.0.0.1:4200:4200"],
            "depends_on": {"postgres": {"condition": "service_healthy"}},
            "restart": "unless-stopped",
        },
        "postgres": {
            "image": POSTGRES_IMAGE,
            "profiles": ["single-box"],
            "environment": dict(db_login, POSTGRES_DB="${PGDATABASE:-}"),
            "volumes": ["postgres-data:/var/lib/postgresql/data", "./single-box/initdb:/docker-entrypoint-initdb.d:ro"],
            "healthcheck": {
                "test": ["CMD-SHELL", "pg_isready -U \"$$POSTGRES_USER\" -d \"$$POSTGRES_DB\""],
                "interval": "10s",
                "timeout": "5s",
                "retries": 10,
            },
            "restart": "unless-stopped",
        },
    }


def build_initdb_sql() -> str:
    return (
        "-- Runs once, when the single-box Postgres volume is first created: a database for the\n"
        "-- Prefect server next to the pipeline's own (PGDATABASE).\n"
        f"CREATE DATABASE {PREFECT_DATABASE};\n"
    )


def build_systemd_unit(pipeline: EvePipeline) -> str:
    pools = pools_for(pipeline)
    queues = pipeline_plan(pipeline).worker_queues
    args = " ".join(inputs.worker_args(pools.process, "process", queues if pools.deployments_type == "process" else []))
    return f"""[Unit]
Description=eveflow Prefect worker for pipeline {pipeline.name} (process pool {pools.process})
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=eveflow
Group=eveflow
# PREFECT_API_URL, the credential and the database variables (see .env.example); mode 0600.
EnvironmentFile={ENV_FILE}
Environment=EVEFLOW_DATA_DIR=/var/lib/eveflow/{pipeline.name}
StateDirectory=eveflow/{pipeline.name}
WorkingDirectory=/var/lib/eveflow/{pipeline.name}
ExecStart={INSTALL_DIR}/.venv/bin/eveflow {args}
Restart=always
RestartSec=10
TimeoutStopSec=60
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=yes

[Install]
WantedBy=multi-user.target
"""


def _schedule(api_schedule: dict) -> dict:
    """A schedule as the sync library sends it to the API → the prefect.yaml form."""
    schedule = api_schedule["schedule"]
    return {
        "slug": api_schedule["slug"],
        "cron": schedule["cron"],
        "timezone": schedule["timezone"],
        "day_or": schedule["day_or"],
        "active": api_schedule["active"],
        "parameters": api_schedule["parameters"],
    }


def build_prefect_yaml(pipeline: EvePipeline) -> dict:
    """prefect.yaml for ``prefect deploy --all``: the very deployments ``eveflow apply`` creates
    (built by the Prefect sync library's ``desired_deployments``, not a second copy of it)."""
    # Imported here: it loads the flows (for their parameter schema), which renders of SPCS skip;
    # the module alone would add ~200 ms to every `eveflow` start (the CLI imports render).
    from eveflow_etl.orchestration.deployments import desired_deployments

    deployments = []
    for desired in desired_deployments(pipeline, pipeline_plan(pipeline).namespace):  # as `eveflow apply` tags them
        body = desired.body
        deployments.append({
            "name": desired.name,
            "entrypoint": body["entrypoint"],
            "description": body["description"],
            "tags": body["tags"],
            "parameters": body["parameters"],
            "enforce_parameter_schema": body["enforce_parameter_schema"],
            "paused": body["paused"],
            "work_pool": {
                "name": body["work_pool_name"],
                "work_queue_name": body["work_queue_name"],
                "job_variables": body["job_variables"],
            },
            "schedules": [_schedule(s) for s in desired.schedules],
        })
    # The flows come from the installed eveflow package, so there is nothing to pull.
    return {"name": f"eveflow-{pipeline.name}", "pull": [], "deployments": deployments}


def build_env_example(pipeline: EvePipeline) -> str:
    """Every variable a worker may read, without values. What this pipeline reads is active;
    the rest is commented out, because an empty PGSSLMODE= or PREFECT_API_KEY= is not the same
    as an unset one. No inline comments: systemd's EnvironmentFile would keep them in the value."""
    plan = pipeline_plan(pipeline)
    credential, url = plan.prefect_credential_env, plan.prefect_api_url
    used = {"PREFECT_API_URL", *([credential] if credential else [])}
    used |= set(plan.database_variables.required)
    if pools_for(pipeline).deployments_type == "docker":
        used.add("DOCKER_GID")  # worker-docker starts by default and compose requires it
    used.add("EVEFLOW_CONTACT")  # an empty one is the default, like every EVEFLOW_* setting
    # Compose and the unit set EVEFLOW_DATA_DIR themselves (compose's value beats .env's).
    settings = [v for v in inputs.ETL_SETTING_VARIABLES if v != "EVEFLOW_DATA_DIR"]

    def entry(variable: str) -> str:
        return f"{variable}=" if variable in used else f"# {variable}="

    lines = [
        f"# Environment of the eveflow workers of pipeline '{pipeline.name}'. Copy to .env (compose)",
        f"# or {ENV_FILE} (systemd), fill in, chmod 600. Never commit the filled-in file.",
        "# Lines without '#' are what this pipeline reads; the others are for other modes/profiles.",
        "",
        f"# Prefect (mode: {pipeline.spec.prefect.mode}). PREFECT_API_URL: "
        + (url if url else "e.g. http://prefect-server:4200/api with --profile single-box"),
        "# PREFECT_API_KEY: Prefect Cloud; PREFECT_API_AUTH_STRING: user:password of a server with basic auth",
        *(entry(v) for v in inputs.PREFECT_VARIABLES),
        "",
        f"# Database, profiles env and crunchy (this pipeline: {pipeline.spec.destination.profile}).",
        "# PGPORT defaults to 5432; crunchy requires TLS and PGSSLMODE=require is set for you.",
        *(entry(v) for v in inputs.PG_VARIABLES),
        "",
        "# Database, profile snowflake (Snowflake Postgres)",
        *(entry(v) for v in inputs.SNOWFLAKE_PG_VARIABLES),
        "",
        "# ETL settings: empty or unset means the default (eveflow_etl/settings.py); flow runs of a docker",
        "# pool get the worker's. EVEFLOW_CONTACT: the e-mail or URL ESI asks every client to send.",
        *(entry(v) for v in settings),
        "",
        "# docker compose only: the worker image (default " + (pipeline.spec.worker.image or inputs.DEFAULT_IMAGE) + ")",
        "# EVEFLOW_IMAGE=",
        f"# docker compose, worker-docker: the id of the host's group owning {DOCKER_SOCKET} (usually",
        f"# docker), so the worker (uid {IMAGE_UID}) may use it: {DOCKER_GID_HOWTO}",
        entry("DOCKER_GID"),
    ]
    return "\n".join(lines) + "\n"


def _systemd_note(pools: Pools) -> str:
    if pools.deployments_type == "process":
        return ""
    return (
        f"The unit runs a worker for the process pool `{pools.process}`; this pipeline's deployments are on\n"
        f"the docker pool `{pools.deployments}`, so set `workPool: {{name: {pools.process}, type: process}}` in\n"
        "`pipeline.yaml` before `eveflow apply` to run them without Docker.\n\n"
    )


def _docker_flow_runs_note(pipeline: EvePipeline, pools: Pools) -> str:
    if pools.deployments_type != "docker":
        return ""
    return (
        "The docker worker starts each flow run in a container of its own, outside compose. The job\n"
        "variables in `prefect.yaml` and `pipeline.yaml` put it on the compose network\n"
        f"`{network_name(pipeline)}` (so `prefect-server` and `postgres` resolve), with the volume\n"
        f"`{data_volume_name(pipeline)}` at `{inputs.DATA_DIR}`; the pool gives it the worker's database and\n"
        "`EVEFLOW_*` variables by reference, so what `.env` sets reaches every flow run (and what it leaves\n"
        "out arrives empty, which eveflow takes as the default).\n\n"
    )


def _autoscaling_note(pipeline: EvePipeline) -> str:
    if pipeline.spec.worker.autoscaling is None:
        return ""
    return (
        "`spec.worker.autoscaling` is a Kubernetes feature: the eveflow operator reads the queue depth\n"
        "from Prefect and sets the worker Deployment's replicas. A VM runs the one worker above, always\n"
        "on; give it room for the runs you expect at once (`--limit`, `workPool.concurrencyLimit`).\n\n"
    )


def _docker_gid_step(pools: Pools) -> str:
    when = "" if pools.deployments_type == "docker" else " (only to run it, with `--profile docker`)"
    return (
        f"   `worker-docker`{when} runs as uid {IMAGE_UID} and starts containers through\n"
        f"   `{DOCKER_SOCKET}`: set `DOCKER_GID` to the group owning it (`{DOCKER_GID_HOWTO}`),\n"
        "   which compose adds to the worker. That socket gives the worker root-equivalent access to the host.\n"
    )


def build_readme(pipeline: EvePipeline) -> str:
    pools = pools_for(pipeline)
    unit = unit_name(pipeline)
    return f"""# eveflow on a VM: `{pipeline.name}`

Generated by `eveflow render --target vm`. Deployments go to the **{pools.deployments_type}** work
pool `{pools.deployments}`; `docker compose up` starts its worker.

| file | what it is |
| --- | --- |
| `docker-compose.yml` | `worker-process` (pool `{pools.process}`), `worker-docker` (pool `{pools.docker}`); profile `single-box` adds a Prefect server and Postgres |
| `systemd/{unit}` | the process worker without Docker |
| `prefect.yaml` | the deployments, for `prefect deploy --all` (same as `eveflow apply`) |
| `pipeline.yaml` | the pipeline with the work pool above, for `eveflow apply` |
| `.env.example` | every variable the workers read, without values |
| `single-box/initdb/` | creates the Prefect server's database in the single-box Postgres |

{_docker_flow_runs_note(pipeline, pools)}{_autoscaling_note(pipeline)}## With Docker
1. `cp .env.example .env && chmod 600 .env`, fill it in (never commit it).
{_docker_gid_step(pools)}2. `docker compose up -d` — or, with no Prefect server or database elsewhere:
   `docker compose --profile single-box up -d` (set `PREFECT_API_URL=http://prefect-server:4200/api`
   and `PGHOST=postgres` in `.env`; the UI is on http://127.0.0.1:4200).
3. Register the work pool and the deployments:
   `eveflow apply -f pipeline.yaml` (with `PREFECT_API_URL` and the credential in your shell).

## Without Docker (systemd)
{_systemd_note(pools)}1. `python3.11 -m venv {INSTALL_DIR}/.venv && {INSTALL_DIR}/.venv/bin/pip install ./eveflow` (the checkout or a wheel of it)
2. `useradd --system eveflow`; put the filled-in `.env` at `{ENV_FILE}` (mode 0600).
3. `cp systemd/{unit} /etc/systemd/system/ && systemctl daemon-reload && systemctl enable --now {unit}`
4. `eveflow apply -f pipeline.yaml`
"""

"""Snowflake Snowpark Container Services: service spec, setup SQL, deploy script, README.

The worker runs ``eveflow worker`` on a *process* work pool inside one SPCS service; every
credential is a Snowflake SECRET referenced from the spec (``snowflakeSecret``), created by
``setup.sql`` with placeholder values that the user replaces with ``ALTER SECRET`` by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from eveflow_etl.plan import pipeline_plan
from eveflow_etl.render import inputs
from eveflow_etl.render.names import (
    check_spcs_name,
    host_port,
    qualified,
    quote_identifier,
    spcs_name,
    sql_identifier,
    sql_string,
    url_host_port,
)
from eveflow_etl.spec import EvePipeline

POOL_NAME = "spcs-process"
CONTAINER = "worker"
IMAGE_NAME = "eveflow-worker"
IMAGE_TAG = "latest"  # deploy.sh pushes a unique tag and points an uploaded copy of the spec at it
DATABASE = "EVEFLOW"
IMAGE_SCHEMA = "IMAGE_SCHEMA"
APP_SCHEMA = "APP_SCHEMA"
IMAGE_REPO = "IMAGE_REPO"
STAGE = "APP_STAGE"
INSTANCE_FAMILY = "CPU_X64_XS"
DB_PORT = 5432
SPEC_FILE = "service-spec.yaml"


@dataclass(frozen=True)
class Secret:
    """A Snowflake SECRET and the env variables it feeds (secretKeyRef → envVarName)."""

    name: str  # validated SQL identifier, unqualified
    kind: str  # GENERIC_STRING or PASSWORD
    env: tuple[tuple[str, str], ...]  # (secretKeyRef, envVarName)


@dataclass(frozen=True)
class Names:
    """Every Snowflake and SPCS name of one pipeline, validated once."""

    pipeline: str
    prefix: str  # SQL identifier prefix, e.g. MARKET_HISTORY
    pool: str  # Prefect work pool
    service: str
    compute_pool: str
    network_rule: str
    integration: str
    stage_dir: str  # folder on the stage holding this pipeline's spec

    @property
    def spec_path(self) -> str:
        return f"{self.stage_dir}/{SPEC_FILE}"

    def q(self, name: str) -> str:
        """Qualified name of an object in the app schema."""
        return qualified(DATABASE, APP_SCHEMA, name)

    @property
    def stage(self) -> str:
        return "@" + qualified(DATABASE, APP_SCHEMA, STAGE)

    @property
    def image_path(self) -> str:
        # SPCS image paths are the lower-cased repository path.
        return f"/{DATABASE}/{IMAGE_SCHEMA}/{IMAGE_REPO}/{IMAGE_NAME}".lower() + f":{IMAGE_TAG}"


def names_for(pipeline: EvePipeline) -> Names:
    base = spcs_name(pipeline.name, "metadata.name")
    prefix = sql_identifier(base, "metadata.name")
    return Names(
        pipeline=base,
        prefix=prefix,
        pool=check_spcs_name(POOL_NAME, "work pool"),
        service=sql_identifier(f"{prefix}_WORKER", "metadata.name"),
        compute_pool=sql_identifier(f"{prefix}_POOL", "metadata.name"),
        network_rule=sql_identifier(f"{prefix}_EGRESS", "metadata.name"),
        integration=sql_identifier(f"{prefix}_EAI", "metadata.name"),
        stage_dir=base,
    )


def secrets_for(pipeline: EvePipeline, names: Names) -> list[Secret]:
    """The SECRET objects the service reads, in a fixed order."""
    secrets: list[Secret] = []
    plan = pipeline_plan(pipeline)
    credential = plan.prefect_credential_env
    if credential:
        suffix = "PREFECT_API_KEY" if credential == "PREFECT_API_KEY" else "PREFECT_AUTH"
        secrets.append(Secret(f"{names.prefix}_{suffix}", "GENERIC_STRING", (("secret_string", credential),)))
    if plan.prefect_api_url is None:
        secrets.append(
            Secret(f"{names.prefix}_PREFECT_API_URL", "GENERIC_STRING", (("secret_string", "PREFECT_API_URL"),))
        )
    db = plan.database_variables  # never None: check_renderable refuses the local profile
    secrets += [
        Secret(f"{names.prefix}_DB_LOGIN", "PASSWORD", (("username", db.user), ("password", db.password))),
        Secret(f"{names.prefix}_DB_HOST", "GENERIC_STRING", (("secret_string", db.host),)),
        Secret(f"{names.prefix}_DB_NAME", "GENERIC_STRING", (("secret_string", db.database),)),
    ]
    return [Secret(sql_identifier(s.name, "metadata.name"), s.kind, s.env) for s in secrets]


def egress_hosts(pipeline: EvePipeline) -> list[str]:
    """host:port pairs the worker must reach: Prefect API, ESI (and the source), the database."""
    url = pipeline_plan(pipeline).prefect_api_url
    if url:
        prefect = url_host_port(url, "spec.prefect.apiUrl")
    elif pipeline.spec.prefect.mode == "cloud":
        prefect = host_port(inputs.CLOUD_API_HOST, 443, "spec.prefect")
    else:
        prefect = host_port("<PREFECT_API_HOST>", 443, "spec.prefect.apiUrl")
    hosts = [
        prefect,
        url_host_port(inputs.SOURCE_URLS[inputs.SourceKind.ESI_HISTORY], "ESI"),
        url_host_port(inputs.source_url(pipeline), "spec.source.kind"),
        host_port("<DATABASE_HOST>", DB_PORT, "spec.destination"),
    ]
    return list(dict.fromkeys(hosts))  # de-duplicated, order kept


def _cpu(quantity: str | None) -> float | None:
    """Kubernetes CPU quantity → SPCS CPU units ('250m' → 0.25)."""
    if quantity is None:
        return None
    value = Decimal(quantity[:-1]) / 1000 if quantity.endswith("m") else Decimal(quantity)
    return float(value)


_MEMORY_FACTORS = {"k": 10**3, "Ki": 2**10, "M": 10**6, "Mi": 2**20, "G": 10**9, "Gi": 2**30, "T": 10**12, "Ti": 2**40}


def _memory(quantity: str | None) -> str | None:
    """Kubernetes memory quantity → an SPCS one (M, Mi, G, Gi); other units become Mi."""
    if quantity is None:
        return None
    for unit in ("Mi", "Gi", "M", "G"):
        if quantity.endswith(unit) and quantity[: -len(unit)].isascii() and quantity[: -len(unit)].isdigit():
            return quantity
    for unit in sorted(_MEMORY_FACTORS, key=len, reverse=True):
        if quantity.endswith(unit):
            number, factor = Decimal(quantity[: -len(unit)]), _MEMORY_FACTORS[unit]
            break
    else:
        number, factor = Decimal(quantity), 1
    mebibytes = -(-(number * factor) // 2**20)  # round up
    return f"{max(int(mebibytes), 1)}Mi"


def _resources(pipeline: EvePipeline) -> dict:
    resources = pipeline.spec.worker.resources
    out: dict = {}
    for kind, values in (("requests", resources.requests), ("limits", resources.limits)):
        entry = {k: v for k, v in (("cpu", _cpu(values.cpu)), ("memory", _memory(values.memory))) if v is not None}
        if entry:
            out[kind] = entry
    return out


def build_service_spec(pipeline: EvePipeline, names: Names) -> dict:
    """The SPCS service specification (a plain dict; see tests/render for its schema)."""
    plan = pipeline_plan(pipeline)
    # The port is the standard one (the egress rule's DB_PORT): an SPCS secret holds host and
    # name, not a port.
    env = {"EVEFLOW_DATA_DIR": inputs.DATA_DIR, plan.database_variables.port: str(DB_PORT),
           **plan.database_fixed_env}
    if plan.prefect_api_url:
        env["PREFECT_API_URL"] = plan.prefect_api_url
    secrets = [
        {
            "snowflakeSecret": {"objectName": f"{DATABASE}.{APP_SCHEMA}.{secret.name}".lower()},
            "secretKeyRef": key,
            "envVarName": variable,
        }
        for secret in secrets_for(pipeline, names)
        for key, variable in secret.env
    ]
    container = {
        "name": CONTAINER,
        "image": names.image_path,
        "command": ["eveflow"],
        "args": list(plan.worker_args),  # of the pipeline adapted to the process pool names.pool
        "env": env,
        "readinessProbe": {"port": inputs.WORKER_PORT, "path": "/health"},
        "resources": _resources(pipeline),
        "secrets": secrets,
        "volumeMounts": [{"name": "data", "mountPath": inputs.DATA_DIR}],
    }
    return {
        "spec": {
            "containers": [container],
            "endpoints": [{"name": "health", "port": inputs.WORKER_PORT, "public": False, "protocol": "HTTP"}],
            "volumes": [{"name": "data", "source": "local"}],
            "logExporters": {"eventTableConfig": {"logLevel": "INFO"}},
        }
    }


def _secret_statement(secret: Secret, names: Names) -> str:
    target = names.q(secret.name)
    if secret.kind == "PASSWORD":
        user_var, password_var = (variable for _, variable in secret.env)
        return (
            f"CREATE SECRET IF NOT EXISTS {target}\n  TYPE = PASSWORD\n"
            f"  USERNAME = {sql_string('<' + user_var + '>')}\n  PASSWORD = {sql_string('<' + password_var + '>')};"
        )
    (_, variable), = secret.env
    return (
        f"CREATE SECRET IF NOT EXISTS {target}\n  TYPE = GENERIC_STRING\n"
        f"  SECRET_STRING = {sql_string('<' + variable + '>')};"
    )


def service_instances(pipeline: EvePipeline) -> tuple[int, int]:
    """MIN_INSTANCES/MAX_INSTANCES: 1/1, or spec.worker.autoscaling's min/max (min at least 1:
    an SPCS service does not scale to zero; suspend it with service-suspend.sql instead)."""
    auto = pipeline.spec.worker.autoscaling
    if auto is None:
        return 1, 1
    return max(1, auto.min_replicas), max(1, auto.max_replicas)


AUTOSCALING_NOTE = (
    "-- MIN/MAX_INSTANCES come from spec.worker.autoscaling. SPCS scales a service's instances on\n"
    "-- their CPU use, not on the Prefect queue depth the Kubernetes operator reads, and keeps at\n"
    "-- least one instance; each instance takes at most runsPerReplica flow runs (--limit).\n"
)


def service_statements(names: Names, instances: tuple[int, int] = (1, 1)) -> dict[str, str]:
    """The service lifecycle statements, by file name (deploy.sh runs create or update)."""
    service = names.q(names.service)
    from_stage = f"FROM {names.stage}\n  SPECIFICATION_FILE = {sql_string(names.spec_path)}"
    low, high = instances
    return {
        "service-create.sql": (
            (AUTOSCALING_NOTE if instances != (1, 1) else "")
            + f"CREATE SERVICE IF NOT EXISTS {service}\n  IN COMPUTE POOL {quote_identifier(names.compute_pool)}\n"
            f"  {from_stage}\n"
            f"  EXTERNAL_ACCESS_INTEGRATIONS = ({quote_identifier(names.integration)})\n"
            f"  MIN_INSTANCES = {low}\n  MAX_INSTANCES = {high};\n"
        ),
        "service-update.sql": f"ALTER SERVICE {service}\n  {from_stage};\n",
        "service-suspend.sql": f"ALTER SERVICE {service} SUSPEND;\n",
        "service-resume.sql": f"ALTER SERVICE {service} RESUME;\n",
    }


def build_setup_sql(pipeline: EvePipeline, names: Names) -> str:
    db = quote_identifier(DATABASE)
    hosts = ", ".join(sql_string(h) for h in egress_hosts(pipeline))
    secrets = secrets_for(pipeline, names)
    lines = [
        f"-- Snowflake objects for the eveflow pipeline '{names.pipeline}' (generated by eveflow render).",
        "-- Run once with a role that may create databases, compute pools and integrations, e.g.",
        "--   snow sql -f setup.sql",
        "-- Safe to run again: everything is IF NOT EXISTS (existing secrets keep their values), and",
        "-- the network rule's hosts are updated in place.",
        "-- Before running: replace <PREFECT_API_HOST> / <DATABASE_HOST> in the network rule, if present.",
        "-- Secrets are created with placeholder values; set the real ones afterwards, by hand:",
    ]
    for secret in secrets:
        if secret.kind == "PASSWORD":
            lines.append(f"--   ALTER SECRET {names.q(secret.name)} SET USERNAME = '...' PASSWORD = '...';")
        else:
            lines.append(f"--   ALTER SECRET {names.q(secret.name)} SET SECRET_STRING = '...';")
    lines += [
        "",
        "-- 1. Database, schemas, image repository, stage",
        f"CREATE DATABASE IF NOT EXISTS {db};",
        f"CREATE SCHEMA IF NOT EXISTS {qualified(DATABASE, IMAGE_SCHEMA)};",
        f"CREATE SCHEMA IF NOT EXISTS {qualified(DATABASE, APP_SCHEMA)};",
        f"CREATE IMAGE REPOSITORY IF NOT EXISTS {qualified(DATABASE, IMAGE_SCHEMA, IMAGE_REPO)};",
        f"CREATE STAGE IF NOT EXISTS {qualified(DATABASE, APP_SCHEMA, STAGE)}\n"
        "  DIRECTORY = (ENABLE = TRUE)\n  ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE');",
        "",
        "-- 2. Compute pool (one small CPU node is plenty for a process worker)",
        f"CREATE COMPUTE POOL IF NOT EXISTS {quote_identifier(names.compute_pool)}\n"
        f"  MIN_NODES = 1\n  MAX_NODES = 1\n  INSTANCE_FAMILY = {INSTANCE_FAMILY}\n"
        "  AUTO_RESUME = TRUE\n  AUTO_SUSPEND_SECS = 3600;",
        "",
        "-- 3. Egress: the Prefect API, ESI (and the market source), the database",
        f"CREATE NETWORK RULE IF NOT EXISTS {names.q(names.network_rule)}\n"
        f"  MODE = EGRESS\n  TYPE = HOST_PORT\n  VALUE_LIST = ({hosts});",
        "-- Re-runs update the hosts in place (the integration and the service keep their references).",
        f"ALTER NETWORK RULE {names.q(names.network_rule)} SET VALUE_LIST = ({hosts});",
        f"CREATE EXTERNAL ACCESS INTEGRATION IF NOT EXISTS {quote_identifier(names.integration)}\n"
        f"  ALLOWED_NETWORK_RULES = ({names.q(names.network_rule)})\n  ENABLED = TRUE;",
        "",
        "-- 4. Secrets (placeholders only: never put a real value in this file)",
    ]
    lines += [_secret_statement(s, names) for s in secrets]
    lines += [
        "",
        "-- 5. The service: deploy.sh pushes the image, uploads the spec to the stage, then runs",
        "--    service-create.sql (first time) or service-update.sql (in place). For reference:",
    ]
    for file_name, statement in service_statements(names, service_instances(pipeline)).items():
        lines.append(f"--   [{file_name}]")
        lines += [f"--   {line}" for line in statement.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"

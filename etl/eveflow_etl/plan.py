"""One pipeline's derived facts, worked out once: :func:`pipeline_plan` returns a :class:`PipelinePlan`.

The spec (:class:`eveflow_etl.spec.EvePipeline`) says what the user wants. Several facts follow
from it: where a kubernetes pool's flow-run Jobs go, which table is loaded, the worker's command
line and queues, the variables the destination profile reads, the Prefect API URL and credential
variable, the tags and descriptions that mark Prefect objects as eveflow's. Each used to be worked
out in two or three places (operator, sync library, CLI, render targets), and some had drifted
apart: the worker's queues fell back to the pool's in the operator but not in the renders.

Here they are worked out in one pure function of the spec and the few settings values it needs,
passed in (nothing here reads the environment), and every consumer reads the plan. The spec stays
the single source of truth; the plan holds only what follows from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from eveflow_etl.spec import EvePipeline, SecretKeyRef

# `eveflow worker --port`: /health and /metrics (the worker Deployment's probes, compose's
# healthcheck, the SPCS readiness probe and endpoint).
WORKER_PORT = 8080
# The namespace of a pipeline outside Kubernetes (``eveflow apply`` without -n, the renders).
DEFAULT_NAMESPACE = "default"

# What marks a Prefect object as eveflow's: the words in a pool's and a queue's description, the tag
# on every deployment, and the prefix of the tag naming the pipeline that owns a deployment.
MANAGED_MARKER = "Managed by eveflow"
MANAGED_TAG = "eveflow"
PIPELINE_TAG_PREFIX = "eveflow.dev/pipeline:"

# Prefect credential variables by what the spec references (PrefectSpec allows one of the two).
PREFECT_API_KEY = "PREFECT_API_KEY"
PREFECT_API_AUTH_STRING = "PREFECT_API_AUTH_STRING"


@dataclass(frozen=True)
class DatabaseVariables:
    """The environment variables one destination profile reads its connection from."""

    host: str
    port: str  # optional: 5432 when unset
    database: str
    user: str
    password: str

    @property
    def names(self) -> tuple[str, ...]:
        return (self.host, self.port, self.database, self.user, self.password)

    @property
    def required(self) -> tuple[str, ...]:
        """What a worker must be given (the port has a default)."""
        return (self.host, self.database, self.user, self.password)


PG_VARIABLES = DatabaseVariables("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD")
SNOWFLAKE_VARIABLES = DatabaseVariables(
    "SNOWFLAKE_POSTGRES_HOST", "SNOWFLAKE_POSTGRES_PORT", "SNOWFLAKE_POSTGRES_DATABASE",
    "SNOWFLAKE_POSTGRES_USER", "SNOWFLAKE_POSTGRES_PASSWORD",
)
# crunchy also takes a whole DSN in DATABASE_URL (else libpq's PG* variables).
DATABASE_URL = "DATABASE_URL"
# By destination profile (spec.destination.profile); ``local`` is the embedded server: none.
PROFILE_VARIABLES: Mapping[str, DatabaseVariables] = MappingProxyType(
    {"env": PG_VARIABLES, "crunchy": PG_VARIABLES, "snowflake": SNOWFLAKE_VARIABLES}
)
PGSSLMODE = "PGSSLMODE"
# Values a profile fixes itself: Crunchy Bridge only accepts TLS.
PROFILE_FIXED_ENV: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"crunchy": MappingProxyType({PGSSLMODE: "require"})}
)
_NO_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class PipelinePlan:
    """What follows from one pipeline's spec (and the settings values given to :func:`pipeline_plan`)."""

    namespace: str  # the pipeline's namespace (outside Kubernetes: DEFAULT_NAMESPACE unless given)
    # -- Prefect objects -------------------------------------------------------------------------
    pipeline_tag: str  # "eveflow.dev/pipeline:<namespace>.<name>": which pipeline owns a deployment
    deployment_tags: tuple[str, ...]  # every deployment of the pipeline carries both
    deployment_description: str
    pool_creator: str  # in the description of a pool this pipeline created: it owns the pool
    pool_description: str
    # -- Where the data goes ---------------------------------------------------------------------
    target_schema: str
    target_table: str  # spec.destination.table, else the source kind's default table
    database_variables: DatabaseVariables | None  # what the profile reads; None: the local server
    database_fixed_env: Mapping[str, str]  # what the profile fixes itself (crunchy: PGSSLMODE)
    # -- The worker ------------------------------------------------------------------------------
    jobs_namespace: str  # where a kubernetes pool's flow-run Jobs go
    worker_queues: tuple[str, ...]  # spec.worker.queues, else every queue of spec.workPool
    worker_limit: int | None  # flow runs one replica takes at once (autoscaling's runsPerReplica)
    worker_args: tuple[str, ...]  # of `eveflow worker` for the pipeline's own pool
    worker_image: str | None  # spec.worker.image, else the default given; None: none given
    prefect_api_url: str | None  # spec.prefect.apiUrl, else the default given; None: none given
    prefect_credential_env: str | None  # PREFECT_API_KEY (cloud) / PREFECT_API_AUTH_STRING, or None
    prefect_credential_ref: SecretKeyRef | None  # the Secret key holding it, when the spec names one

    @property
    def qualified_table(self) -> str:
        return f"{self.target_schema}.{self.target_table}"


def worker_args(pool: str, pool_type: str, queues: tuple[str, ...] | list[str] = (), *,
                limit: int | None = None) -> list[str]:
    """Arguments of ``eveflow worker`` (the command is ``eveflow``) polling ``queues`` of ``pool``
    (none: all of its queues), taking at most ``limit`` flow runs at once."""
    args = ["worker", "--pool", pool, "--type", pool_type]
    for queue in queues:
        args += ["--queue", queue]
    if limit is not None:
        args += ["--limit", str(limit)]
    return args + ["--port", str(WORKER_PORT)]


def pipeline_plan(pipeline: EvePipeline, namespace: str | None = None, *,
                  default_api_url: str | None = None, default_image: str | None = None) -> PipelinePlan:
    """The derived facts of ``pipeline`` in ``namespace`` (None: ``metadata.namespace``, else
    ``default``). ``default_api_url`` / ``default_image`` stand in for an empty
    ``spec.prefect.apiUrl`` / ``spec.worker.image`` (the operator passes its settings; the CLI and
    the renders pass nothing, and the URL then comes from ``PREFECT_API_URL`` where the worker runs).
    Pure: the same arguments give the same plan."""
    spec = pipeline.spec
    namespace = namespace or pipeline.metadata.namespace or DEFAULT_NAMESPACE
    identity = f"{namespace}.{pipeline.name}"
    pool = spec.work_pool
    pool_creator = f"(created for pipeline {identity})"
    # Not all of the pool's queues in Prefect: on a shared pool other pipelines add theirs, and
    # this worker must not run their flows (nor count them when autoscaling).
    queues = tuple(spec.worker.queues) or tuple(q.name for q in pool.queues)
    limit = spec.worker.autoscaling.runs_per_replica if spec.worker.autoscaling is not None else None
    prefect = spec.prefect
    if prefect.mode == "cloud":
        credential_env, credential_ref = PREFECT_API_KEY, prefect.api_key_secret_ref
    elif prefect.auth_string_secret_ref is not None:
        credential_env, credential_ref = PREFECT_API_AUTH_STRING, prefect.auth_string_secret_ref
    else:
        credential_env, credential_ref = None, None
    profile = spec.destination.profile
    return PipelinePlan(
        namespace=namespace,
        pipeline_tag=f"{PIPELINE_TAG_PREFIX}{identity}",
        deployment_tags=(MANAGED_TAG, f"{PIPELINE_TAG_PREFIX}{identity}"),
        deployment_description=f"{MANAGED_MARKER} from EvePipeline {namespace}/{pipeline.name}: "
                               "change the pipeline, not this deployment.",
        pool_creator=pool_creator,
        pool_description=f"{MANAGED_MARKER} {pool_creator}; deleted with its last pipeline.",
        target_schema=spec.destination.db_schema,
        target_table=spec.destination.table or spec.source.kind.default_table,
        database_variables=PROFILE_VARIABLES.get(profile),
        database_fixed_env=PROFILE_FIXED_ENV.get(profile, _NO_ENV),
        jobs_namespace=(pool.kubernetes.namespace if pool.kubernetes else None) or namespace,
        worker_queues=queues,
        worker_limit=limit,
        worker_args=tuple(worker_args(pool.name, pool.type, queues, limit=limit)),
        worker_image=spec.worker.image or default_image,
        prefect_api_url=prefect.api_url or default_api_url,
        prefect_credential_env=credential_env,
        prefect_credential_ref=credential_ref,
    )

"""The EvePipeline document: the one model behind the CRD, the chart's values, the CLI and renders.

A user writes the same document for ``kubectl apply`` and for ``eveflow apply -f`` (no cluster)::

    apiVersion: eveflow.dev/v1alpha1
    kind: EvePipeline
    metadata: {name: jita-history}
    spec: {...}

Field names are camelCase in documents (Kubernetes convention) and snake_case in Python.
Every constraint that can be expressed in the schema lives here, so the generated CRD rejects
the same mistakes ``eveflow apply`` does; :func:`load_pipeline` turns validation errors into
messages that name the field and the fix.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import ConfigError

API_GROUP = "eveflow.dev"
API_VERSION = "v1alpha1"
KIND = "EvePipeline"
PLURAL = "evepipelines"
SHORT_NAME = "evp"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SQL_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
# Five cron fields of digits, '*', ',', '-', '/', or names (JAN, MON); the full check is croniter's.
CRON_SHAPE = r"^\s*\S+(\s+\S+){4}\s*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
# An http(s) URL with userinfo ('user:password@' or 'token@') before its host. Also the CRD's
# CEL rule (RE2 syntax): the model and `kubectl apply` reject the same URLs.
URL_WITH_USERINFO = r"^https?://[^/?#]*@"

# The flows every pipeline deploys; deployment names are "<pipeline>" and "<pipeline>-maintenance".
ETL_FLOW_NAME = "eve-market-etl"
MAINTENANCE_FLOW_NAME = "eve-maintenance"

_MODEL_CONFIG = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

# Size bounds that hold together: kopf keeps the last-handled spec in an annotation, and
# `kubectl apply` the whole last-applied document in another; all annotations of an object share
# 256 KiB. The largest valid spec is ~100 KiB of JSON (tests/spec/test_size_bounds.py builds it).
MAX_TYPES = 4_000
MAX_REGIONS = 100
MAX_SCHEDULES = 20
MAX_SCHEDULE_TYPES = 50
MAX_JOB_VARIABLES_BYTES = 8_192

RegionId = Annotated[int, Field(ge=10_000_000, le=19_999_999)]
TypeId = Annotated[int, Field(ge=1, le=2_147_483_647)]


def has_url_credentials(url: str) -> bool:
    """True if an http(s) URL carries userinfo ('user:password@' or 'token@') before its host.

    The one check for every Prefect API URL we accept (spec, operator settings); the CRD's CEL
    rule and the chart's values schema use the same ``URL_WITH_USERINFO`` pattern.
    """
    return re.match(URL_WITH_USERINFO, url) is not None


def check_cron(cron: str) -> str:
    """The cron check shared by schedules and maintenance (croniter is what Prefect accepts)."""
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ValueError(
            f"'{cron}' is not a valid cron expression: use five fields "
            "'minute hour day-of-month month day-of-week', e.g. '5 12 * * *'"
        )
    return cron.strip()


class _Model(BaseModel):
    model_config = _MODEL_CONFIG


class SecretKeyRef(_Model):
    """A key of a Kubernetes Secret (in the pipeline's namespace). Values never enter the spec."""

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=253, description="Secret name.")]
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="Key in the Secret.")]


class PrefectSpec(_Model):
    """Which Prefect API the pipeline lives in, and how to authenticate."""

    mode: Literal["selfHosted", "cloud"] = Field(
        default="selfHosted", description="selfHosted: your own Prefect server; cloud: Prefect Cloud."
    )
    api_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=2048,
        description="Prefect API URL (ends in /api for a server; the workspace URL for Cloud). "
        "Empty: the operator's default, or PREFECT_API_URL for the CLI.",
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Prefect Cloud API key (cloud mode)."
    )
    auth_string_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding 'user:password' for a server with basic auth."
    )

    @field_validator("api_url")
    @classmethod
    def _no_credentials_in_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        # The URL is not a secret: the operator puts it in the worker Deployment's env, renders
        # write it into files. The message must not echo the URL (it holds the password).
        if url is not None and has_url_credentials(url):
            ref = "apiKeySecretRef (the API key)" if info.data.get("mode") == "cloud" else \
                "authStringSecretRef (the 'user:password' string)"
            raise ValueError(
                "credentials in the URL ('user:password@' before the host) are not allowed: anyone who "
                "can read the worker Deployment can read the URL; remove them and put them in a Secret "
                f"referenced by spec.prefect.{ref}"
            )
        return url

    @model_validator(mode="after")
    def _auth_matches_mode(self) -> PrefectSpec:
        if self.mode == "cloud" and self.auth_string_secret_ref is not None:
            raise ValueError("authStringSecretRef is for a self-hosted server; Prefect Cloud uses apiKeySecretRef")
        if self.mode == "selfHosted" and self.api_key_secret_ref is not None:
            raise ValueError("apiKeySecretRef is for Prefect Cloud (mode: cloud); a self-hosted server uses authStringSecretRef")
        return self


class WorkQueueSpec(_Model):
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=63, description="Work queue name.")]
    priority: int = Field(default=1, ge=1, le=100, description="1 is served first.")
    concurrency_limit: int | None = Field(default=None, ge=0, le=10_000)


class KubernetesPoolSpec(_Model):
    """Settings of a kubernetes work pool's job template (only for workPool.type: kubernetes)."""

    namespace: str | None = Field(
        default=None, pattern=DNS_LABEL, max_length=63,
        description="Namespace the flow-run Jobs go to; default: the pipeline's namespace.",
    )
    finished_job_ttl_seconds: int | None = Field(default=3600, ge=0, le=604_800)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"

    @field_validator("finished_job_ttl_seconds")
    @classmethod
    def _ttl_not_null(cls, ttl: int | None) -> int | None:
        # null took Prefect's template default: finished Jobs and their pods were kept for ever,
        # silently filling the namespace. Say so instead.
        if ttl is None:
            raise ValueError("null would keep every finished flow-run Job (and its pod) for ever: give seconds "
                             "(0 deletes them at once, at most 604800 = 7 days), or leave the field out for 3600")
        return ttl


# Job variables the operator sets itself, or that reach beyond the pipeline's own namespace and
# image (another namespace or cluster, another ServiceAccount, the host): never from jobVariables.
OPERATOR_CONTROLLED_JOB_VARIABLES: dict[str, dict[str, str]] = {
    "kubernetes": {"namespace": "spec.workPool.kubernetes.namespace", "image": "spec.worker.image",
                   "service_account_name": "", "env_from": "spec.destination.secretRef", "command": "",
                   "cluster_config": ""},
    "docker": {"image": "spec.worker.image", "command": "", "container_create_kwargs": "", "privileged": "",
               "network_mode": ""},
    "process": {"command": "", "working_dir": ""},
}


def _default_queues() -> list[WorkQueueSpec]:
    return [WorkQueueSpec(name="default", priority=1)]


class WorkPoolSpec(_Model):
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=63, description="Prefect work pool name.")]
    type: Literal["process", "docker", "kubernetes"] = "process"
    concurrency_limit: int | None = Field(default=None, ge=0, le=10_000)
    queues: list[WorkQueueSpec] = Field(default_factory=_default_queues, min_length=1, max_length=20)
    job_variables: dict[str, Any] = Field(
        default_factory=dict, max_length=32,
        description="Overrides of the defaults in the pool type's base job template "
        "(e.g. env, cpu_request, memory_limit); merged into the type's default template. The variables "
        "the operator sets (namespace, service_account_name, image, env_from, command, cluster_config; on "
        "docker also privileged, network_mode, container_create_kwargs, host-path volumes) are refused.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    kubernetes: KubernetesPoolSpec | None = Field(default=None, description="Only for type: kubernetes.")

    @model_validator(mode="after")
    def _type_specific(self) -> WorkPoolSpec:
        if self.kubernetes is not None and self.type != "kubernetes":
            raise ValueError(f"kubernetes settings need type: kubernetes (this pool is type: {self.type})")
        controlled = OPERATOR_CONTROLLED_JOB_VARIABLES.get(self.type, {})
        refused = sorted(k for k in self.job_variables if k in controlled)
        if refused:
            fixes = "; ".join(f"{k}: set {controlled[k]} instead" for k in refused if controlled[k])
            raise ValueError(
                f"jobVariables {', '.join(refused)}: set by the operator on a {self.type} pool, not overridable"
                + (f" ({fixes})" if fixes else "") + "; remove them from spec.workPool.jobVariables")
        size = len(json.dumps(self.job_variables))
        if size > MAX_JOB_VARIABLES_BYTES:
            raise ValueError(f"jobVariables: {size} bytes of JSON, at most {MAX_JOB_VARIABLES_BYTES} "
                             "(the whole spec must fit in the annotations Kubernetes keeps of it)")
        if self.type == "docker":
            # Named volumes only: a host path ("/:/host", "/var/run/docker.sock:…") is the docker host.
            volumes = self.job_variables.get("volumes") or []
            host = [v for v in volumes if not isinstance(v, str) or v.startswith(("/", ".", "~")) or ":" not in v]
            if host:
                raise ValueError(f"jobVariables volumes {host}: only named volumes ('<volume>:<path>') are allowed, "
                                 "not host paths; use a named volume")
        names = [q.name for q in self.queues]
        if len(set(names)) != len(names):
            raise ValueError(f"queue names must be unique, got {names}")
        return self


class ResourceList(_Model):
    cpu: str | None = Field(default=None, pattern=QUANTITY)
    memory: str | None = Field(default=None, pattern=QUANTITY)


class ResourceRequirements(_Model):
    requests: ResourceList = Field(default_factory=lambda: ResourceList(cpu="250m", memory="512Mi"))
    limits: ResourceList = Field(default_factory=lambda: ResourceList(memory="2Gi"))


# Pool types whose flow runs do not run inside the worker: scaling the worker by the runs waiting
# would add replicas that only submit Jobs/containers, which one replica already does for all.
AUTOSCALING_POOL_TYPES = ("process",)
DEFAULT_REPLICAS = 1


class AutoscalingSpec(_Model):
    """Scale the worker to the flow runs waiting for it (queue depth), to zero between runs."""

    min_replicas: int = Field(default=0, ge=0, le=50, description="Fewest worker replicas (0: scale to zero).")
    max_replicas: int = Field(default=3, ge=1, le=50, description="Most worker replicas.")
    runs_per_replica: int = Field(
        default=1, ge=1, le=100,
        description="Flow runs one replica takes at a time (the worker's --limit).",
    )
    scale_down_delay_seconds: int = Field(
        default=300, ge=0, le=86_400,
        description="Demand must stay lower this long before the worker scales down.",
    )
    poll_seconds: int = Field(
        default=15, ge=5, le=600,
        description="How often the operator reads the queue depth from Prefect (one read per pool).",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas}); "
                "lower minReplicas or raise maxReplicas"
            )
        return self


class WorkerSpec(_Model):
    replicas: int | None = Field(
        default=None, ge=0, le=50,
        description="Fixed number of worker replicas (default 1); not with autoscaling.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Scale the worker by the flow runs due or running on its queues (process pools "
        "only); replaces replicas.",
    )
    image: str | None = Field(
        default=None, max_length=512, pattern=r"^[^\s]+$",
        description="Worker image; empty: the operator's default image (the chart's).",
    )
    queues: list[Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]] = Field(
        default_factory=list, max_length=20, description="Queues this worker polls; empty: all of the pool's queues."
    )
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> WorkerSpec:
        if self.autoscaling is not None and self.replicas is not None:
            raise ValueError(
                "replicas and autoscaling are both set: autoscaling decides the replica count; "
                "remove replicas (or remove autoscaling for a fixed count)"
            )
        return self


class BackfillSpec(_Model):
    """EVE Ref's archive from a first day on: each run loads the days not yet loaded and verified."""

    from_: str = Field(
        alias="from", pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="First day to load, YYYY-MM-DD; each run loads every day from it to yesterday (UTC) "
        "that is not loaded and verified against EVE Ref's totals.json yet.",
    )

    @field_validator("from_")
    @classmethod
    def _real_day(cls, value: str) -> str:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"backfill.from must be a date YYYY-MM-DD, got {value!r}") from None
        if day >= dt.datetime.now(dt.UTC).date():
            raise ValueError(f"backfill.from {value} is not in the past: EVE Ref's last day is yesterday")
        return value


class SourceSpec(_Model):
    kind: SourceKind = Field(default=SourceKind.ESI_HISTORY, description="Market data source.")
    regions: list[RegionId] = Field(
        min_length=1, max_length=MAX_REGIONS, description="EVE region ids, e.g. 10000002 (The Forge)."
    )
    types: list[TypeId] | None = Field(
        default=None, max_length=MAX_TYPES, description="Type ids; empty: every type with a market."
    )
    fan_out: bool = Field(default=False, description="Run each region as its own flow run.")
    backfill: BackfillSpec | None = Field(
        default=None, description="EVE Ref only: load the archive from this day on (resumable, one day a "
        "transaction) instead of yesterday alone.",
    )
    verify_days: int = Field(
        default=0, ge=0, le=366, description="EVE Ref only: load the last N days again on every run even if "
        "verified (EVE Ref rewrites recent days); unchanged rows cost no write.",
    )

    @model_validator(mode="after")
    def _everef_only(self) -> SourceSpec:
        if (self.backfill is not None or self.verify_days) and self.kind is not SourceKind.EVEREF:
            raise ValueError(f"source.backfill and source.verifyDays need kind everef, got kind {self.kind.value}")
        return self

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, regions: list[int]) -> list[int]:
        if len(set(regions)) != len(regions):
            raise ValueError(f"regions must not repeat, got {regions}")
        return regions


class DestinationSpec(_Model):
    profile: Literal["env", "crunchy", "snowflake", "local"] = Field(
        default="env",
        description="env: PG* variables (or DATABASE_URL); crunchy: Crunchy Bridge (TLS required); "
        "snowflake: SNOWFLAKE_POSTGRES_* variables; local: the embedded PostgreSQL (demo only).",
    )
    secret_ref: Annotated[str, Field(pattern=DNS_LABEL, max_length=253)] | None = Field(
        default=None, description="Secret whose keys (PGHOST, PGPASSWORD, …) become the worker's env."
    )
    db_schema: str = Field(default="eve", alias="schema", pattern=SQL_IDENTIFIER, description="Target schema.")
    table: str | None = Field(default=None, pattern=SQL_IDENTIFIER, description="Target table; default per source.")


class ScheduleParameters(BaseModel):
    """The flow parameters a schedule may override, checked like the spec's own fields (names as
    the ETL flow takes them). The rest (destination, table, pipeline) is the pipeline's."""

    model_config = ConfigDict(extra="forbid")

    regions: list[RegionId] | None = Field(default=None, min_length=1, max_length=MAX_REGIONS,
                                           description="Regions of this schedule's runs.")
    types: list[TypeId] | None = Field(default=None, max_length=MAX_SCHEDULE_TYPES,
                                       description="Type ids of this schedule's runs.")
    fan_out: bool | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    retry_delay_seconds: int | None = Field(default=None, ge=0, le=3600)
    timeout_seconds: int | None = Field(default=None, ge=60, le=86_400)

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, regions: list[int] | None) -> list[int] | None:
        if regions is not None and len(set(regions)) != len(regions):
            raise ValueError(f"regions must not repeat, got {regions}")
        return regions


class ScheduleSpec(_Model):
    slug: Annotated[str, Field(pattern=DNS_LABEL, max_length=63, description="Stable id of the schedule.")]
    cron: Annotated[str, Field(pattern=CRON_SHAPE, max_length=120, description="Five-field cron expression.")]
    timezone: str = Field(default="UTC", max_length=64, description="IANA time zone, e.g. Europe/Oslo.")
    parameters: ScheduleParameters = Field(
        default_factory=ScheduleParameters,
        description="Flow parameter overrides for runs of this schedule (regions, types, fan_out, retries, "
        "retry_delay_seconds, timeout_seconds).",
    )
    active: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        return check_cron(cron)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, tz: str) -> str:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{tz}' is not an IANA time zone name (e.g. 'UTC', 'Europe/Oslo')") from None
        return tz


class MaintenanceSpec(_Model):
    """The housekeeping deployment: prune quarantine/ledger rows, ANALYZE, trim the ESI cache."""

    enabled: bool = True
    cron: Annotated[str, Field(pattern=CRON_SHAPE, max_length=120)] = "30 3 * * *"
    retention_days: int = Field(default=30, ge=1, le=3650)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        return check_cron(cron)


class EvePipelineSpec(_Model):
    """Desired state of one pipeline: a work pool, deployments with schedules, and a worker."""

    prefect: PrefectSpec = Field(default_factory=PrefectSpec)
    work_pool: WorkPoolSpec
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    source: SourceSpec
    destination: DestinationSpec = Field(default_factory=DestinationSpec)
    schedules: list[ScheduleSpec] = Field(default_factory=list, max_length=MAX_SCHEDULES)
    maintenance: MaintenanceSpec = Field(default_factory=MaintenanceSpec)
    retries: int = Field(default=3, ge=0, le=10, description="Task retries per region.")
    retry_delay_seconds: int = Field(default=60, ge=0, le=3600)
    timeout_seconds: int = Field(default=3600, ge=60, le=86_400, description="Flow run timeout.")
    suspend: bool = Field(default=False, description="Pause schedules and scale the worker to 0.")
    deletion_policy: Literal["Delete", "Orphan"] = Field(
        default="Delete", description="On delete: remove the Prefect deployments (Delete) or keep them (Orphan)."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> EvePipelineSpec:
        slugs = [s.slug for s in self.schedules]
        duplicates = sorted({s for s in slugs if slugs.count(s) > 1})
        if duplicates:
            raise ValueError(f"schedule slugs must be unique; repeated: {', '.join(duplicates)}")
        if self.worker.autoscaling is not None and self.work_pool.type not in AUTOSCALING_POOL_TYPES:
            raise ValueError(
                f"worker.autoscaling is for process pools; this pool is type: {self.work_pool.type}, whose "
                "flow runs run in their own Jobs/containers, not in the worker, so one worker replica "
                "submits them all and more replicas add nothing: remove worker.autoscaling"
            )
        pool_queues = {q.name for q in self.work_pool.queues}
        unknown = [q for q in self.worker.queues if q not in pool_queues]
        if unknown:
            raise ValueError(
                f"worker.queues {unknown} are not queues of work pool '{self.work_pool.name}' "
                f"(its queues: {sorted(pool_queues)})"
            )
        return self


class Condition(_Model):
    """A standard Kubernetes condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32_768)
    last_transition_time: str
    observed_generation: int | None = None


class RunSummary(_Model):
    flow_run_id: str | None = None
    deployment: str | None = None
    state: str | None = None
    time: str | None = Field(default=None, description="Start (last run) or scheduled time (next run), RFC 3339.")
    rows_loaded: int | None = None
    rows_quarantined: int | None = None


class WorkerAutoscalingStatus(_Model):
    """What the autoscaler decided at its last change (spec.worker.autoscaling only)."""

    desired_replicas: int | None = Field(default=None, description="Worker replicas the autoscaler set.")
    reason: str | None = Field(default=None, description="ScaledUp, ScaledDown, ScaleDownDelayed, Steady or Suspended.")
    waiting: int | None = Field(default=None, description="Flow runs due, pending or running on the worker's queues.")
    running: int | None = Field(default=None, description="Of which running.")


class EvePipelineStatus(_Model):
    """What the operator observed; written once per reconcile pass."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    work_pool_id: str | None = None
    work_pool_name: str | None = None
    deployment_ids: dict[str, str] = Field(default_factory=dict, description="Deployment name → Prefect id.")
    schedule_ids: dict[str, str] = Field(default_factory=dict, description="Schedule slug → Prefect id.")
    schedules: int | None = Field(default=None, description="Number of active schedules.")
    spec_hash: str | None = Field(default=None, description="Hash of the spec last synced to Prefect.")
    last_run: RunSummary | None = None
    next_run: RunSummary | None = None
    worker: WorkerAutoscalingStatus | None = None


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=53)]
    namespace: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)


class EvePipeline(BaseModel):
    """A whole EvePipeline document (what ``kubectl apply -f`` and ``eveflow apply -f`` read)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    api_version: Literal["eveflow.dev/v1alpha1"] = Field(default=f"{API_GROUP}/{API_VERSION}", alias="apiVersion")
    kind: Literal["EvePipeline"] = KIND
    metadata: ObjectMeta
    spec: EvePipelineSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def etl_deployment_name(self) -> str:
        return self.metadata.name

    @property
    def maintenance_deployment_name(self) -> str:
        return f"{self.metadata.name}-maintenance"


def format_validation_error(error: ValidationError, root: str = "") -> str:
    """One line per problem: ``spec.schedules[1].cron: '61 * * * *' is not a valid cron …``."""
    lines = []
    for item in error.errors():
        path = root
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; fields are camelCase)"
        elif item["type"] == "missing":
            message = "required field is missing"
        lines.append(f"{path or '(document)'}: {message}")
    return "; ".join(lines)


def parse_pipeline(document: dict[str, Any], origin: str = "pipeline") -> EvePipeline:
    """Validate a document already parsed from YAML/JSON; errors name each field and the fix."""
    if not isinstance(document, dict):
        raise ConfigError(f"{origin}: expected an EvePipeline mapping, got {type(document).__name__}")
    if document.get("kind", KIND) != KIND:
        raise ConfigError(f"{origin}: kind is '{document.get('kind')}', expected '{KIND}'")
    try:
        return EvePipeline.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc)}") from None


def load_pipeline(path: str | Path) -> EvePipeline:
    """Read an EvePipeline YAML file (the first document of kind EvePipeline in it)."""
    path = Path(path)
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    pipelines = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if not pipelines:
        raise ConfigError(f"{path}: no document with kind: {KIND}")
    return parse_pipeline(pipelines[0], origin=str(path))


_DNS_LABEL_RE = re.compile(DNS_LABEL)


def is_dns_label(value: str, max_length: int = 63) -> bool:
    return len(value) <= max_length and bool(_DNS_LABEL_RE.match(value))

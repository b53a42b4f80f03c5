"""Every setting of the operator, read from ``EVEFLOW_OPERATOR_*`` variables in this one place.

Loaded once at startup (``load_settings()``) before any handler is registered; handlers get the
object passed in, nothing reads the environment later. Bad values fail the start loudly.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from eveflow_etl.errors import ConfigError
from eveflow_etl.spec import DNS_LABEL, has_url_credentials, is_dns_label

ENV_PREFIX = "EVEFLOW_OPERATOR_"


class OperatorSettings(BaseSettings):
    """Operator configuration (the chart sets these as env vars on the operator Deployment)."""

    # hide_input_in_errors: a bad value must not land in logs, and the input of a model-level
    # error is every setting, the Prefect URL included.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)

    # Comma-separated namespaces to watch; empty: every namespace (cluster-wide).
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The timer resync: every period (plus a random 0..jitter phase per resource) the operator
    # reads Prefect and repairs drift; it writes nothing when all is in sync.
    resync_seconds: float = Field(default=300.0, ge=1, le=86_400)
    resync_jitter_seconds: float = Field(default=30.0, ge=0, le=3_600)
    # A resource edited less than this long ago is left to the change handlers.
    resync_idle_seconds: float = Field(default=10.0, ge=0, le=3_600)
    # Prefect API for pipelines whose spec.prefect.apiUrl is empty; no credentials in it.
    prefect_api_url: str = Field(default="http://prefect-server:4200/api", pattern=r"^https?://\S+$")
    prefect_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    # Worker image for pipelines whose spec.worker.image is empty (the chart passes its own image).
    worker_image: str = Field(default="ghcr.io/eveflow/eveflow:0.1.0", pattern=r"^\S+$")
    worker_image_pull_policy: str = Field(default="IfNotPresent", pattern=r"^(Always|IfNotPresent|Never)$")
    # One port for /metrics (Prometheus) and one for kopf's liveness probe (/healthz).
    metrics_port: int = Field(default=9090, ge=0, le=65_535)  # 0: no metrics server
    health_port: int = Field(default=8081, ge=0, le=65_535)  # 0: no liveness endpoint
    # Delete: how many times to retry removing Prefect objects before giving up and releasing
    # the finalizer (with a Warning event), and the backoff between those tries.
    finalizer_max_retries: int = Field(default=5, ge=0, le=100)
    retry_backoff_seconds: float = Field(default=10.0, ge=0.1, le=3_600)
    # Prefect syncs running at once (a burst of new pipelines must not overload the Prefect API).
    # Measured against one Prefect server (bench/prefect_sync.py --sweep 4,8,16,32): the same
    # pipelines per second and server CPU per pipeline at each; its one process is the limit, and
    # more syncs at once only make each wait longer there.
    max_concurrent_syncs: int = Field(default=8, ge=1, le=256)
    # Without peering (one replica, no leader election); the chart runs one replica.
    standalone: bool = True
    field_manager: str = Field(default="eveflow-operator", pattern=DNS_LABEL)

    # -- The tenant boundary (docs/operations.md, "Running eveflow for several teams") --------
    # The chart's fixed ClusterRole holding the worker's rules; the operator only binds it, per
    # jobs namespace, with a RoleBinding (it holds `bind` on this one ClusterRole).
    worker_cluster_role: str = Field(default="eveflow-worker", pattern=r"^[a-z0-9]([-a-z0-9.:]*[a-z0-9])?$",
                                     max_length=253)
    # Namespaces any pipeline may send its flow-run Jobs to (spec.workPool.kubernetes.namespace).
    # Others only when labelled jobs.eveflow.dev/<pipeline namespace>=true; the pipeline's own always.
    allowed_jobs_namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Registries (or registry/path prefixes) worker images may come from; empty: any.
    allowed_image_registries: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Send Prefect credentials over plain http to any host (default: https, or http only to an
    # in-cluster Service name or loopback).
    allow_plain_http_credentials: bool = False
    # "<namespace>/<name>" of the chart's own Prefect credentials Secret: usable without the
    # eveflow.dev/prefect-credentials label (every other one needs it).
    prefect_credentials_secret: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/[-.a-z0-9]+)?$")

    @field_validator("namespaces", "allowed_jobs_namespaces", "allowed_image_registries", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("prefect_api_url")
    @classmethod
    def _no_credentials_in_url(cls, url: str) -> str:
        # The operator copies this URL into every worker Deployment's env, in plain text.
        if has_url_credentials(url):
            # load_settings() puts the variable's name in front; the URL is never echoed.
            raise ValueError(
                "credentials in the URL ('user:password@' before the host) are not allowed: the operator "
                "copies it into every worker Deployment. Remove them from the chart value prefect.apiUrl "
                "and put them in a Secret (chart values prefect.auth.existingSecret with keys auth-string / "
                "api-key, or prefect.auth.authString / apiKey) that pipelines reference in "
                "spec.prefect.authStringSecretRef / apiKeySecretRef"
            )
        return url

    @model_validator(mode="after")
    def _check_namespaces(self) -> OperatorSettings:
        for var, names in (("NAMESPACES", self.namespaces), ("ALLOWED_JOBS_NAMESPACES", self.allowed_jobs_namespaces)):
            bad = [n for n in names if not is_dns_label(n)]
            if bad:
                raise ValueError(f"{ENV_PREFIX}{var}: {bad} are not namespace names")
        return self

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def load_settings() -> OperatorSettings:
    """Read the environment now (call once, at startup).

    Bad values raise ``ConfigError``: one line naming each bad variable, never echoing a value.
    """
    try:
        return OperatorSettings()
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: ErrorDetails) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a model-level check names its variables itself
        return message
    return f"{ENV_PREFIX}{str(error['loc'][0]).upper()}: {message}"

"""What the Prefect sync library takes and returns; shared by the CLI, the operator and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field

from eveflow_etl.errors import PrefectError
from eveflow_etl.spec import RunSummary


@dataclass(frozen=True)
class PrefectConnection:
    """Where the Prefect API is and how to authenticate. Credentials never appear in repr/logs."""

    api_url: str
    api_key: str | None = field(default=None, repr=False)  # Prefect Cloud: bearer token
    auth_string: str | None = field(default=None, repr=False)  # self-hosted basic auth "user:pass"

    def describe(self) -> str:
        """Safe to log: the URL and which kind of credential is in use, never its value."""
        auth = "api key" if self.api_key else "basic auth" if self.auth_string else "no auth"
        return f"{self.api_url} ({auth})"


@dataclass
class SyncResult:
    """What one sync did and what it observed. ``writes == 0`` when everything was in sync."""

    work_pool_name: str
    work_pool_id: str | None = None
    deployment_ids: dict[str, str] = field(default_factory=dict)  # deployment name -> id
    schedule_ids: dict[str, str] = field(default_factory=dict)  # schedule slug -> id
    actions: list[str] = field(default_factory=list)  # human-readable, e.g. "created work pool x"
    writes: int = 0  # POST/PATCH/DELETE calls made (reads excluded)
    spec_hash: str | None = None
    paused: bool = False
    last_run: RunSummary | None = None
    next_run: RunSummary | None = None


@dataclass
class DeleteResult:
    actions: list[str] = field(default_factory=list)
    deleted_deployments: list[str] = field(default_factory=list)
    deleted_work_pool: bool = False
    kept_work_pool_reason: str | None = None


class PrefectUnavailable(PrefectError):
    """The API could not be reached or answered 5xx: retry later with backoff."""


class PrefectAuthError(PrefectError):
    """401/403: the API key or auth string was refused; retrying will not help."""


class PrefectRejected(PrefectError):
    """4xx other than auth: the request (so the spec) is wrong; the message says what to fix."""


class PrefectConflict(PrefectRejected):
    """409: the object was created concurrently (e.g. two pipelines sharing a new pool)."""

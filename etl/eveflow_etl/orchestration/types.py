"""What the Prefect sync library takes and returns; shared by the CLI, the operator and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from eveflow_etl.errors import PrefectError
from eveflow_etl.spec import RunSummary


def redact_url(url: str) -> str:
    """``url`` safe to log or store: a ``user:password@`` becomes ``***@``, every query value and
    any fragment ``***`` (tokens ride there too); scheme, host, port and path stay readable."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: nothing of it can be shown safely
        return "<unparsable URL>"
    if not parts.netloc:  # no scheme: urlsplit leaves "user:pw@host/api" in the path
        _, at, tail = url.rpartition("@")
        return f"***@{tail}" if at else url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{key}=***" if sep else "***"
        for key, sep, _ in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, "***" if parts.fragment else ""))


@dataclass(frozen=True)
class PrefectConnection:
    """Where the Prefect API is and how to authenticate. Credentials never appear in repr/logs:
    messages, logs and status show :attr:`safe_url`, never ``api_url`` (it may carry a password)."""

    api_url: str
    api_key: str | None = field(default=None, repr=False)  # Prefect Cloud: bearer token
    auth_string: str | None = field(default=None, repr=False)  # self-hosted basic auth "user:pass"
    # Whole time of one API call (the operator's prefectTimeoutSeconds); None: the client default.
    timeout_seconds: float | None = None

    @property
    def safe_url(self) -> str:
        return redact_url(self.api_url)

    def describe(self) -> str:
        """Safe to log: the URL and which kind of credential is in use, never its value."""
        auth = "api key" if self.api_key else "basic auth" if self.auth_string else "no auth"
        return f"{self.safe_url} ({auth})"

    def __repr__(self) -> str:
        return f"PrefectConnection(api_url={self.safe_url!r})"


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

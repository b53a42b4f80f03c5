"""Every setting of the ETL side, read from the environment in this one place.

Variables use the ``EVEFLOW_`` prefix (``EVEFLOW_ESI_BASE_URL`` …). CLI options override them by
building ``EtlSettings(**overrides)``; nothing else in ``eveflow_etl`` reads ``os.environ`` for
its own configuration (destination profiles read the standard ``PG*`` / ``SNOWFLAKE_POSTGRES_*``
variables in ``destinations.py`` because those names belong to libpq and the reference project).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path

from pydantic import Field, HttpUrl, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eveflow_etl import __version__


def default_data_dir() -> Path:
    return Path.home() / ".eveflow"


class EtlSettings(BaseSettings):
    """Settings of the ETL engine (sources, ESI client, loader)."""

    # An empty variable means "use the default", as an unset one: a docker pool passes the
    # worker's settings to flow-run containers by reference (``{{ $EVEFLOW_… }}``), and a setting
    # the worker does not have arrives empty. Values passed in code (CLI options) are still checked.
    model_config = SettingsConfigDict(env_prefix="EVEFLOW_", extra="ignore", env_ignore_empty=True)

    # Where local state lives: ESI cache, the embedded PostgreSQL, the demo's Prefect home.
    data_dir: Path = Field(default_factory=default_data_dir)

    # ESI's routes are unversioned; a ``…/latest`` base still works for users who pin it.
    esi_base_url: HttpUrl = HttpUrl("https://esi.evetech.net")
    # Sent as X-Compatibility-Date on every ESI request: the API behaviour this code was written
    # and tested for (no header would mean ESI's oldest). Pinned, moved on purpose with the code.
    esi_compatibility_date: dt.date = dt.date(2025, 8, 26)
    mokaam_base_url: HttpUrl = HttpUrl("https://mokaam.dk")
    everef_base_url: HttpUrl = HttpUrl("https://data.everef.net")
    # ESI asks every client to name itself and give a contact.
    contact: str = "ops@example.invalid"
    # Requests per second the client allows itself (ESI asks for at most ~5 req/s for history).
    esi_rate_per_second: float = Field(default=5.0, gt=0, le=100)
    esi_max_concurrency: int = Field(default=4, ge=1, le=64)
    esi_max_retries: int = Field(default=5, ge=0, le=20)
    esi_timeout_seconds: float = Field(default=30.0, gt=0)
    # Below this many remaining errors in the window the client slows down.
    esi_error_limit_floor: int = Field(default=20, ge=0)
    # First retry delay; doubles each attempt, with jitter (tests set it small).
    esi_backoff_seconds: float = Field(default=1.0, ge=0)
    # Mokaam answers 403 when it rate-limits; the reference project backed off from 10 s.
    mokaam_backoff_seconds: float = Field(default=10.0, ge=0)
    # Pulls of one region's order book before giving up when ESI keeps rebuilding it mid-pull
    # (pages of two builds would close orders that only moved between pages).
    esi_orders_snapshot_attempts: int = Field(default=3, ge=1, le=10)
    # Bytes the ESI HTTP cache (``cache_dir/http``: bodies kept to revalidate with a 304) may
    # hold; least recently used entries go first. The Forge's order book is ~100 MB and ESI
    # history ~40 kB a type. The pull in progress may overshoot it by its own pages until it ends.
    esi_cache_max_bytes: int = Field(default=512 * 2**20, ge=1)

    # Pages of one region's order book a server may announce (X-Pages); The Forge has ~400.
    esi_orders_max_pages: int = Field(default=2000, ge=1)
    # Share of a region's open orders one snapshot may close; more fails the run with nothing
    # changed (a bad pull, not a market). 1.0 turns the guard off.
    orders_max_close_share: float = Field(default=0.5, gt=0, le=1)
    # Bytes one HTTP response body may hold (an ESI page is ~300 kB, Mokaam's region ~30 MB).
    http_max_body_bytes: int = Field(default=256 * 2**20, ge=1024)
    # Longest wait a server may ask for (Retry-After, X-ESI-Error-Limit-Reset); more fails the
    # request with a clear error instead of sleeping for a day.
    http_max_wait_seconds: float = Field(default=300.0, gt=0)
    # EVE Ref daily file: bytes downloaded, and bytes once decompressed (a bz2 bomb stops here).
    everef_max_download_bytes: int = Field(default=256 * 2**20, ge=1024)
    everef_max_decompressed_bytes: int = Field(default=2 * 2**30, ge=1024)

    # Every PostgreSQL session: statements, lock waits and idle transactions are bounded, and
    # TCP keepalives notice a dead peer (0 turns a timeout off).
    pg_statement_timeout_seconds: float = Field(default=900.0, ge=0)
    pg_lock_timeout_seconds: float = Field(default=60.0, ge=0)
    pg_idle_in_transaction_timeout_seconds: float = Field(default=300.0, ge=0)
    pg_keepalives_idle_seconds: int = Field(default=30, ge=1)

    # Rows per chunk streamed from a source through validation into Postgres.
    chunk_rows: int = Field(default=50_000, ge=100, le=2_000_000)

    # EVE Ref daily files kept under ``cache_dir/everef`` to revalidate with a 304 instead of
    # downloading again; least recently used files go first past this many bytes (0: no cache).
    # A real day is under 1 MB compressed, so the default holds well over a year.
    everef_cache_max_bytes: int = Field(default=512 * 2**20, ge=0)

    @field_validator("esi_compatibility_date")
    @classmethod
    def _compat_not_future(cls, value: dt.date) -> dt.date:
        # The API's date turns at 11:00 UTC; ESI refuses a later one.
        api_today = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=11)).date()
        if value > api_today:
            raise ValueError(f"EVEFLOW_ESI_COMPATIBILITY_DATE {value.isoformat()} is in the future for ESI "
                             f"(its date is {api_today.isoformat()}); use a date ESI has reached")
        return value

    @field_validator("contact")
    @classmethod
    def _contact_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("EVEFLOW_CONTACT must name a contact (e-mail or URL) for the User-Agent")
        return value.strip()

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def user_agent(self) -> str:
        return f"eveflow/{__version__} (+{self.contact})"


@lru_cache(maxsize=1)
def load_settings() -> EtlSettings:
    """The process-wide settings, read once. Tests build ``EtlSettings(...)`` directly."""
    return EtlSettings()

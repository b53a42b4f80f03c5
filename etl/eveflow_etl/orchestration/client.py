"""The one HTTP client the sync library uses: auth headers, write counting, error mapping.

Plain httpx rather than Prefect's ``PrefectClient`` so that exactly what is sent is under our
control (no implicit upserts, no global settings) and every POST/PATCH/DELETE is counted.
Errors are mapped here and only here:

- connection refused / reset / timeout, 5xx → :class:`PrefectUnavailable` (retry later);
- 401 / 403 → :class:`PrefectAuthError` ("Prefect refused the API key for <url>");
- any other 4xx → :class:`PrefectRejected` with Prefect's ``detail``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import re
import ssl
import unicodedata
from typing import Any

import httpx

from eveflow_etl.orchestration.types import (
    PrefectAuthError,
    PrefectConflict,
    PrefectConnection,
    PrefectRejected,
    PrefectUnavailable,
    redact_url,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_RETRIES = 3
_RETRY_STATUS = {429, 502, 503}
_BACKOFF_SECONDS = 0.5


def basic_auth_header(auth_string: str) -> str:
    """The ``Authorization`` value for a server with basic auth (``auth_string``: 'user:password')."""
    return "Basic " + base64.b64encode(auth_string.encode()).decode()


def auth_headers(conn: PrefectConnection) -> dict[str, str]:
    """``Authorization`` for Cloud (bearer key) or a server with basic auth; empty otherwise."""
    if conn.api_key:
        return {"Authorization": f"Bearer {conn.api_key}"}
    if conn.auth_string:
        return {"Authorization": basic_auth_header(conn.auth_string)}
    return {}


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One TLS context for every PrefectApi of the process, made as httpx makes its default one
    (certifi's CAs, SSL_CERT_FILE/SSL_CERT_DIR honoured). httpx parses the CA bundle again for
    each client: ~19 ms of CPU and memory glibc rarely returns, and the operator makes a client per
    sync and per autoscaling poll (1,000 pipelines: ~20 s of CPU, and RSS growth under load)."""
    return httpx.create_ssl_context()


class PrefectApi:
    """An async client of one Prefect API (server ``…/api`` or a Cloud workspace URL).

    ``writes`` counts POST/PATCH/PUT/DELETE calls made, except the read-only ``…/filter`` /
    ``…/count`` POSTs, which go through :meth:`query`.
    """

    def __init__(self, conn: PrefectConnection, *, timeout: httpx.Timeout | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.conn = conn
        self.writes = 0
        if timeout is None:
            seconds = conn.timeout_seconds
            timeout = DEFAULT_TIMEOUT if seconds is None else httpx.Timeout(seconds, connect=min(5.0, seconds))
        self._http = httpx.AsyncClient(
            base_url=conn.api_url.rstrip("/") + "/",
            verify=shared_tls_context(),
            headers={**auth_headers(conn), "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> PrefectApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- verbs --------------------------------------------------------------------------------
    async def get(self, path: str, *, missing_ok: bool = False) -> Any:
        """GET; ``None`` for a 404 when ``missing_ok``."""
        return await self._request("GET", path, missing_ok=missing_ok)

    async def query(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """A read-only POST (``…/filter``, ``…/count``): not counted as a write."""
        return await self._request("POST", path, json_body=body or {})

    async def write(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                    missing_ok: bool = False) -> Any:
        """POST/PATCH/DELETE, counted in :attr:`writes` (every attempt, also when it fails)."""
        return await self._request(method, path, json_body=body, missing_ok=missing_ok, count=True)

    # -- the one place errors are mapped -------------------------------------------------------
    async def _request(self, method: str, path: str, *, json_body: Any = None,
                       missing_ok: bool = False, count: bool = False) -> Any:
        where = self.conn.safe_url
        try:
            for attempt in range(_RETRIES + 1):
                # Retried: refused connections and 429/502/503 (SQLite busy, a restarting server);
                # the request did not take effect. Other failures may have, so they are not.
                self.writes += count
                try:
                    response = await self._http.request(
                        method, path.lstrip("/"), content=None if json_body is None else json.dumps(json_body),
                        headers={"Content-Type": "application/json"} if json_body is not None else None,
                    )
                except httpx.ConnectError:
                    if attempt == _RETRIES:
                        raise
                else:
                    if response.status_code not in _RETRY_STATUS or attempt == _RETRIES:
                        break
                await asyncio.sleep(_BACKOFF_SECONDS * 2**attempt)
        except httpx.TimeoutException:
            raise PrefectUnavailable(f"Prefect API at {where} did not answer in time ({method} {path})") from None
        except httpx.HTTPError as exc:
            # httpx quotes the request URL in some errors: never the raw one (it may hold a password).
            detail = str(exc).replace(self.conn.api_url, where) if str(exc) else "no answer"
            raise PrefectUnavailable(
                f"Prefect API at {where} is unreachable ({type(exc).__name__}: {_redact_urls(detail)}); "
                "check the URL and that the server is running"
            ) from None
        status = response.status_code
        if status == 404 and missing_ok:
            return None
        if status in (401, 403):
            what = "the API key" if self.conn.api_key else "the auth string" if self.conn.auth_string else "the request (no credentials given)"
            hint = (
                "check PREFECT_API_KEY / spec.prefect.apiKeySecretRef" if self.conn.api_key
                else "check PREFECT_API_AUTH_STRING / spec.prefect.authStringSecretRef"
            )
            raise PrefectAuthError(f"Prefect refused {what} for {where} (HTTP {status}); {hint}")
        if status >= 500:
            raise PrefectUnavailable(f"Prefect API at {where} failed with HTTP {status} on {method} {path}: {_detail(response)}")
        if 300 <= status < 400:  # a wrong path; Prefect's routes do not redirect
            raise PrefectRejected(f"Prefect answered {method} {path} with a redirect (HTTP {status}) to "
                                  f"{excerpt(_redact_urls(response.headers.get('location') or ''), 100)}: is {where} the API URL?")
        if status == 409:
            raise PrefectConflict(f"Prefect answered {method} {path} with a conflict (HTTP 409): {_detail(response)}")
        if status >= 400:
            raise PrefectRejected(f"Prefect rejected {method} {path} (HTTP {status}): {_detail(response)}")
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise PrefectUnavailable(f"Prefect API at {where} answered {method} {path} with something that is not JSON "
                                     "(is the URL a Prefect API? a server's ends in /api)") from None


EXCERPT_CHARS = 200


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` safe to put in a status, an Event or a log line: control and format characters
    (newlines, ANSI escapes, bidi overrides) become spaces, runs of spaces one, at most ``limit``
    characters. What a Prefect API answers is not trusted: the URL is the pipeline author's."""
    cleaned = " ".join("".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                               for c in text[:limit * 4]).split())
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 1] + "…"


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return excerpt(response.text)
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("exception_detail") or body.get("exception_message") or body
        if isinstance(detail, list):  # FastAPI validation errors
            return excerpt("; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}" if isinstance(item, dict) else str(item)
                for item in detail[:20]
            ))
        return excerpt(str(detail))
    return excerpt(str(body))


def _redact_urls(text: str) -> str:
    """Every URL in ``text`` through :func:`redact_url` (credentials and query values hidden)."""
    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+", lambda m: redact_url(m.group(0)), text)

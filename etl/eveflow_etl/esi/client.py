"""A thread-safe HTTP client for ESI (and the other market sources) that behaves the way ESI asks.

Per request: served from the disk cache while ``Expires`` has not passed (no request at all);
otherwise sent with ``If-None-Match`` (a 304 serves the cached body); every request passes the
error-limit gate, the token pacer and our own rate budget, with at most ``esi_max_concurrency``
in flight. 5xx, timeouts, dropped connections and truncated bodies are retried with exponential
backoff and jitter up to ``esi_max_retries``; 420 and 429 wait as told and do not use up retries.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from eveflow_etl.errors import SourceError
from eveflow_etl.esi.bounded import TooLarge, TooSlow, read_body
from eveflow_etl.esi.cache import CacheEntry, DiskCache
from eveflow_etl.esi.ratelimit import ErrorLimitGate, RateBudget, TokenPacer, route_key
from eveflow_etl.esi.response import ClientStats, EsiResponse, expires_of, pages_of
from eveflow_etl.settings import EtlSettings

log = logging.getLogger(__name__)

# 420/429 waits are bounded too, so a server that never lets us through still ends the run.
_MAX_LIMIT_WAITS = 50


class EsiRequestError(SourceError):
    """A request failed for good: retries used up, or the service could not be reached."""

    def __init__(self, message: str, *, url: str, status: int | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.url, self.status, self.attempts = url, status, attempts


class _Transient(Exception):
    """A failure worth retrying: timeout, dropped connection, truncated body."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.unreachable = reason, unreachable


def _reason(exc: BaseException) -> tuple[str, bool]:
    """A short reason for a transport failure, and whether the host is unreachable."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__ or (cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None)
    text = " ".join(str(c) for c in chain)
    if any(isinstance(c, ConnectionRefusedError) for c in chain) or "refused" in text.lower():
        return "connection refused", True
    if "Failed to resolve" in text or "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text \
            or "Temporary failure in name resolution" in text:
        return "host name not found", True
    if isinstance(exc, requests.Timeout):
        return "timed out", False
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "truncated body (connection closed early)", False
    if isinstance(exc, requests.ConnectionError):
        return "connection failed", True
    return type(exc).__name__, False


class EsiClient:
    """One client per run, shared by all threads. ``client.stats`` counts what happened."""

    def __init__(self, settings: EtlSettings, *, session: requests.Session | None = None,
                 cache: DiskCache | None = None) -> None:
        self.settings = settings
        self.cache = cache or DiskCache(settings.cache_dir / "http", settings.esi_cache_max_bytes)
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=settings.esi_max_concurrency * 2, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = settings.user_agent
        self.session.headers["Accept"] = "application/json"
        self.stats = ClientStats()
        self.errors = ErrorLimitGate(settings.esi_error_limit_floor, max_wait=settings.http_max_wait_seconds)
        self.pacer = TokenPacer(max_wait=settings.http_max_wait_seconds)
        self.budget = RateBudget(settings.esi_rate_per_second)
        self._slots = threading.BoundedSemaphore(settings.esi_max_concurrency)
        self._esi_base = str(settings.esi_base_url).rstrip("/") + "/"
        self._compat = {"X-Compatibility-Date": settings.esi_compatibility_date.isoformat()}
        self._services = [
            (str(settings.esi_base_url).rstrip("/"), "ESI"),
            (str(settings.mokaam_base_url).rstrip("/"), "Mokaam"),
            (str(settings.everef_base_url).rstrip("/"), "EVE Ref"),
        ]

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> EsiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def service_of(self, url: str, service: str | None = None) -> tuple[str, str]:
        """(name, base URL) of the service a URL belongs to, for error messages."""
        for base, name in sorted(self._services, key=lambda s: -len(s[0])):
            if url.startswith(base) and service in (None, name):
                return name, base
        parts = urlsplit(url)
        return service or parts.netloc, f"{parts.scheme}://{parts.netloc}"

    # --- public ----------------------------------------------------------------------------
    def get(self, url: str, params: Mapping[str, Any] | None = None, *, expect_json: bool = True,
            retry_statuses: tuple[int, ...] = (), backoff: float | None = None,
            use_cache: bool = True, service: str | None = None, revalidate: bool = False) -> EsiResponse:
        """GET with cache, limits and retries. 2xx/304 come back as an :class:`EsiResponse`
        (304 with the cached body); 4xx other than 420/429 come back too for the caller to judge;
        everything else that will not succeed raises :class:`EsiRequestError` (``service`` names
        the source in its message; default: guessed from the base URLs in the settings).
        ``revalidate`` asks the server even before ``Expires`` (with ``If-None-Match``): for a
        body known to belong to a build the server has since replaced."""
        full_url = requests.Request("GET", url, params=params).prepare().url or url
        entry = self.cache.load(full_url) if use_cache else None
        if entry is not None and not revalidate and entry.fresh(time.time()):
            self.stats.add(cache_hits=1)
            return EsiResponse(full_url, 200, entry.body, {}, from_cache=True, pages=entry.pages,
                               last_modified=entry.last_modified)
        # ``backoff`` is for ``retry_statuses`` (Mokaam's 403 wants longer pauses than a 5xx).
        base_delay = self.settings.esi_backoff_seconds if backoff is None else backoff
        failures = limit_waits = 0
        while True:
            try:
                resp = self._send(full_url, entry, expect_json)
            except _Transient as exc:
                self.stats.add(transport_errors=1)
                if failures >= self.settings.esi_max_retries:
                    raise self._give_up(full_url, None, failures + 1, exc.reason, exc.unreachable, service) from None
                failures += 1
                self._backoff(self.settings.esi_backoff_seconds, failures, full_url, exc.reason)
                continue
            status = resp.status_code
            if status in (420, 429, 503) or status in retry_statuses:
                self._refuse_long_wait(full_url, status, resp.headers, service)
            if status in (420, 429):
                limit_waits += 1
                if limit_waits > _MAX_LIMIT_WAITS:
                    raise self._give_up(full_url, status, failures + limit_waits, f"HTTP {status}", False, service)
                continue  # the gate / pacer now hold everyone back until the reset
            if status == 304 and entry is not None:
                entry.expires = expires_of(resp.headers)
                entry.etag = resp.headers.get("ETag", entry.etag)
                entry.pages = pages_of(resp.headers) or entry.pages
                entry.last_modified = resp.headers.get("Last-Modified", entry.last_modified)
                self.cache.touch(entry)
                return EsiResponse(full_url, 200, entry.body, resp.headers, pages=entry.pages,
                                   last_modified=entry.last_modified)
            if status >= 500 or status in retry_statuses or (status == 304 and entry is None):
                if failures >= self.settings.esi_max_retries:
                    raise self._give_up(full_url, status, failures + 1, f"HTTP {status}", False, service)
                failures += 1
                retry_after = resp.headers.get("Retry-After")
                delay = float(retry_after) if retry_after and retry_after.isascii() and retry_after.isdigit() else None
                if delay is not None:
                    delay = min(delay, self.settings.http_max_wait_seconds)
                self._backoff(base_delay if status in retry_statuses else self.settings.esi_backoff_seconds,
                              failures, full_url, f"HTTP {status}", delay)
                continue
            out = EsiResponse(full_url, status, resp.content, resp.headers, pages=pages_of(resp.headers),
                              last_modified=resp.headers.get("Last-Modified"),
                              _data=getattr(resp, "_eveflow_json", None))
            if status == 200 and use_cache and ("ETag" in resp.headers or "Expires" in resp.headers):
                self.cache.store(CacheEntry(full_url, resp.headers.get("ETag"), expires_of(resp.headers),
                                            resp.headers.get("Last-Modified"), out.pages, resp.content))
            return out

    @contextmanager
    def stream(self, url: str, *, service: str | None = None,
               headers: Mapping[str, str] | None = None) -> Iterator[requests.Response]:
        """A streamed GET (large files): connect and status retried like :meth:`get`; the body
        is the caller's to read from ``response.raw``. Non-2xx statuses that are not retried
        come back unread (so does a 304 to conditional ``headers`` the caller sent)."""
        failures = 0
        while True:
            try:
                resp = self._request(url, headers or {}, stream=True)
            except _Transient as exc:
                if failures >= self.settings.esi_max_retries:
                    raise self._give_up(url, None, failures + 1, exc.reason, exc.unreachable, service) from None
                failures += 1
                self._backoff(self.settings.esi_backoff_seconds, failures, url, exc.reason)
                continue
            if resp.status_code >= 500 and failures < self.settings.esi_max_retries:
                resp.close()
                failures += 1
                self._backoff(self.settings.esi_backoff_seconds, failures, url, f"HTTP {resp.status_code}")
                continue
            if resp.status_code >= 500:
                resp.close()
                raise self._give_up(url, resp.status_code, failures + 1, f"HTTP {resp.status_code}", False, service)
            try:
                yield resp
            finally:
                resp.close()
            return

    # --- internals -------------------------------------------------------------------------
    def _refuse_long_wait(self, url: str, status: int, headers: Mapping[str, str], service: str | None) -> None:
        """A server asking us to wait longer than ``http_max_wait_seconds`` ends the request
        now, with the figure, rather than sleeping through the run (Retry-After: 86400)."""
        limit = self.settings.http_max_wait_seconds
        for name in ("Retry-After", "X-ESI-Error-Limit-Reset"):
            value = headers.get(name)
            try:
                seconds = float(value) if value is not None else None
            except ValueError:
                seconds = None
            if name == "X-ESI-Error-Limit-Reset" and status != 420:
                continue
            if seconds is not None and seconds > limit:
                name_, base = self.service_of(url, service)
                raise EsiRequestError(
                    f"{name_} answered HTTP {status} asking to wait {name}: {value:.40} s, more than "
                    f"EVEFLOW_HTTP_MAX_WAIT_SECONDS ({limit:g}); giving up on {url} (run again later)",
                    url=url, status=status)

    def _send(self, url: str, entry: CacheEntry | None, expect_json: bool) -> requests.Response:
        headers = {"If-None-Match": entry.etag} if entry is not None and entry.etag else {}
        resp = self._request(url, headers, stream=False)
        status = resp.status_code
        if status == 200:
            self.stats.add(body_bytes=len(resp.content))
            expected = resp.headers.get("Content-Length")
            if expected and expected.isascii() and expected.isdigit() and "Content-Encoding" not in resp.headers \
                    and int(expected) != len(resp.content):
                raise _Transient(f"truncated body ({len(resp.content)} of {expected} bytes)")
            if expect_json:
                try:
                    resp._eveflow_json = json.loads(resp.content)  # type: ignore[attr-defined]
                except ValueError:
                    raise _Transient("truncated body (invalid JSON)") from None
        counts = {304: "not_modified", 420: "error_limited", 429: "rate_limited"}
        if status in counts:
            self.stats.add(**{counts[status]: 1})
        elif status >= 500:
            self.stats.add(server_errors=1)
        elif status >= 400:
            self.stats.add(client_errors=1)
        return resp

    def _request(self, url: str, headers: Mapping[str, str], *, stream: bool) -> requests.Response:
        route = route_key(urlsplit(url).path)
        with self._slots:
            self.errors.wait()
            ticket = self.pacer.acquire(route)
            status: int | None = None
            resp_headers: Mapping[str, str] = {}
            try:
                self.budget.acquire()
                self.stats.add(requests=1)
                # ``esi_timeout_seconds`` is the whole request's time (connect and every read),
                # not a per-read timeout a trickling server could stretch forever.
                total = self.settings.esi_timeout_seconds
                deadline = time.monotonic() + total
                try:
                    if url.startswith(self._esi_base):  # ESI only: not Mokaam or EVE Ref
                        headers = {**self._compat, **headers}
                    resp = self.session.get(url, headers=headers, timeout=total, stream=True)
                    if not stream:
                        # Read inside the slot, within the byte and time limits; truncation raises here.
                        resp._content = read_body(  # noqa: SLF001 - what ``resp.content`` returns
                            resp, max_bytes=self.settings.http_max_body_bytes, deadline=deadline,
                            what=f"the answer to {url}", setting="EVEFLOW_HTTP_MAX_BODY_BYTES")
                        resp.close()
                except TooLarge as exc:
                    resp.close()
                    raise EsiRequestError(str(exc), url=url) from None
                except TooSlow:
                    resp.close()
                    raise _Transient(f"timed out (total {total:g} s)") from None
                except requests.RequestException as exc:
                    reason, unreachable = _reason(exc)
                    raise _Transient(reason, unreachable=unreachable) from None
                status, resp_headers = resp.status_code, resp.headers
                self.errors.observe(status, resp_headers)
                return resp
            finally:
                self.pacer.settle(ticket, status, resp_headers)

    def _backoff(self, base: float, failures: int, url: str, reason: str, delay: float | None = None) -> None:
        self.stats.add(retries=1)
        if delay is None:
            delay = min(60.0, base * 2 ** (failures - 1)) * (0.5 + random.random())
        log.info("retrying %s in %.2fs (%s, attempt %d)", url, delay, reason, failures + 1)
        time.sleep(delay)

    def _give_up(self, url: str, status: int | None, attempts: int, reason: str, unreachable: bool,
                 service: str | None = None) -> EsiRequestError:
        name, base = self.service_of(url, service)
        if unreachable:
            return EsiRequestError(f"cannot reach {name} at {base}: {reason}", url=url, attempts=attempts)
        return EsiRequestError(f"{name} request {url} failed after {attempts} attempts: {reason}",
                               url=url, status=status, attempts=attempts)

"""A faithful local stand-in for ESI, Mokaam and EVE Ref, on one port (aiohttp).

Paths, JSON shapes and headers are the real ones:

- ESI unversioned (``esi_base_url = http://HOST:PORT``) and under ``/latest`` (a pinned old-style
  base); a future or malformed ``X-Compatibility-Date`` is refused with 400: market history, orders
  (``X-Pages``), types, prices; ``ETag``/``Expires``/``Last-Modified``, 304 on ``If-None-Match``,
  the error limit (``X-ESI-Error-Limit-*``, 420) and token buckets (``X-Ratelimit-*``, 429 +
  ``Retry-After``) really enforced.
- Mokaam ``/API/market/all?regionid=R``; EVE Ref ``/market-history/YYYY/market-history-DAY.csv.bz2``
  (bz2 CSV generated as it streams; 304 on ``If-None-Match`` / ``If-Modified-Since``) and
  ``/market-history/totals.json`` (rows per day); rewrites and faults via the ``everef_*`` config.
- Admin: ``POST /_admin/faults`` (a :class:`FaultRule` as JSON, or ``{"rules": [...]}``),
  ``DELETE /_admin/faults``, ``POST /_admin/config`` (change limits live), ``POST /_admin/drain``
  (another client used up a group's tokens), ``POST /_admin/tick`` (the market moves on: next
  order book version), ``GET /_admin/stats``, ``POST /_admin/reset``.

Start it in-process with :func:`serve_in_thread`, or ``eveflow dev esi-server``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web

from eveflow_etl.devservers import esi_data as data
from eveflow_etl.devservers import esi_everef
from eveflow_etl.devservers.esi_compat import HEADER as COMPAT_HEADER, compat_error
from eveflow_etl.devservers.esi_limits import FaultRule, token_cost

from eveflow_etl.devservers.esi_state import (  # noqa: F401  (re-exported: the server's public names)
    HISTORY_GROUP,
    HUB_REGIONS,
    ORDERS_GROUP,
    EsiServerConfig,
    EsiServerState,
    http_date,
    int_or_none,
)


class _Reply:
    def __init__(self, status: int, payload: object = None, *, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body if body is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.headers = headers or {}


def build_app(state: EsiServerState) -> web.Application:
    app = web.Application()
    h = _Handlers(state)
    # ESI's routes are unversioned now; ``/latest/…`` stays served for clients that pin it.
    for prefix, suffix in ((p, s) for p in ("/latest", "") for s in ("/", "")):
        app.router.add_get(prefix + "/markets/prices" + suffix, h.prices)
        app.router.add_get(prefix + r"/markets/{region:\d+}/history" + suffix, h.history)
        app.router.add_get(prefix + r"/markets/{region:\d+}/orders" + suffix, h.orders)
        app.router.add_get(prefix + r"/markets/{region:\d+}/types" + suffix, h.types)
    app.router.add_get("/API/market/all", h.mokaam_all)
    app.router.add_get(r"/market-history/{year:\d{4}}/market-history-{day}.csv.bz2", h.everef)
    app.router.add_get("/market-history/totals.json", h.everef_totals)
    app.router.add_post("/_admin/faults", h.add_faults)
    app.router.add_delete("/_admin/faults", h.clear_faults)
    app.router.add_post("/_admin/config", h.configure)
    app.router.add_post("/_admin/drain", h.drain)
    app.router.add_post("/_admin/tick", h.tick)
    app.router.add_get("/_admin/stats", h.stats)
    app.router.add_post("/_admin/reset", h.reset)
    return app


class _Handlers:
    def __init__(self, state: EsiServerState) -> None:
        self.s = state

    # --- ESI -------------------------------------------------------------------------------
    async def _esi(self, request: web.Request, group: str, build) -> web.StreamResponse:
        s = self.s
        s.stats.in_flight += 1
        s.stats.max_in_flight = max(s.stats.max_in_flight, s.stats.in_flight)
        try:
            return await self._esi_limited(request, group, build)
        finally:
            s.stats.in_flight -= 1

    async def _esi_limited(self, request: web.Request, group: str, build) -> web.StreamResponse:
        s = self.s
        region = int_or_none(request.match_info.get("region"))
        page = int_or_none(request.query.get("page", "1"))
        fault = s.match_fault(request.path, page, region)
        if fault and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault and fault.tick:
            s.rebuild(fault.tick_orders)
        now = mono = time.monotonic()
        bucket = s.buckets[group]
        if s.errors.blocked(now):
            reply = _Reply(420, {"error": "This software has exceeded the error limit for ESI. "
                                          "If you are a user, please contact the maintainer of this software."})
        elif fault and fault.status:
            reply = _Reply(fault.status, {"error": f"injected {fault.status}"})
            if fault.retry_after is not None:
                reply.headers["Retry-After"] = str(fault.retry_after)
        elif (refused := compat_error(request.headers.get(COMPAT_HEADER))) is not None:
            reply = _Reply(400, {"error": refused})
        else:
            reply = build()
            etag = reply.headers.get("ETag")
            if reply.status == 200 and etag and etag in request.headers.get("If-None-Match", ""):
                reply = _Reply(304, headers={k: v for k, v in reply.headers.items()})
            cost = token_cost(reply.status)
            if not bucket.try_spend(cost, mono):
                reply = _Reply(429, {"error": "Too many requests"},
                               headers={"Retry-After": str(bucket.retry_after(cost, mono))})
        s.errors.record(reply.status, now)
        reply.headers.update(s.errors.headers(now))
        reply.headers.update(bucket.headers(mono))
        return await self._send(request, reply, fault)

    async def _send(self, request: web.Request, reply: _Reply, fault: FaultRule | None) -> web.StreamResponse:
        s = self.s
        s.stats.requests += 1
        s.stats.by_status[reply.status] += 1
        s.stats.events.append((round(time.time(), 3), request.path_qs, reply.status))
        body = reply.body if reply.status != 304 else b""
        if reply.status < 300:
            s.stats.body_bytes += len(body)
        headers = dict(reply.headers)
        if body:
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        for name, value in ((fault.headers or {}) if fault else {}).items():
            headers.pop(name, None)
            if value is not None:
                headers[name] = value
        if fault and fault.body_bytes and body:
            body = body + b" " * max(0, fault.body_bytes - len(body))
            headers.pop("Content-Length", None)
        if fault and fault.truncate == "json" and body:
            body = body[: len(body) // 2]
        if fault and fault.trickle and body:
            resp = web.StreamResponse(status=reply.status, headers=headers)
            resp.content_length = len(body)
            await resp.prepare(request)
            step = -(-len(body) // 10)
            for start in range(0, len(body), step):
                await resp.write(body[start:start + step])
                await asyncio.sleep(fault.trickle)
            await resp.write_eof()
            return resp
        if fault and fault.truncate == "connection" and body:
            resp = web.StreamResponse(status=reply.status, headers=headers)
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            if request.transport is not None:
                request.transport.close()
            return resp
        return web.Response(status=reply.status, body=body, headers=headers)

    @staticmethod
    def _cacheable(payload: object, expires: float, last_modified: float, extra: dict | None = None) -> _Reply:
        body = json.dumps(payload).encode()
        headers = {
            "ETag": '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"',
            "Expires": http_date(expires),
            "Last-Modified": http_date(last_modified),
            "Cache-Control": "public",
        }
        headers.update(extra or {})
        return _Reply(200, body=body, headers=headers)

    async def history(self, request: web.Request) -> web.StreamResponse:
        region = int(request.match_info["region"])

        def build() -> _Reply:
            type_id = int_or_none(request.query.get("type_id"))
            if not data.is_market_region(region):
                return _Reply(400, {"error": "Invalid region_id: not a market region"})
            if type_id is None:
                return _Reply(400, {"error": "Missing required parameter type_id"})
            if type_id not in self.s._type_set:
                return _Reply(404, {"error": "Type not found!"})
            rows = data.history_json(self.s.config.seed, region, type_id, self.s.today(), self.s.config.history_days)
            expires = self.s.history_expires()
            return self._cacheable(rows, expires, expires - 86400)

        return await self._esi(request, HISTORY_GROUP, build)

    async def orders(self, request: web.Request) -> web.StreamResponse:
        region = int(request.match_info["region"])
        s = self.s

        def build() -> _Reply:
            page = int_or_none(request.query.get("page", "1"))
            pages = data.order_pages(s.config.orders_per_region)
            if not data.is_market_region(region):
                return _Reply(400, {"error": "Invalid region_id: not a market region"})
            if request.query.get("order_type", "all") not in ("all", "buy", "sell"):
                return _Reply(400, {"error": "order_type must be one of all, buy, sell"})
            if page is None or page < 1 or page > pages:
                return _Reply(404, {"error": "Requested page does not exist!"})
            rows = data.orders_page(s.config.seed, region, page, orders_per_region=s.config.orders_per_region,
                                    types=s.types, version=s.version,
                                    anchor=dt.datetime.fromtimestamp(s.version_started, dt.UTC))
            kind = request.query.get("order_type", "all")
            if kind != "all":
                rows = [r for r in rows if r["is_buy_order"] == (kind == "buy")]
            type_id = int_or_none(request.query.get("type_id"))
            if type_id is not None:
                rows = [r for r in rows if r["type_id"] == type_id]
            return self._cacheable(rows, s.orders_expires(), s.version_started,
                                   {"X-Pages": str(pages)})

        return await self._esi(request, ORDERS_GROUP, build)

    async def types(self, request: web.Request) -> web.StreamResponse:
        s = self.s

        def build() -> _Reply:
            page = int_or_none(request.query.get("page", "1")) or 0
            pages = max(1, -(-len(s.types) // data.TYPES_PER_PAGE))
            if page < 1 or page > pages:
                return _Reply(404, {"error": "Requested page does not exist!"})
            chunk = s.types[(page - 1) * data.TYPES_PER_PAGE: page * data.TYPES_PER_PAGE]
            return self._cacheable(chunk, time.time() + 600, s.version_started, {"X-Pages": str(pages)})

        return await self._esi(request, ORDERS_GROUP, build)

    async def prices(self, request: web.Request) -> web.StreamResponse:
        s = self.s

        def build() -> _Reply:
            rows = [{"type_id": t, "average_price": data.base_price(s.config.seed, t),
                     "adjusted_price": round(data.base_price(s.config.seed, t) * 0.98, 2)} for t in s.types]
            return self._cacheable(rows, time.time() + 3600, s.version_started)

        return await self._esi(request, ORDERS_GROUP, build)

    # --- Mokaam and EVE Ref ----------------------------------------------------------------
    async def mokaam_all(self, request: web.Request) -> web.StreamResponse:
        s = self.s
        region = int_or_none(request.query.get("regionid"))
        fault = s.match_fault(request.path, None, region)
        if fault and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault and fault.status:
            return await self._send(request, _Reply(fault.status, {"error": f"injected {fault.status}"}), fault)
        if region is None or not data.is_market_region(region):
            return await self._send(request, _Reply(400, {"error": "regionid must be a market region"}), fault)
        payload = data.mokaam_all(s.config.seed, region, s.types, s.today(), sentinels=s.config.mokaam_sentinels)
        return await self._send(request, _Reply(200, payload), fault)

    async def everef(self, request: web.Request) -> web.StreamResponse:
        return await esi_everef.serve_file(self, request)

    async def everef_totals(self, request: web.Request) -> web.StreamResponse:
        return await esi_everef.serve_totals(self, request)

    # --- admin -----------------------------------------------------------------------------
    async def add_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        rules = body.get("rules", [body]) if isinstance(body, dict) else body
        known = {f.name for f in dataclasses.fields(FaultRule)} - {"hits"}
        for rule in rules:
            unknown = set(rule) - known
            if unknown:
                return web.json_response({"error": f"unknown fault fields {sorted(unknown)}"}, status=400)
            self.s.faults.append(FaultRule(**rule))
        return web.json_response({"faults": len(self.s.faults)})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.s.faults.clear()
        return web.json_response({"faults": 0})

    async def configure(self, request: web.Request) -> web.Response:
        body = await request.json()
        cfg = self.s.config
        known = {f.name for f in dataclasses.fields(EsiServerConfig)}
        unknown = set(body) - known
        if unknown:
            return web.json_response({"error": f"unknown config fields {sorted(unknown)}"}, status=400)
        for key, value in body.items():
            setattr(cfg, key, tuple(value) if isinstance(value, list) else value)
        self.s.errors.limit, self.s.errors.window = cfg.error_limit, cfg.error_window_seconds
        for bucket in self.s.buckets.values():
            bucket.limit, bucket.window = cfg.rate_limit_tokens, cfg.rate_window_seconds
            bucket.tokens = min(bucket.tokens, float(bucket.limit))
        if "types_per_region" in body or "seed" in body:
            self.s.types = data.market_types(cfg.types_per_region, cfg.seed)
            self.s._type_set = set(self.s.types)
        return web.json_response(dataclasses.asdict(cfg), dumps=lambda o: json.dumps(o, default=str))

    async def drain(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        for group, bucket in self.s.buckets.items():
            if body.get("group") in (None, group):
                bucket.drain(time.monotonic())
        return web.json_response({"drained": True})

    async def tick(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.s.rebuild(body.get("orders_per_region"))
        return web.json_response({"version": self.s.version})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.s.snapshot())

    async def reset(self, request: web.Request) -> web.Response:
        self.s.reset()
        return web.json_response({"reset": True})


@dataclass
class EsiServer:
    """A running server: base URLs for the settings and an admin client."""

    url: str
    state: EsiServerState

    @property
    def esi_base_url(self) -> str:
        return self.url + "/latest"

    @property
    def mokaam_base_url(self) -> str:
        return self.url

    @property
    def everef_base_url(self) -> str:
        return self.url

    @property
    def admin(self):
        # Only the tests' admin client needs it: requests would add ~80 ms to every server start.
        from eveflow_etl.devservers.esi_admin import EsiAdmin

        return EsiAdmin(self.url)


@contextmanager
def serve_in_thread(config: EsiServerConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> Iterator[EsiServer]:
    """Run the server on its own event loop in a daemon thread; yields once it accepts requests."""
    state = EsiServerState(config or EsiServerConfig())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict = {}

    async def start() -> None:
        runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            box["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(box["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="esi-server", daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in box:
        raise box["error"]
    try:
        yield EsiServer(url=f"http://{host}:{box['port']}", state=state)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def serve_forever(config: EsiServerConfig, host: str, port: int) -> None:
    """Blocking run for ``eveflow dev esi-server``."""
    web.run_app(build_app(EsiServerState(config)), host=host, port=port, access_log=None, print=None)

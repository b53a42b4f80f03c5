"""The HTTP front: routing Kubernetes API paths onto the store, watches, request recording."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import traceback
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from . import discovery, openapi, protobuf, tables
from .errors import ApiError
from .resources import ResourceType
from .selectors import SelectorError, parse_fields, parse_labels
from .store import Store, WriteContext

_STOP = object()
_RECORD = web.RequestKey("record", dict)
_PATCH_TYPES = {"application/json-patch+json": "json", "application/merge-patch+json": "merge",
                "application/strategic-merge-patch+json": "strategic",
                "application/apply-patch+yaml": "apply", "application/apply-patch+json": "apply"}


@dataclass
class Route:
    """A parsed request path. `plural` is None for non-resource (discovery, /version) paths."""
    group: str = ""
    version: str = ""
    namespace: str = ""
    plural: str | None = None
    name: str = ""
    sub: str = ""
    watch: bool = False
    api: bool = False  # under /api or /apis


def parse_path(path: str) -> Route:
    segs = [s for s in path.split("/") if s]
    if not segs or segs[0] not in ("api", "apis"):
        return Route()
    if segs[0] == "api":
        group, rest = "", segs[1:]
    else:
        group, rest = (segs[1] if len(segs) > 1 else ""), segs[2:]
    if not rest:
        return Route(group=group, api=True)
    version, rest = rest[0], rest[1:]
    route = Route(group=group, version=version, api=True)
    if rest[:1] == ["watch"]:
        route.watch, rest = True, rest[1:]
    if len(rest) >= 3 and rest[0] == "namespaces" and not (
            group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
        route.namespace, rest = rest[1], rest[2:]
    if rest:
        route.plural = rest[0]
        route.name = rest[1] if len(rest) > 1 else ""
        route.sub = rest[2] if len(rest) > 2 else ""
    return route


def rbac_verb(method: str, route: Route, query) -> str:
    """The verb RBAC would check for this request."""
    if route.plural is None:
        return method.lower()
    if method in ("GET", "HEAD"):
        if route.watch or query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if route.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(
        method, ("delete" if route.name else "deletecollection") if method == "DELETE"
        else method.lower())


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(f'299 - "{w}"' for w in warnings)
    return web.Response(body=json.dumps(body).encode(), status=status,
                        content_type="application/json", headers=headers)


def _not_found_path() -> ApiError:
    return ApiError("NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})


class Emulator:
    """A Kubernetes API server emulator on aiohttp. Start with `await start()` in a loop."""

    def __init__(self, log_size: int = 20000):
        self.store = Store(log_size=log_size)
        self.requests: list[dict] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_shutdown.append(lambda _app: self._stop_watches())
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.store.loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def _stop_watches(self) -> None:
        self._stopping = True
        for w in list(self.store.watches):
            w.queue.put_nowait(_STOP)

    async def stop(self) -> None:
        await self._stop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- entry point --------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/_emulator"):
            return await self.admin(request)
        route = parse_path(request.path)
        record = self._record(request, route)
        request[_RECORD] = record
        injected = self._injected(request, route)
        if injected is not None:
            record["status"] = injected.status
            return injected
        try:
            resp = await self.dispatch(request, route)
        except ApiError as e:
            resp = _json(e.status(), e.code)
        except (SelectorError, ValueError, yaml.YAMLError) as e:
            resp = _json(ApiError("BadRequest", str(e)).status(), 400)
        except Exception as e:  # noqa: BLE001 -- an emulator bug: answer like the API would
            traceback.print_exc()
            resp = _json(ApiError("InternalError", f"emulator error: {e!r}").status(), 500)
        record["status"] = resp.status
        return resp

    def _injected(self, request: web.Request, route: Route) -> web.Response | None:
        """A fault from ``config["faults"]`` (fault matrix): each ``{"method", "resource",
        "sub", "status", "count"}`` answers the next ``count`` matching requests with ``status``
        (a Kubernetes Status body); ``"cut": true`` closes the connection without an answer."""
        for fault in self.store.config.get("faults") or []:
            if fault.get("count", 1) <= 0:
                continue
            if fault.get("method") and fault["method"] != request.method:
                continue
            if fault.get("resource") and fault["resource"] != route.plural:
                continue
            if "sub" in fault and (fault["sub"] or "") != (route.sub or ""):
                continue
            if fault.get("watch") is not None and bool(fault["watch"]) != (
                    route.watch or request.query.get("watch") in ("true", "1")):
                continue
            fault["count"] = fault.get("count", 1) - 1
            if fault.get("cut"):
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)
            code = int(fault.get("status", 500))
            reason = {409: "Conflict", 429: "TooManyRequests", 503: "ServiceUnavailable"}.get(code, "InternalError")
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": f"injected {code}", "reason": reason, "code": code}, code)
        return None

    def _record(self, request: web.Request, route: Route) -> dict:
        rec = {"time": time.time(), "method": request.method, "path": request.path,
               "query": request.query_string, "verb": rbac_verb(request.method, route, request.query),
               "group": route.group if route.plural else None,
               "version": route.version if route.plural else None,
               "resource": route.plural, "subresource": route.sub or None,
               "namespace": route.namespace or None, "name": route.name or None,
               "non_resource": route.plural is None,
               "user_agent": request.headers.get("User-Agent", ""), "status": None}
        self.requests.append(rec)
        return rec

    async def dispatch(self, request: web.Request, route: Route) -> web.StreamResponse:
        if route.plural is None:
            return self.non_resource(request, route)
        rt = self.store.registry.get(route.group, route.version, route.plural)
        if rt is None or (route.sub and not rt.has(route.sub)):
            raise _not_found_path()
        if route.namespace and not rt.namespaced:
            raise _not_found_path()
        q = request.query
        m = request.method
        ns = route.namespace
        if m == "GET" and (route.watch or q.get("watch") in ("true", "1")):
            return await self.watch(request, rt, route)
        if m == "GET":
            return self.read(request, rt, route)
        ctx = WriteContext(dry_run=bool(q.get("dryRun")), field_validation=q.get("fieldValidation", ""),
                           field_manager=q.get("fieldManager", ""), force=q.get("force") == "true")
        if m == "POST":
            body = await self._body(request)
            if route.sub == "token":
                return _json(self._token(body), 201)
            if route.name:
                raise ApiError("MethodNotAllowed", "the server does not allow this method on the "
                               "requested resource")
            obj = self.store.create(rt, ns, body, ctx)
            return _json(obj, 201, ctx.warnings)
        if m == "PUT":
            if not route.name:
                raise ApiError("MethodNotAllowed", "PUT needs an object name")
            obj = self.store.replace(rt, ns, route.name, await self._body(request), ctx,
                                     route.sub or None)
            return _json(obj, 200, ctx.warnings)
        if m == "PATCH":
            ptype = _PATCH_TYPES.get(request.content_type)
            if ptype is None:
                raise ApiError("UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted "
                               f"media types include: {', '.join(_PATCH_TYPES)}")
            if ptype == "apply" and not ctx.field_manager:
                raise ApiError("BadRequest", "PATCH /apply requests require a fieldManager")
            obj, created = self.store.patch(rt, ns, route.name, ptype, await self._body(request),
                                            ctx, route.sub or None)
            return _json(obj, 201 if created else 200, ctx.warnings)
        if m == "DELETE":
            opts = await self._body(request) if request.can_read_body else {}
            opts = opts if isinstance(opts, dict) else {}
            if q.get("propagationPolicy"):
                opts["propagationPolicy"] = q["propagationPolicy"]
            if route.name:
                obj = self.store.delete(rt, ns, route.name, opts, ctx)
                return _json(obj)
            items = self.store.delete_collection(rt, ns, parse_labels(q.get("labelSelector")),
                                                 parse_fields(q.get("fieldSelector")), opts, ctx)
            return _json({"kind": rt.list_kind, "apiVersion": rt.api_version,
                          "metadata": {"resourceVersion": str(self.store.rv)}, "items": items})
        raise ApiError("MethodNotAllowed", f"method {m} not allowed")

    # --- reads --------------------------------------------------------------------------------
    def read(self, request: web.Request, rt: ResourceType, route: Route) -> web.Response:
        q = request.query
        want_table = "as=Table" in request.headers.get("Accept", "")
        include = q.get("includeObject", "Metadata")
        if route.name:
            if route.sub == "log":
                self.store.get(rt, route.namespace, route.name)
                return web.Response(text="", content_type="text/plain")
            obj = self.store.get(rt, route.namespace, route.name)
            if route.sub == "scale":
                return _json(self.store.scale_of(rt, obj))
            if want_table:
                return _json(tables.render(rt, [obj], include, obj["metadata"]["resourceVersion"]))
            return _json(obj)
        items = self.store.list(rt, route.namespace, parse_labels(q.get("labelSelector")),
                                parse_fields(q.get("fieldSelector")))
        start = 0
        if q.get("continue"):
            try:
                start = int(json.loads(base64.urlsafe_b64decode(q["continue"]))["start"])
            except (ValueError, KeyError, TypeError):
                raise ApiError("BadRequest", "invalid continue token") from None
        items = items[start:]
        meta: dict = {"resourceVersion": str(self.store.rv)}
        limit = int(q.get("limit") or 0)
        if limit and len(items) > limit:
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"start": start + limit}).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        items = [self.store.out(rt, o) for o in items]
        if want_table:
            return _json(tables.render(rt, items, include, meta["resourceVersion"],
                                       meta.get("continue")))
        return _json({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
                      "items": items})

    async def watch(self, request: web.Request, rt: ResourceType, route: Route):
        q = request.query
        labels, fields = parse_labels(q.get("labelSelector")), parse_fields(q.get("fieldSelector"))
        timeout = float(q.get("timeoutSeconds") or 1800)
        initial = q.get("sendInitialEvents") == "true"
        want_table = "as=Table" in request.headers.get("Accept", "")
        include = q.get("includeObject", "Metadata")
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        try:
            first, w = self.store.watch(rt, route.namespace, q.get("resourceVersion"), initial,
                                        labels, fields)
        except ApiError as e:
            if e.code != 410:
                raise
            await resp.prepare(request)
            await resp.write(json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n")
            return resp
        snapshot_rv = str(self.store.rv)
        await resp.prepare(request)
        request[_RECORD]["status"] = 200

        async def send(etype: str, obj: dict) -> None:
            obj = self.store.out(rt, obj)
            if want_table:
                obj = tables.render(rt, [obj], include, obj["metadata"]["resourceVersion"])
            await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for etype, obj in first:
                await send(etype, obj)
            if initial:
                mark = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {
                    "resourceVersion": snapshot_rv,
                    "annotations": {"k8s.io/initial-events-end": "true"}}}
                await resp.write(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
            while not self._stopping:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(w.queue.get(), timeout=min(0.5, remaining))
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                if ev is _STOP:
                    break
                translated = w.translate(ev)
                if translated is not None:
                    await send(*translated)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.watches.discard(w)
        try:
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError, RuntimeError):
            pass
        return resp

    # --- bodies and odd endpoints -------------------------------------------------------------
    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return {}
        ctype = request.content_type
        if "protobuf" in ctype:
            return protobuf.decode(raw)
        if ctype == "application/apply-patch+yaml":
            return yaml.safe_load(raw)
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError("BadRequest", "the request body is not valid JSON") from None

    def _token(self, body: dict) -> dict:
        spec = (body or {}).get("spec") or {}
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {}, "spec": spec,
                "status": {"token": "emulator-token", "expirationTimestamp": "2099-01-01T00:00:00Z"}}

    def non_resource(self, request: web.Request, route: Route) -> web.Response:
        path = request.path.rstrip("/") or "/"
        reg = self.store.registry
        if path == "/version":
            return _json(discovery.VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            return _json(discovery.api_versions(request.host))
        if path == "/apis":
            return _json(discovery.api_groups(reg))
        if path == "/openapi/v3":
            return _json(openapi.root(reg))
        if path.startswith("/openapi/v3/"):
            sub = parse_path(path[len("/openapi/v3"):])
            doc = openapi.group_version(reg, sub.group, sub.version) if sub.version else None
            if doc is None:
                raise _not_found_path()
            return _json(doc)
        if route.api and not route.version:
            doc = discovery.api_group(reg, route.group)
        elif route.api:
            doc = discovery.resource_list(reg, route.group, route.version)
        else:
            doc = None
        if doc is None:
            raise _not_found_path()
        return _json(doc)

    # --- admin endpoints for tests ------------------------------------------------------------
    async def admin(self, request: web.Request) -> web.Response:
        what = request.path[len("/_emulator"):].strip("/")
        q = request.query
        if what == "requests":
            if request.method == "DELETE":
                self.requests.clear()
                return _json({"cleared": True})
            since = float(q.get("since") or 0)
            return _json([r for r in self.requests if r["time"] >= since])
        if what == "objects":
            return _json(self.store.dump(q.get("group"), q.get("resource"), q.get("namespace")))
        if what == "state":
            return _json({"resourceVersion": self.store.rv,
                          "discoveryGeneration": self.store.registry.generation,
                          "watches": len(self.store.watches), "requests": len(self.requests),
                          "config": self.store.config})
        if what == "config" and request.method in ("PUT", "PATCH", "POST"):
            body = await request.json()
            if body.pop("cut_watches", False):  # end every open watch stream now (fault matrix)
                for w in list(self.store.watches):
                    w.queue.put_nowait(_STOP)
            self.store.config.update(body)
            return _json(self.store.config)
        return _json(_not_found_path().status(), 404)


__all__ = ["Emulator", "Route", "parse_path", "rbac_verb"]

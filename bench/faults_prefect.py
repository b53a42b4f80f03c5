"""Prefect scenarios of the fault matrix: the API down, slow, answering 5xx or 409, or cutting the
connection, during an apply (``sync_pipeline``, what ``eveflow apply`` and each operator pass run)
and during a reconcile read (``read_status``).

Each scenario applies a pipeline through a fault proxy in front of a real ``prefect server``
(the faulted sync may fail), then again with the fault gone, and compares what Prefect holds for
it (work pool, queues, deployments, schedules) with a clean apply of the same pipeline under
another name: objects missing are "lost", objects extra or twice are "duplicated".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from eveflow_etl.errors import EveflowError
from eveflow_etl.orchestration.server import free_port, start_prefect_server
from eveflow_etl.orchestration.sync import read_status, sync_pipeline
from eveflow_etl.orchestration.types import PrefectConnection
from eveflow_etl.spec import parse_pipeline

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class FaultProxy:
    """``http://127.0.0.1:<port>/api/x`` → the real server, unless a fault says otherwise."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.lock = threading.Lock()
        self.clear()
        self._client = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                proxy.forward(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def clear(self) -> None:
        with self.lock:
            self.down = False
            self.delay = 0.0
            self.status: int | None = None
            self.status_left = 0
            self.status_writes_only = False
            self.writes_before_cut: int | None = None

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._client.close()

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        path = h.path[len("/api"):] if h.path.startswith("/api") else h.path
        write = h.command in {"POST", "PATCH", "PUT", "DELETE"} and not path.split("?")[0].rstrip("/").endswith(
            ("/filter", "/count", "/paginate"))
        with self.lock:
            if self.down:
                h.close_connection = True
                return
            if self.writes_before_cut is not None and write:
                if self.writes_before_cut <= 0:
                    h.close_connection = True
                    return
                self.writes_before_cut -= 1
            inject = None
            if self.status and self.status_left > 0 and (write or not self.status_writes_only):
                self.status_left -= 1
                inject = self.status
            delay = self.delay
        if delay:
            time.sleep(delay)
        if inject:
            return self._reply(h, inject, json.dumps({"detail": f"injected {inject}"}).encode(), [])
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
        try:
            up = self._client.request(h.command, self.upstream + path, content=body, headers=headers)
        except httpx.HTTPError:
            return self._reply(h, 502, b'{"detail":"proxy"}', [])
        self._reply(h, up.status_code, up.content, [(k, v) for k, v in up.headers.items() if k.lower() not in _HOP])

    @staticmethod
    def _reply(h, status, body, headers) -> None:
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def document(name: str) -> dict:
    return {
        "apiVersion": "eveflow.dev/v1alpha1", "kind": "EvePipeline", "metadata": {"name": name},
        "spec": {
            "workPool": {"name": f"{name}-pool", "type": "process", "concurrencyLimit": 4,
                         "queues": [{"name": "default", "priority": 1},
                                    {"name": "high-memory", "priority": 2, "concurrencyLimit": 1}]},
            "source": {"kind": "esi-history", "regions": [10000002, 10000043], "types": [34, 35]},
            "destination": {"profile": "env", "schema": "eve", "table": "market_history"},
            "schedules": [{"slug": "daily", "cron": "15 12 * * *", "timezone": "UTC"},
                          {"slug": "hub-refresh", "cron": "40 */6 * * *", "timezone": "Europe/Oslo",
                           "parameters": {"regions": [10000002]}}],
            "retries": 0, "retryDelaySeconds": 0,
        },
    }


def objects(api_url: str, name: str) -> list[tuple]:
    """What Prefect holds for pipeline ``name``, with the name normalised away."""
    pool = f"{name}-pool"

    def norm(value) -> str:
        return json.dumps(value, sort_keys=True, default=str).replace(name, "<p>")

    with httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30) as api:
        out: list[tuple] = []
        got = api.get(f"work_pools/{pool}")
        if got.status_code == 200:
            p = got.json()
            out.append(("pool", p["type"], p.get("concurrency_limit"), p.get("is_paused")))
            for q in api.post(f"work_pools/{pool}/queues/filter", json={}).json():
                out.append(("queue", q["name"], q.get("priority"), q.get("concurrency_limit")))
        deps = api.post("deployments/filter", json={"work_pools": {"name": {"any_": [pool]}}}).json()
        for d in deps:
            out.append(("deployment", norm(d["name"]), norm(d.get("parameters")), d.get("work_queue_name"),
                        d.get("paused"), norm(sorted(d.get("tags") or []))))
            for s in d.get("schedules") or []:
                sched = s.get("schedule") or {}
                out.append(("schedule", norm(d["name"]), sched.get("cron"), sched.get("timezone"), s.get("active"),
                            norm(s.get("parameters") or {})))
    return out


@dataclass
class PrefectScenario:
    name: str
    what: str
    setup: callable  # (proxy) -> None
    reconcile: bool = False  # the fault hits a reconcile read (read_status) after a clean apply
    timeout_seconds: float | None = None


SCENARIOS = [
    PrefectScenario("prefect-down-during-apply", "the API drops every connection during an apply",
                    lambda p: setattr(p, "down", True)),
    PrefectScenario("prefect-slow-during-apply", "every answer 2 s late, timeout 1 s",
                    lambda p: setattr(p, "delay", 2.0), timeout_seconds=1.0),
    PrefectScenario("prefect-503-burst-during-apply", "503 to five requests in a row",
                    lambda p: (setattr(p, "status", 503), setattr(p, "status_left", 5))),
    PrefectScenario("prefect-500-mid-apply", "500 to the third and fourth writes",
                    lambda p: (setattr(p, "status", 500), setattr(p, "status_left", 2),
                               setattr(p, "status_writes_only", True))),
    PrefectScenario("prefect-409-during-apply", "409 Conflict to the first writes",
                    lambda p: (setattr(p, "status", 409), setattr(p, "status_left", 2),
                               setattr(p, "status_writes_only", True))),
    PrefectScenario("prefect-cut-mid-apply", "connections dropped after three writes",
                    lambda p: setattr(p, "writes_before_cut", 3)),
    PrefectScenario("prefect-down-during-reconcile", "the API drops every connection during a reconcile read",
                    lambda p: setattr(p, "down", True), reconcile=True),
    PrefectScenario("prefect-5xx-during-reconcile", "502 to the reconcile's reads",
                    lambda p: (setattr(p, "status", 502), setattr(p, "status_left", 8)), reconcile=True),
]


def run_all(base: Path, report, after=None) -> None:
    """Start a Prefect server, run every scenario, hand each outcome to ``report(name, what, ok,
    lost, duplicated, detail)``; then ``after(prefect_api_url)`` (the Kubernetes scenarios)."""
    server = start_prefect_server(base / "prefect-home", ui=False,
                                  extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "60"})
    proxy = FaultProxy(server.api_url)
    try:
        if after is not None and not SCENARIOS:
            after(server.api_url)
            return
        for sc in SCENARIOS:
            started = time.monotonic()
            notes: list[str] = []
            try:
                ok, lost, dup, detail = _one(sc, server.api_url, proxy, notes)
            except Exception as exc:  # noqa: BLE001 - named, counted as failed
                ok, lost, dup, detail = False, 0, 0, f"bench error: {type(exc).__name__}: {exc}"
            finally:
                proxy.clear()
            report(sc.name, sc.what, ok, lost, dup, f"{detail}" + "".join(f"; {n}" for n in notes),
                   time.monotonic() - started)
        if after is not None:
            after(server.api_url)
    finally:
        proxy.close()
        server.stop()


def _one(sc: PrefectScenario, direct: str, proxy: FaultProxy, notes: list[str]):
    slug = sc.name.replace("prefect-", "")[:20]
    got, ref = f"fg-{slug}", f"fr-{slug}"
    via = PrefectConnection(proxy.api_url, timeout_seconds=sc.timeout_seconds)
    clean_via = PrefectConnection(proxy.api_url)
    asyncio.run(sync_pipeline(parse_pipeline(document(ref)), PrefectConnection(direct)))
    if sc.reconcile:
        asyncio.run(sync_pipeline(parse_pipeline(document(got)), clean_via))
    sc.setup(proxy)
    try:
        call = read_status if sc.reconcile else sync_pipeline
        asyncio.run(call(parse_pipeline(document(got)), via))
        notes.append("the faulted call succeeded (retried within the client)")
    except EveflowError as exc:
        notes.append(f"faulted call failed as allowed: {str(exc)[:100]}")
    finally:
        proxy.clear()
    for attempt in range(3):  # the next pass / the user's retry
        try:
            asyncio.run(sync_pipeline(parse_pipeline(document(got)), clean_via))
            break
        except EveflowError as exc:
            notes.append(f"retry {attempt + 1} failed: {str(exc)[:80]}")
    g, r = Counter(objects(direct, got)), Counter(objects(direct, ref))
    lost, dup = sum((r - g).values()), sum((g - r).values())
    digest = hashlib.blake2b(repr(sorted(g.elements())).encode(), digest_size=6).hexdigest()
    return lost == 0 and dup == 0, lost, dup, f"prefect objects={sum(g.values())}/{sum(r.values())} sum={digest}"

"""What ``eveflow worker`` serves on its port: ``/health`` (connected and polling) and ``/metrics``.

:class:`WorkerMonitor` wraps a Prefect worker's poll and heartbeat to record their outcomes; the
health verdict and the Prometheus metrics are computed from those records only.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
)

from eveflow_etl.errors import ConfigError
from eveflow_etl.orchestration.types import PrefectConnection

if TYPE_CHECKING:  # avoids an import cycle with worker.py
    from eveflow_etl.orchestration.worker_process import WorkerOptions


def reason_of(exc: BaseException) -> str:
    """The last line of an exception's message (or its type): one line for logs and errors."""
    text = str(exc).strip().splitlines()
    return text[-1] if text and text[-1] else type(exc).__name__


class WorkerMonitor:
    """What the worker did, as Prometheus metrics and a health verdict. Thread-safe reads."""

    def __init__(self, options: WorkerOptions, conn: PrefectConnection, *, clock: Callable[[], float] = time.time):
        self._clock = clock
        poll = options.poll_seconds or _default_poll_seconds()
        self.stale_after = options.stale_after_seconds or max(30.0, 3 * poll)
        self.registry = CollectorRegistry()
        self.last_poll_ok: bool | None = None
        self.last_poll_success: float | None = None
        self.last_heartbeat_ok: bool | None = None
        self.last_error: str | None = None
        self._worker: Any = None

        r = self.registry
        self._up = Gauge("eveflow_worker_up", "1 while the worker is connected and polling (what /health says)", registry=r)
        self._up.set_function(lambda: 1.0 if self.health()[0] else 0.0)
        self._polls = Counter("eveflow_worker_polls", "Polls of the work pool for scheduled flow runs", ["result"], registry=r)
        self._last_poll = Gauge("eveflow_worker_last_successful_poll_timestamp_seconds",
                                "Unix time of the last successful poll", registry=r)
        self._heartbeats = Counter("eveflow_worker_heartbeats", "Heartbeats (syncs) with the Prefect API", ["result"], registry=r)
        self._last_heartbeat = Gauge("eveflow_worker_last_successful_heartbeat_timestamp_seconds",
                                     "Unix time of the last successful heartbeat", registry=r)
        self._submitted = Counter("eveflow_worker_flow_runs_submitted", "Flow runs this worker submitted", registry=r)
        self._in_flight = Gauge("eveflow_worker_flow_runs_in_flight", "Flow runs submitted and not finished", registry=r)
        self._in_flight.set_function(self._count_in_flight)
        for result in ("success", "failure"):  # export zeroes from the start
            self._polls.labels(result)
            self._heartbeats.labels(result)
        Info("eveflow_worker", "Worker identity (the API key is never exported)", registry=r).info(
            {"pool": options.pool, "type": options.type, "queues": ",".join(options.queues) or "*",
             "api_url": conn.safe_url}
        )

    def _count_in_flight(self) -> float:
        ids = getattr(self._worker, "_submitting_flow_run_ids", None)
        return float(len(ids)) if ids is not None else 0.0

    def attach(self, worker: Any) -> None:
        """Wrap the worker's poll and heartbeat so each outcome is recorded here."""
        self._worker = worker
        poll, sync = worker.get_and_submit_flow_runs, worker.sync_with_backend

        async def observed_poll() -> list:
            try:
                runs = await poll()
            except BaseException as exc:
                self.poll_failed(exc)
                raise
            self.poll_succeeded(len(runs or ()))
            return runs

        async def observed_sync() -> None:
            try:
                await sync()
            except BaseException as exc:
                self.heartbeat_failed(exc)
                raise
            self.heartbeat_succeeded()

        worker.get_and_submit_flow_runs = observed_poll
        worker.sync_with_backend = observed_sync

    def poll_succeeded(self, submitted: int = 0) -> None:
        now = self._clock()
        self.last_poll_ok, self.last_poll_success = True, now
        self._polls.labels("success").inc()
        self._last_poll.set(now)
        if submitted:
            self._submitted.inc(submitted)

    def poll_failed(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            return
        self.last_poll_ok, self.last_error = False, reason_of(exc)
        self._polls.labels("failure").inc()

    def heartbeat_succeeded(self) -> None:
        self.last_heartbeat_ok = True
        self._heartbeats.labels("success").inc()
        self._last_heartbeat.set(self._clock())

    def heartbeat_failed(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            return
        self.last_heartbeat_ok, self.last_error = False, reason_of(exc)
        self._heartbeats.labels("failure").inc()

    def health(self) -> tuple[bool, str]:
        """(healthy, why): connected (last heartbeat ok) and polling (last poll ok and recent)."""
        if self.last_heartbeat_ok is None:
            return False, "not yet connected to the Prefect API"
        if not self.last_heartbeat_ok:
            return False, f"heartbeat failing: {self.last_error}"
        if self.last_poll_ok is None:
            return False, "connected, no poll yet"
        if not self.last_poll_ok:
            return False, f"poll failing: {self.last_error}"
        age = self._clock() - (self.last_poll_success or 0.0)
        if age > self.stale_after:
            return False, f"no successful poll for {age:.0f} s"
        return True, "ok"

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)


def _default_poll_seconds() -> float:
    # Prefect (~1.2 s more than this module) loads on first use, once the caller pointed PREFECT_*
    # at the server (worker.apply_connection_env): its settings are read at import.
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS

    return float(PREFECT_WORKER_QUERY_SECONDS.value())


async def start_http(monitor: WorkerMonitor, host: str, port: int):
    """Serve ``/health`` and ``/metrics``; returns (runner, bound port)."""
    async def health(_request: web.Request) -> web.Response:
        ok, why = monitor.health()
        return web.json_response({"status": "ok" if ok else "unavailable", "detail": why}, status=200 if ok else 503)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=monitor.metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port} for /health: {exc.strerror or exc}; choose another --port") from None
    bound = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp exposes no public accessor
    return runner, bound

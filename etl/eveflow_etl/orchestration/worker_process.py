"""``eveflow worker``: a real Prefect worker in this process, with ``/health`` and ``/metrics``.

Why in-process (Prefect's own worker classes) rather than ``prefect worker start`` as a child:

* ``/health`` must mean "connected and polling". In-process we observe every poll and heartbeat
  of the worker directly (their results, not a log line), so health flips to 503 on the first
  failed poll instead of after Prefect's own 30 x poll-interval window.
* ``/metrics`` counts polls, heartbeats and submitted flow runs from the same observations; a
  child process would leave us scraping its logs.
* One process to supervise: signals, exit codes and the one-line errors stay ours; there is no
  orphan to reap when the pod or the demo stops.

The worker class is whatever Prefect registers for the pool type (``process``; ``docker`` and
``kubernetes`` when prefect-docker / prefect-kubernetes are installed), so behaviour under load
is Prefect's. We only wrap two public methods of the instance (``get_and_submit_flow_runs`` and
``sync_with_backend``) to observe their outcome.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from eveflow_etl.errors import ConfigError
from eveflow_etl.orchestration.client import auth_headers
from eveflow_etl.orchestration.types import (
    PrefectAuthError,
    PrefectConnection,
    PrefectRejected,
    PrefectUnavailable,
    redact_url,
)
from eveflow_etl.orchestration.worker_health import WorkerMonitor, reason_of, start_http
from eveflow_etl.plan import WORKER_PORT

log = logging.getLogger("eveflow.worker")

WORKER_TYPES = ("process", "docker", "kubernetes")
_INTEGRATION_OF_TYPE = {"docker": "prefect-docker", "kubernetes": "prefect-kubernetes"}


@dataclass(frozen=True)
class WorkerOptions:
    """What ``eveflow worker`` was asked to run."""

    pool: str
    type: str = "process"
    queues: tuple[str, ...] = ()
    limit: int | None = None
    host: str = "0.0.0.0"
    port: int = WORKER_PORT  # 0: any free port (tests, the demo)
    name: str | None = None
    poll_seconds: float | None = None  # PREFECT_WORKER_QUERY_SECONDS when None (10 s)
    # /health turns 503 when the last good poll is older than this; default 3 poll intervals, ≥ 30 s.
    stale_after_seconds: float | None = None
    create_pool: bool = True


# --- connection -------------------------------------------------------------------------------


def connection_from_env(api_url: str | None = None, environ: dict[str, str] | None = None) -> PrefectConnection:
    """The API to talk to: ``api_url`` (``--api-url``) or ``PREFECT_API_URL``, with
    ``PREFECT_API_KEY`` (Cloud bearer key) or ``PREFECT_API_AUTH_STRING`` (basic auth)."""
    env = os.environ if environ is None else environ
    url = (api_url or env.get("PREFECT_API_URL") or "").strip().rstrip("/")
    if not url:
        raise ConfigError(
            "no Prefect API URL: pass --api-url or set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Prefect API URL '{redact_url(url)}' must start with http:// or https://")
    return PrefectConnection(
        api_url=url,
        api_key=env.get("PREFECT_API_KEY") or None,
        auth_string=env.get("PREFECT_API_AUTH_STRING") or None,
    )


def _refused(conn: PrefectConnection, status: int) -> PrefectAuthError:
    if conn.api_key:
        fix = "check PREFECT_API_KEY (a Prefect Cloud key for this workspace)"
    elif conn.auth_string:
        fix = "check PREFECT_API_AUTH_STRING (user:password of the server)"
    else:
        fix = "it needs credentials: set PREFECT_API_KEY (Cloud) or PREFECT_API_AUTH_STRING (basic auth)"
    return PrefectAuthError(f"the Prefect API at {conn.safe_url} refused the credentials (HTTP {status}): {fix}")


def check_api(conn: PrefectConnection, pool: str | None = None, *, timeout: float = 5.0) -> dict[str, Any] | None:
    """Fail fast, with one clear line, before starting anything that would retry forever.

    ``GET /health`` (reachable? a Prefect API?), then an authenticated read of the work pool
    (``/health`` needs no credentials on a server with basic auth, so it cannot tell whether they
    are right). Returns the work pool as the API has it, or None when it does not exist yet.
    """
    headers = auth_headers(conn)
    with httpx.Client(timeout=timeout, headers=headers) as http:
        try:
            health = http.get(f"{conn.api_url}/health")
        except httpx.HTTPError as exc:
            raise PrefectUnavailable(
                f"cannot reach the Prefect API at {conn.safe_url}: {reason_of(exc)} "
                "(is the server running? check --api-url / PREFECT_API_URL)"
            ) from None
        if health.status_code in (401, 403):
            raise _refused(conn, health.status_code)
        if health.status_code >= 500:
            raise PrefectUnavailable(f"the Prefect API at {conn.safe_url} answered HTTP {health.status_code}; try again later")
        if health.status_code != 200:
            raise PrefectRejected(
                f"{conn.safe_url} does not look like a Prefect API (GET /health answered HTTP {health.status_code}); "
                "a server's API URL ends in /api, e.g. http://127.0.0.1:4200/api"
            )
        if pool is None:
            return None
        try:
            response = http.get(f"{conn.api_url}/work_pools/{pool}")
        except httpx.HTTPError as exc:
            raise PrefectUnavailable(f"cannot reach the Prefect API at {conn.safe_url}: {reason_of(exc)}") from None
    if response.status_code in (401, 403):
        raise _refused(conn, response.status_code)
    if response.status_code == 404:
        return None
    if response.status_code >= 500:
        raise PrefectUnavailable(f"the Prefect API at {conn.safe_url} answered HTTP {response.status_code}; try again later")
    if response.status_code != 200:
        raise PrefectRejected(f"reading work pool '{pool}' from {conn.safe_url} failed with HTTP {response.status_code}")
    return response.json()


def apply_connection_env(conn: PrefectConnection) -> None:
    """Point this process's Prefect client settings (and the flow runs it starts) at ``conn``."""
    os.environ["PREFECT_API_URL"] = conn.api_url
    for name, value in (("PREFECT_API_KEY", conn.api_key), ("PREFECT_API_AUTH_STRING", conn.auth_string)):
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    # Prefect (~1.3 s more than this module) is first imported here, after the env is set, by the
    # CLI and the demo; it reads its settings into a global context at import time: pick up the env.
    import prefect.context

    prefect.context.refresh_global_settings_context()


def resolve_worker_class(worker_type: str) -> type:
    if worker_type not in WORKER_TYPES:
        raise ConfigError(f"--type '{worker_type}' is not one of {', '.join(WORKER_TYPES)}")
    from prefect.workers.base import BaseWorker  # ~1.6 s, after apply_connection_env (see there)

    worker_class = BaseWorker.get_worker_class_from_type(worker_type)
    if worker_class is None:
        package = _INTEGRATION_OF_TYPE.get(worker_type, "prefect")
        raise ConfigError(f"no Prefect worker for type '{worker_type}' is installed: install {package}")
    return worker_class


# --- running ------------------------------------------------------------------------------------


@dataclass
class WorkerHandle:
    """Filled in while :func:`serve_worker` runs (the bound port, the monitor)."""

    monitor: WorkerMonitor | None = None
    port: int | None = None
    worker_name: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)


async def serve_worker(
    options: WorkerOptions,
    conn: PrefectConnection,
    *,
    stop: asyncio.Event | None = None,
    handle: WorkerHandle | None = None,
) -> None:
    """Run the worker until ``stop`` is set (returns) or it gives up on the API (raises).

    The process's Prefect settings must already point at ``conn`` (:func:`apply_connection_env`).
    """
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings  # see apply_connection_env

    worker_class = resolve_worker_class(options.type)
    handle = handle or WorkerHandle()
    stop = stop or asyncio.Event()
    monitor = WorkerMonitor(options, conn)
    updates = {PREFECT_WORKER_QUERY_SECONDS: options.poll_seconds} if options.poll_seconds else {}
    with temporary_settings(updates=updates):
        runner, port = await start_http(monitor, options.host, options.port)
        try:
            worker = worker_class(
                work_pool_name=options.pool,
                work_queues=list(options.queues) or None,
                name=options.name,
                limit=options.limit,
                create_pool_if_not_found=options.create_pool,
            )
            monitor.attach(worker)
            handle.monitor, handle.port, handle.worker_name = monitor, port, worker.name
            log.info("worker %r: pool %r (%s), queues %s, at %s", worker.name, options.pool, options.type,
                     ", ".join(options.queues) or "all", conn.describe())
            log.info("health on http://%s:%d/health, metrics on /metrics", options.host, port)
            handle.ready.set()
            run = asyncio.create_task(worker.start(printer=log.info))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if run in done:
                stopper.cancel()
                run.result()  # a worker error propagates as itself
                raise PrefectUnavailable(
                    f"the worker stopped: lost the Prefect API at {conn.safe_url} ({monitor.last_error or 'no detail'})"
                )
            run.cancel()
            try:
                await run
            except asyncio.CancelledError:
                pass
            log.info("worker %r stopped", worker.name)
        finally:
            handle.ready.set()
            await runner.cleanup()


def run_worker(options: WorkerOptions, conn: PrefectConnection) -> None:
    """``eveflow worker``: check the API, then serve until SIGTERM/SIGINT (then return normally)."""
    if options.type not in WORKER_TYPES:
        raise ConfigError(f"--type '{options.type}' is not one of {', '.join(WORKER_TYPES)}")
    pool = check_api(conn, options.pool)  # before importing Prefect (seconds): fail fast
    if pool is not None and pool.get("type") and pool["type"] != options.type:
        raise ConfigError(
            f"work pool '{options.pool}' is of type '{pool['type']}', not '{options.type}': "
            f"start the worker with --type {pool['type']}"
        )
    if pool is None and not options.create_pool:
        raise ConfigError(f"work pool '{options.pool}' does not exist at {conn.safe_url}; apply the pipeline first")
    resolve_worker_class(options.type)
    apply_connection_env(conn)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_worker(options, conn, stop=stop)

    asyncio.run(main())


class BackgroundWorker:
    """:func:`serve_worker` on its own event loop in a thread: what ``eveflow demo`` runs."""

    def __init__(self, options: WorkerOptions, conn: PrefectConnection):
        self.options, self.conn = options, conn
        self.handle = WorkerHandle()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="eveflow-worker", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await serve_worker(self.options, self.conn, stop=self._stop, handle=self.handle)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop()
            self.error = exc
            self.handle.ready.set()

    def start(self, timeout: float = 60.0) -> BackgroundWorker:
        self._thread.start()
        if not self.handle.ready.wait(timeout) or self.error is not None:
            raise self.error or PrefectUnavailable("the worker did not start in time")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

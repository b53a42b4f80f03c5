"""``eveflow demo``: the main job end to end on embedded defaults, on a fresh machine.

Everything is local and lives under one data dir (default ``~/.eveflow``):

* a real Prefect server (``prefect server start``, SQLite under ``<data dir>/prefect``);
* the embedded PostgreSQL (``<data dir>/pg``), started once here; flow runs reach it through the
  ``env`` destination profile (``PGHOST``/``PGUSER``/``PGDATABASE`` in their environment) rather
  than each starting it again (the ``local`` profile), so there is exactly one server to stop;
* the local ESI server (in this process), so no network is needed;
* the packaged ``examples/pipeline.yaml`` applied with the sync library (destination ``env``,
  flow-run output not streamed to this terminal: the demo shows progress, the UI has the logs);
* a process worker (in this process, see :mod:`.worker`), whose flow runs inherit the
  ``EVEFLOW_*`` variables that point them at the local ESI server and data dir.

Then one run of the deployment is followed to a final state and its counts per region are
printed. Re-running in the same data dir is idempotent: the sync makes no writes, the deployment
keeps its id, the rows already loaded come back ``unchanged``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from eveflow_etl.errors import ConfigError, PrefectError
from eveflow_etl.orchestration.demo_report import Reporter, psql_command
from eveflow_etl.orchestration.summary import rows_of_artifact
from eveflow_etl.orchestration.types import PrefectConnection
from eveflow_etl.plan import pipeline_plan
from eveflow_etl.spec import ETL_FLOW_NAME, EvePipeline, parse_pipeline

# The heavy imports sit in the functions that use them: every `eveflow` start (`--help` too)
# imports this module for the demo command; at the top, Prefect would add ~2.5 s, the local ESI
# server ~0.9 s, the worker ~190 ms, the sync library ~100 ms, psycopg and localpg ~50 ms. And
# _warm_imports loads Prefect and the flows in a thread while the servers start.

NAMESPACE = "demo"
WORKER_NAME = "eveflow-demo"
_FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class DemoOptions:
    data_dir: Path
    keep: bool = False
    regions: list[int] | None = None
    port: int = 4200  # Prefect server; a free port when 4200 is taken
    timeout_seconds: float = 600.0


@dataclass
class DemoResult:
    flow_run_id: str
    state: str
    deployment_id: str
    sync_writes: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # the run's summary rows (per region + total)
    table_rows: dict[int, int] = field(default_factory=dict)  # rows in the table per region, after the run


def demo_pipeline() -> EvePipeline:
    """The packaged example, writing to the demo's database (PG* variables of the worker)."""
    text = resources.files("eveflow_etl").joinpath("examples/pipeline.yaml").read_text()
    document = yaml.safe_load(text)
    document["spec"]["destination"].update({"profile": "env"})
    document["spec"]["destination"].pop("secretRef", None)
    document["spec"]["workPool"].setdefault("jobVariables", {})["stream_output"] = False
    return parse_pipeline(document, origin="examples/pipeline.yaml")


def _prefect_port(preferred: int) -> int:
    from eveflow_etl.orchestration.server import free_port

    if preferred:
        with socket.socket() as sock:
            # As the server will: a port in TIME_WAIT from the previous demo is free to use.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    return free_port()


def _warm_imports() -> None:
    """Import Prefect and the flows (seconds) while the server starts."""
    import eveflow_etl.orchestration.flows  # noqa: F401
    import eveflow_etl.orchestration.sync  # noqa: F401
    import prefect.workers.process  # noqa: F401


def run_demo(options: DemoOptions, report: Reporter) -> DemoResult:
    """Start everything, apply, run once, report; stop it all unless ``keep`` (then on Ctrl-C)."""
    pipeline = demo_pipeline()
    regions = options.regions or list(pipeline.spec.source.regions)
    data_dir = options.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Before Prefect is imported: its client settings, home and the flow runs' settings.
    os.environ["PREFECT_HOME"] = str(data_dir / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["EVEFLOW_DATA_DIR"] = str(data_dir)
    for name in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_PROFILE"):
        os.environ.pop(name, None)

    started = time.monotonic()
    stack = contextlib.ExitStack()
    with _stop_on_sigterm(), stack:
        report.step(f"data dir {data_dir}")
        server = _start_services(stack, data_dir, options, report)
        result = _apply_and_run(pipeline, regions, server, options, report, stack)
        report.result(pipeline, result, server.ui_url, psql_command(os.environ["EVEFLOW_DEMO_DSN"], pipeline),
                      keep=options.keep, seconds=time.monotonic() - started)
        if result.state != "COMPLETED":
            raise PrefectError(f"the demo run {result.flow_run_id} ended {result.state}; see {server.ui_url}/runs")
        if options.keep:
            report.step("everything keeps running; press Ctrl-C to stop")
            _wait_for_interrupt()
        report.step("stopping the worker, the Prefect server, PostgreSQL and the ESI server")
    return result


def _start_services(stack: contextlib.ExitStack, data_dir: Path, options: DemoOptions, report: Reporter):
    from eveflow_etl.devservers.esi_server import serve_in_thread
    from eveflow_etl.localpg import start_local_postgres
    from eveflow_etl.orchestration.server import start_prefect_server

    port = _prefect_port(options.port)
    pool = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="demo-start"))
    server_future = pool.submit(start_prefect_server, data_dir / "prefect", port=port, ui=True)
    warm = pool.submit(_warm_imports)
    stack.callback(_stop_server_when_started, server_future)  # runs even if a later step fails

    esi = stack.enter_context(serve_in_thread())
    os.environ.update({
        "EVEFLOW_ESI_BASE_URL": esi.esi_base_url,
        "EVEFLOW_MOKAAM_BASE_URL": esi.mokaam_base_url,
        "EVEFLOW_EVEREF_BASE_URL": esi.everef_base_url,
        # A local server: no need for ESI's public rate limit.
        "EVEFLOW_ESI_RATE_PER_SECOND": "50",
    })
    report.step(f"local ESI server at {esi.url}")

    pg = start_local_postgres(data_dir / "pg", stop_at_exit=True)
    stack.callback(_stop_postgres, pg)
    os.environ["EVEFLOW_DEMO_DSN"] = pg.dsn
    os.environ.update(_libpq_env(pg.dsn))
    report.step(f"PostgreSQL ({pg.method}) ready in {pg.start_seconds:.1f} s")

    with report.waiting("starting the Prefect server (about 15 s the first time)"):
        server = server_future.result()
        warm.result()
    taken = f" (port {options.port} was taken)" if options.port and port != options.port else ""
    report.step(f"Prefect server at {server.ui_url} ready in {server.start_seconds:.1f} s{taken}")
    return server


def _libpq_env(dsn: str) -> dict[str, str]:
    """PG* variables for ``dsn`` (what the ``env`` destination profile reads in flow runs)."""
    from psycopg.conninfo import conninfo_to_dict

    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE", "password": "PGPASSWORD"}
    for name in names.values():
        os.environ.pop(name, None)
    return {names[k]: str(v) for k, v in conninfo_to_dict(dsn).items() if k in names and v not in (None, "")}


def _stop_postgres(pg) -> None:
    """Stop our PostgreSQL and check it is gone (fast shutdown of the postmaster if not)."""
    import psutil

    from eveflow_etl.localpg import forget_dead_handles

    pg.stop()
    pidfile = pg.data_dir / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    forget_dead_handles(pg.data_dir)
    with contextlib.suppress(OSError, ValueError):
        if [p for p in json.loads((pg.data_dir / ".handle_pids.json").read_text()) if p != os.getpid()]:
            return  # another live process (an `eveflow etl run` on the local profile) still uses it
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if "postgres" in process.name():
            process.send_signal(signal.SIGINT)  # fast shutdown
            process.wait(30)


def _stop_server_when_started(future) -> None:
    with contextlib.suppress(Exception):
        future.result().stop()


def _apply_and_run(pipeline: EvePipeline, regions: list[int], server, options: DemoOptions,
                   report: Reporter, stack: contextlib.ExitStack) -> DemoResult:
    from eveflow_etl.orchestration.sync import sync_pipeline
    from eveflow_etl.orchestration.worker_process import BackgroundWorker, WorkerOptions, apply_connection_env

    conn = PrefectConnection(api_url=server.api_url)
    apply_connection_env(conn)
    _quiet_prefect_loggers()
    synced = asyncio.run(sync_pipeline(pipeline, conn, namespace=NAMESPACE))
    deployment_id = synced.deployment_ids[pipeline.etl_deployment_name]
    what = "; ".join(synced.actions) if synced.writes else "already in sync"
    report.step(f"applied pipeline {pipeline.name}: {what} ({synced.writes} writes)")
    report.step(f"deployment {ETL_FLOW_NAME}/{pipeline.etl_deployment_name} id {deployment_id}")

    spec = pipeline.spec
    queues = pipeline_plan(pipeline, NAMESPACE).worker_queues
    worker = BackgroundWorker(
        WorkerOptions(pool=spec.work_pool.name, type=spec.work_pool.type, queues=queues,
                      host="127.0.0.1", port=0, name=WORKER_NAME, poll_seconds=1.0),
        conn,
    ).start()
    stack.callback(worker.stop)
    report.step(f"process worker polling pool {spec.work_pool.name} (health on "
                f"http://127.0.0.1:{worker.handle.port}/health)")

    run_id = _trigger(deployment_id, regions)
    report.step(f"started flow run {run_id} for regions {', '.join(map(str, regions))}")
    state = _follow(run_id, len(regions), options.timeout_seconds, report, worker)
    rows = _summary_rows(run_id, pipeline)
    table_rows = _table_rows(os.environ["EVEFLOW_DEMO_DSN"], pipeline, regions)
    return DemoResult(run_id, state, deployment_id, synced.writes, rows, table_rows)


def _quiet_prefect_loggers() -> None:
    """The worker's per-run INFO lines duplicate the demo's progress; keep warnings."""
    for name in ("prefect.flow_runs.worker", "prefect.workers", "prefect.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _trigger(deployment_id: str, regions: list[int]) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id, parameters={"regions": regions},
                                                     tags=["eveflow-demo"])
    return str(run.id)


def _follow(run_id: str, regions: int, timeout: float, report: Reporter, worker) -> str:
    """Poll the run and its region tasks until a final state; report each change."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client, report.progress(regions) as progress:
        while True:
            run = client.read_flow_run(run_id)
            state = run.state.type.value if run.state else "UNKNOWN"
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            done = sum(1 for t in tasks if t.name.startswith("load-region") and t.state and t.state.is_final())
            progress.update(run.state.name if run.state else state, done)
            if state in _FINAL:
                return state
            if worker.error is not None:
                raise PrefectError(f"the worker stopped: {worker.error}")
            if time.monotonic() > deadline:
                raise PrefectError(f"flow run {run_id} not finished after {timeout:.0f} s (state {state})")
            time.sleep(0.5)


def _summary_rows(run_id: str, pipeline: EvePipeline) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    for artifact in artifacts:
        if artifact.type == "table":
            return rows_of_artifact({"data": artifact.data})
    return []


def _table_rows(dsn: str, pipeline: EvePipeline, regions: list[int]) -> dict[int, int]:
    import psycopg
    from psycopg import sql

    plan = pipeline_plan(pipeline, NAMESPACE)
    query = sql.SQL("SELECT region_id, count(*) FROM {} WHERE region_id = ANY(%s) GROUP BY 1 ORDER BY 1").format(
        sql.Identifier(plan.target_schema, plan.target_table))
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return {int(r): int(n) for r, n in conn.execute(query, (regions,)).fetchall()}
    except psycopg.Error:
        return {}


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` (and the ExitStack) runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def parse_regions(values: list[str] | None) -> list[int] | None:
    """``--regions 10000002,10000043`` or repeated; ids must be EVE region ids."""
    if not values:
        return None
    regions: list[int] = []
    for value in values:
        for part in value.replace(" ", ",").split(","):
            if not part:
                continue
            if not (part.isascii() and part.isdigit()) or not 10_000_000 <= int(part) <= 19_999_999:
                raise ConfigError(f"--regions: '{part}' is not an EVE region id (e.g. 10000002 for The Forge)")
            if int(part) not in regions:
                regions.append(int(part))
    return regions or None

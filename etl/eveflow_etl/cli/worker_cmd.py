"""``eveflow worker``: a Prefect worker with /health and /metrics (the container entrypoint)."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from eveflow_etl.cli.app import app, dev_app  # noqa: F401
from eveflow_etl.plan import WORKER_PORT


def setup_logging(verbose: bool = False) -> None:
    """Plain timestamped lines on stderr for ``eveflow.*`` loggers (Prefect keeps its own handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("eveflow")
    if not logger.handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


@app.command("worker")
def worker(
    pool: str = typer.Option(..., "--pool", "-p", help="Work pool to poll.", envvar="EVEFLOW_WORKER_POOL"),
    type_: str = typer.Option("process", "--type", "-t", help="Pool type: process, docker or kubernetes."),
    queue: Optional[list[str]] = typer.Option(None, "--queue", "-q", help="Work queue to poll (repeat); default: all."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Most flow runs at once."),
    port: int = typer.Option(WORKER_PORT, "--port", min=0, max=65535, help="Port of /health and /metrics (0: any free).",
                             envvar="EVEFLOW_WORKER_PORT"),
    host: str = typer.Option("0.0.0.0", "--host", help="Address of /health and /metrics."),
    name: Optional[str] = typer.Option(None, "--name", help="Worker name shown in Prefect (default: generated)."),
    api_url: Optional[str] = typer.Option(None, "--api-url", help="Prefect API URL; default PREFECT_API_URL."),
    poll_seconds: Optional[float] = typer.Option(None, "--poll-seconds", min=0.5,
                                                 help="Seconds between polls (default PREFECT_WORKER_QUERY_SECONDS, 10)."),
    no_create_pool: bool = typer.Option(False, "--no-create-pool", help="Fail if the pool does not exist."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a Prefect worker. Credentials: PREFECT_API_KEY (Cloud) or PREFECT_API_AUTH_STRING."""
    # Imported here: the worker module (httpx, rich) adds ~190 ms to every `eveflow` start.
    from eveflow_etl.orchestration.worker_process import WorkerOptions, connection_from_env, run_worker

    setup_logging(verbose)
    conn = connection_from_env(api_url)
    options = WorkerOptions(
        pool=pool, type=type_, queues=tuple(queue or ()), limit=limit, host=host, port=port, name=name,
        poll_seconds=poll_seconds, create_pool=not no_create_pool,
    )
    run_worker(options, conn)

"""``eveflow apply|status|delete -f pipeline.yaml``: the Prefect sync library without Kubernetes.

The Prefect address is ``--api-url``, else ``PREFECT_API_URL``, else the file's
``spec.prefect.apiUrl`` — so one file works from a laptop and in the cluster. Credentials come
only from the environment: ``PREFECT_API_KEY`` (Cloud) or ``PREFECT_API_AUTH_STRING`` (a server
with basic auth); they are never printed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import typer

from eveflow_etl.cli.app import app, dev_app  # noqa: F401
from eveflow_etl.errors import ConfigError
from eveflow_etl.orchestration.types import PrefectConnection, SyncResult, redact_url
from eveflow_etl.plan import pipeline_plan
from eveflow_etl.spec import EvePipeline, RunSummary, load_pipeline

FILE_OPTION = typer.Option(..., "-f", "--file", help="EvePipeline YAML file.", dir_okay=False)
API_URL_OPTION = typer.Option(
    None, "--api-url", help="Prefect API URL (default: PREFECT_API_URL, then spec.prefect.apiUrl)."
)
NAMESPACE_OPTION = typer.Option(
    None, "--namespace", "-n", help="Namespace in the pipeline's identity tag (default: metadata.namespace or 'default')."
)


def resolve_connection(pipeline: EvePipeline, api_url: str | None = None,
                       environ: Mapping[str, str] | None = None) -> PrefectConnection:
    """The Prefect connection for a pipeline from the command line and the environment."""
    env = os.environ if environ is None else environ
    # The command line and the shell beat the file, so one file works from a laptop and in the cluster.
    url = api_url or env.get("PREFECT_API_URL") or pipeline_plan(pipeline).prefect_api_url
    if not url:
        raise ConfigError(
            "no Prefect API URL: pass --api-url, set PREFECT_API_URL, or set spec.prefect.apiUrl in the file"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Prefect API URL '{redact_url(url)}' must start with http:// or https://")
    api_key = env.get("PREFECT_API_KEY") or None
    auth_string = env.get("PREFECT_API_AUTH_STRING") or None
    if pipeline.spec.prefect.mode == "cloud":
        if not api_key:
            raise ConfigError("spec.prefect.mode is cloud: set PREFECT_API_KEY to a Prefect Cloud API key")
        return PrefectConnection(url.rstrip("/"), api_key=api_key)
    return PrefectConnection(url.rstrip("/"), api_key=None if auth_string else api_key, auth_string=auth_string)


def _run_line(label: str, run: RunSummary | None) -> str:
    if run is None:
        return f"{label}: none"
    text = f"{label}: {run.deployment or '?'} {run.state or ''} at {run.time or '?'} (flow run {run.flow_run_id})"
    if run.rows_loaded is not None:
        text += f", {run.rows_loaded} rows loaded, {run.rows_quarantined or 0} quarantined"
    return text


def print_result(pipeline: EvePipeline, conn: PrefectConnection, result: SyncResult, verb: str) -> None:
    typer.echo(f"pipeline {pipeline.name} on {conn.describe()}: {verb}")
    for action in result.actions:
        typer.echo(f"  - {action}")
    if verb == "applied" and not result.actions:
        typer.echo("  - already in sync: nothing changed")
    typer.echo(f"work pool: {result.work_pool_name} ({result.work_pool_id or 'missing'})")
    for name, deployment_id in result.deployment_ids.items():
        typer.echo(f"deployment: {name} ({deployment_id})")
    for slug, schedule_id in result.schedule_ids.items():
        typer.echo(f"schedule: {slug} ({schedule_id})")
    typer.echo(f"paused: {'yes' if result.paused else 'no'}; writes: {result.writes}; spec hash: {result.spec_hash}")
    typer.echo(_run_line("last run", result.last_run))
    typer.echo(_run_line("next run", result.next_run))


def _call(operation, file: Path, api_url: str | None, namespace: str | None):
    """Load the file, resolve the connection, run one sync-library operation on it."""
    pipeline = load_pipeline(file)
    conn = resolve_connection(pipeline, api_url)
    result = asyncio.run(operation(pipeline, conn, namespace=pipeline_plan(pipeline, namespace).namespace))
    return pipeline, conn, result


@app.command("apply")
def apply_command(file: Path = FILE_OPTION, api_url: str | None = API_URL_OPTION,
                  namespace: str | None = NAMESPACE_OPTION) -> None:
    """Create or update the pipeline's work pool, deployments and schedules in Prefect."""
    # Imported per command: the sync library (httpx) would add ~100 ms to every `eveflow` start (`--help`).
    from eveflow_etl.orchestration.sync import sync_pipeline

    print_result(*_call(sync_pipeline, file, api_url, namespace), "applied")


@app.command("status")
def status_command(file: Path = FILE_OPTION, api_url: str | None = API_URL_OPTION,
                   namespace: str | None = NAMESPACE_OPTION) -> None:
    """Show what Prefect has for the pipeline (reads only)."""
    from eveflow_etl.orchestration.sync import read_status  # ~100 ms at the top: see apply_command

    print_result(*_call(read_status, file, api_url, namespace), "status")


@app.command("delete")
def delete_command(file: Path = FILE_OPTION, api_url: str | None = API_URL_OPTION,
                   namespace: str | None = NAMESPACE_OPTION) -> None:
    """Delete the pipeline's deployments (deletionPolicy: Delete) and its pool when unused."""
    from eveflow_etl.orchestration.sync import delete_pipeline  # ~100 ms at the top: see apply_command

    pipeline, conn, result = _call(delete_pipeline, file, api_url, namespace)
    typer.echo(f"pipeline {pipeline.name} on {conn.describe()}: deleted ({pipeline.spec.deletion_policy})")
    for action in result.actions:
        typer.echo(f"  - {action}")

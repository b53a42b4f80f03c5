"""``eveflow render``: write what runs a pipeline on Snowflake SPCS or a VM, without Kubernetes."""

from __future__ import annotations

from pathlib import Path

import typer

from eveflow_etl.cli.app import app
from eveflow_etl.render import Target, render
from eveflow_etl.spec import load_pipeline

_NEXT_STEPS = {
    "spcs": [
        "cd {out}",
        "edit setup.sql: replace any <PREFECT_API_HOST> / <DATABASE_HOST> in the network rule",
        "snow sql -f setup.sql   # database, pool, egress, secrets (placeholder values)",
        "set the secrets' values by hand: the ALTER SECRET lines at the top of setup.sql",
        "./deploy.sh   # image for linux/amd64, push, upload spec, create or update the service",
        "eveflow apply -f {out}/pipeline.yaml   # work pool + deployments in Prefect",
    ],
    "vm": [
        "cd {out} && cp .env.example .env && chmod 600 .env   # fill it in",
        "docker compose up -d   # or: docker compose --profile single-box up -d",
        "eveflow apply -f {out}/pipeline.yaml   # work pool + deployments in Prefect",
        "without Docker: see README.md (systemd unit in systemd/)",
    ],
}


@app.command("render")
def render_command(
    target: Target = typer.Option(..., "--target", "-t", help="Where the pipeline will run.", case_sensitive=False),
    file: Path = typer.Option(..., "--file", "-f", help="EvePipeline YAML file.", dir_okay=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory; nothing is written outside it.", file_okay=False),
) -> None:
    """Render a pipeline for Snowflake SPCS or a VM (compose, systemd, prefect.yaml). Never writes secret values."""
    pipeline = load_pipeline(file)
    written = render(pipeline, target.value, out)
    root = out.resolve()
    typer.echo(f"Rendered pipeline '{pipeline.name}' for {target.value} into {out}:")
    for path in written:
        typer.echo(f"  {path.relative_to(root)}")
    typer.echo("Next steps:")
    for number, step in enumerate(_NEXT_STEPS[target.value], start=1):
        typer.echo(f"  {number}. {step.format(out=out)}")


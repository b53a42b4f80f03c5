"""`eveflow crd` and `eveflow operator`, registered on the root Typer app."""

from __future__ import annotations

import typer

from eveflow_etl.cli.app import app

from eveflow_operator.crd import render_crd


@app.command("crd")
def crd_command() -> None:
    """Print the EvePipeline CustomResourceDefinition generated from the model (YAML)."""
    typer.echo(render_crd(), nl=False)


@app.command("operator")
def operator_command(
    verbose: bool = typer.Option(False, "--verbose", help="kopf's verbose logging."),
    debug: bool = typer.Option(False, "--debug", help="kopf's debug logging."),
) -> None:
    """Run the EvePipeline operator (wraps `kopf run`; settings from EVEFLOW_OPERATOR_* variables)."""
    # Imported here: kopf and the handlers add ~1.6 s to every other command's start (`--help`).
    from eveflow_operator.entrypoint import run_operator

    raise SystemExit(run_operator(verbose=verbose, debug=debug))

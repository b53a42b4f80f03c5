"""The root ``eveflow`` Typer app; command modules register themselves on it."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="eveflow",
    no_args_is_help=True,
    add_completion=False,
    help="Kubernetes-native Prefect pipelines for EVE Online market data.",
)
dev_app = typer.Typer(no_args_is_help=True, help="Local stand-ins for development and tests.")
app.add_typer(dev_app, name="dev")

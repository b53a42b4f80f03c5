"""``eveflow demo``: the whole pipeline on embedded defaults (no cluster, no cloud, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from eveflow_etl.cli.app import app, dev_app  # noqa: F401
from eveflow_etl.orchestration.demo import DemoOptions, parse_regions, run_demo
from eveflow_etl.orchestration.demo_report import Reporter
from eveflow_etl.settings import EtlSettings


@app.command("demo")
def demo(
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Where the demo keeps its state (default EVEFLOW_DATA_DIR or ~/.eveflow)."
    ),
    keep: bool = typer.Option(False, "--keep", help="Leave everything running until Ctrl-C."),
    regions: Optional[list[str]] = typer.Option(
        None, "--regions", help="Region ids to load, comma-separated (default: the example's three hubs)."
    ),
    port: int = typer.Option(4200, "--port", min=0, max=65535, help="Prefect server port (a free one if taken)."),
    timeout: float = typer.Option(600, "--timeout", min=10, help="Seconds to wait for the flow run."),
) -> None:
    """Start Prefect, PostgreSQL and a local ESI server, apply examples/pipeline.yaml, run it once."""
    directory = data_dir or EtlSettings().data_dir
    run_demo(DemoOptions(data_dir=directory, keep=keep, regions=parse_regions(regions), port=port,
                         timeout_seconds=timeout), Reporter())

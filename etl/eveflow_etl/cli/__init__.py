"""The ``eveflow`` command line (ETL, Prefect and render commands).

The console script entry point is :func:`eveflow_operator.cli.main`, which adds the operator
commands on top of this app; ``eveflow_etl`` itself never imports kopf or kubernetes.
"""

from __future__ import annotations

import sys

from eveflow_etl.cli.app import app
from eveflow_etl.errors import EveflowError

# Each module registers its commands on ``app`` when imported.
from eveflow_etl.cli import etl_cmd, csv_cmd, dev_cmd, pipeline_cmd, worker_cmd, demo_cmd, render_cmd  # noqa: E402,F401
from eveflow_etl.cli import backfill_cmd  # noqa: E402,F401


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; user-facing errors become one line on stderr and their exit code.

    Typer's standalone mode already turns usage errors into a usage message and exit 2; what it
    would print as a traceback -- our own errors -- is caught here instead.
    """
    try:
        app(args=argv, standalone_mode=True)
    except EveflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        return 130
    return 0

"""Console script ``eveflow``: the ETL/Prefect/render app plus the operator commands.

This module is the composition root, so it is the one place allowed to import both sides.
"""

from __future__ import annotations

import sys

from eveflow_etl.cli import app, run
from eveflow_operator import cli_commands  # noqa: F401  (registers `operator` and `crd`)


def main() -> None:
    sys.exit(run())


__all__ = ["app", "main"]

"""`eveflow operator` and `eveflow crd` (filled in by the operator work)."""

from eveflow_etl.cli.app import app  # noqa: F401

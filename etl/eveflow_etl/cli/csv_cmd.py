"""Commands of this module are registered on the root app (filled in by its owner)."""

from eveflow_etl.cli.app import app, dev_app  # noqa: F401

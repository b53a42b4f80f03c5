"""Shared test configuration. Each real service has its own fixture module under fixtures/."""

import pytest

from eveflow_etl.settings import load_settings

pytest_plugins = [
    "tests.fixtures.argocd",
    "tests.fixtures.postgres",
    "tests.fixtures.esi",
    "tests.fixtures.prefect",
    "tests.fixtures.kube",
    "tests.fixtures.control_plane",
]


@pytest.fixture(autouse=True)
def _fresh_settings():
    """The process-wide ETL settings are read once per process (``load_settings`` is cached);
    in-process tests set their own environment, so each test starts and ends uncached."""
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()

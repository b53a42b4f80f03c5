"""Shared test configuration. Each real service has its own fixture module under fixtures/."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.esi",
    "tests.fixtures.prefect",
    "tests.fixtures.kube",
]

"""The pipeline plan: every fact derived from a spec, one row of the table per spec variant."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from eveflow_etl.plan import (
    PG_VARIABLES,
    SNOWFLAKE_VARIABLES,
    PipelinePlan,
    pipeline_plan,
    worker_args,
)
from eveflow_etl.spec import SecretKeyRef, parse_pipeline

BASE: dict[str, Any] = {
    "apiVersion": "eveflow.dev/v1alpha1",
    "kind": "EvePipeline",
    "metadata": {"name": "jita"},
    "spec": {
        "workPool": {"name": "pool-a", "type": "process",
                     "queues": [{"name": "default"}, {"name": "bulk", "priority": 2}]},
        "source": {"kind": "esi-history", "regions": [10000002]},
    },
}
DEFAULT_URL = "http://prefect-server:4200/api"
DEFAULT_IMAGE = "example.org/eveflow:1.0"
BASE_ARGS = ["worker", "--pool", "pool-a", "--type", "process"]


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A change of the base document: ``spec.worker.queues`` = value."""
    def change(doc: dict) -> None:
        *parents, leaf = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return change


# (id, changes to BASE, namespace given, settings given?, expected plan fields)
CASES: list[tuple[str, list[Callable[[dict], None]], str | None, bool, dict[str, Any]]] = [
    ("defaults outside Kubernetes", [], None, False, {
        "namespace": "default",
        "pipeline_tag": "eveflow.dev/pipeline:default.jita",
        "deployment_tags": ("eveflow", "eveflow.dev/pipeline:default.jita"),
        "deployment_description": "Managed by eveflow from EvePipeline default/jita: "
                                  "change the pipeline, not this deployment.",
        "pool_creator": "(created for pipeline default.jita)",
        "pool_description": "Managed by eveflow (created for pipeline default.jita); deleted with its last pipeline.",
        "target_schema": "eve", "target_table": "market_history",
        "database_variables": PG_VARIABLES, "database_fixed_env": {},
        "jobs_namespace": "default",
        # No spec.worker.queues: every queue of the spec's pool, in the spec's order.
        "worker_queues": ("default", "bulk"), "worker_limit": None,
        "worker_args": (*BASE_ARGS, "--queue", "default", "--queue", "bulk", "--port", "8080"),
        "worker_image": None, "prefect_api_url": None,
        "prefect_credential_env": None, "prefect_credential_ref": None,
    }),
    ("operator's defaults fill what the spec leaves empty", [], "team-a", True, {
        "namespace": "team-a", "pipeline_tag": "eveflow.dev/pipeline:team-a.jita", "jobs_namespace": "team-a",
        "worker_image": DEFAULT_IMAGE, "prefect_api_url": DEFAULT_URL,
    }),
    ("the spec beats the operator's defaults",
     [_set("spec.prefect.apiUrl", "https://prefect.example/api"), _set("spec.worker.image", "mine:2")], "ns", True, {
         "worker_image": "mine:2", "prefect_api_url": "https://prefect.example/api",
     }),
    ("metadata.namespace when no namespace is given", [_set("metadata.namespace", "from-file")], None, False, {
        "namespace": "from-file", "pipeline_tag": "eveflow.dev/pipeline:from-file.jita",
    }),
    ("worker.queues chosen", [_set("spec.worker.queues", ["bulk"])], "ns", False, {
        "worker_queues": ("bulk",), "worker_args": (*BASE_ARGS, "--queue", "bulk", "--port", "8080"),
    }),
    ("autoscaling: a replica takes runsPerReplica runs",
     [_set("spec.worker.autoscaling", {"maxReplicas": 4, "runsPerReplica": 3})], "ns", False, {
         "worker_limit": 3,
         "worker_args": (*BASE_ARGS, "--queue", "default", "--queue", "bulk", "--limit", "3", "--port", "8080"),
     }),
    ("table and schema named", [_set("spec.destination", {"schema": "mart", "table": "prices"})], "ns", False, {
        "target_schema": "mart", "target_table": "prices",
    }),
    ("orders source: its default table", [_set("spec.source.kind", "esi-orders")], "ns", False, {
        "target_table": "market_orders",
    }),
    ("kubernetes pool: Jobs in the pipeline's namespace",
     [_set("spec.workPool.type", "kubernetes")], "team-a", False, {
         "jobs_namespace": "team-a",
         "worker_args": ("worker", "--pool", "pool-a", "--type", "kubernetes", "--queue", "default",
                         "--queue", "bulk", "--port", "8080"),
     }),
    ("kubernetes pool: Jobs in the namespace it names",
     [_set("spec.workPool.type", "kubernetes"), _set("spec.workPool.kubernetes", {"namespace": "jobs"})],
     "team-a", False, {"jobs_namespace": "jobs", "namespace": "team-a"}),
    ("cloud: the API key, from its Secret",
     [_set("spec.prefect", {"mode": "cloud", "apiKeySecretRef": {"name": "cloud", "key": "api-key"}})],
     "ns", True, {"prefect_credential_env": "PREFECT_API_KEY", "prefect_api_url": DEFAULT_URL,
                  "prefect_credential_ref": SecretKeyRef(name="cloud", key="api-key")}),
    ("cloud without a Secret still needs the API key", [_set("spec.prefect", {"mode": "cloud"})], "ns", False, {
        "prefect_credential_env": "PREFECT_API_KEY", "prefect_credential_ref": None,
    }),
    ("self-hosted with basic auth",
     [_set("spec.prefect", {"authStringSecretRef": {"name": "auth", "key": "auth-string"}})], "ns", False, {
         "prefect_credential_env": "PREFECT_API_AUTH_STRING",
         "prefect_credential_ref": SecretKeyRef(name="auth", key="auth-string"),
     }),
    ("crunchy: PG* variables, TLS fixed", [_set("spec.destination.profile", "crunchy")], "ns", False, {
        "database_variables": PG_VARIABLES, "database_fixed_env": {"PGSSLMODE": "require"},
    }),
    ("snowflake: its own variables", [_set("spec.destination.profile", "snowflake")], "ns", False, {
        "database_variables": SNOWFLAKE_VARIABLES, "database_fixed_env": {},
    }),
    ("local: the embedded server, no variables", [_set("spec.destination.profile", "local")], "ns", False, {
        "database_variables": None,
    }),
]


def _plan(changes: list[Callable[[dict], None]], namespace: str | None, with_defaults: bool) -> PipelinePlan:
    doc = copy.deepcopy(BASE)
    for change in changes:
        change(doc)
    defaults = {"default_api_url": DEFAULT_URL, "default_image": DEFAULT_IMAGE} if with_defaults else {}
    return pipeline_plan(parse_pipeline(doc), namespace, **defaults)


@pytest.mark.parametrize(("changes", "namespace", "with_defaults", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_plan_table(changes, namespace, with_defaults, expected) -> None:
    plan = _plan(changes, namespace, with_defaults)
    assert {name: getattr(plan, name) for name in expected} == expected


def test_the_first_row_names_every_field() -> None:
    """A field added to the plan must get a row in the table."""
    assert set(CASES[0][4]) == {f.name for f in dataclasses.fields(PipelinePlan)}


def test_the_plan_is_frozen_and_a_function_of_its_arguments() -> None:
    first, second = _plan([], "ns", True), _plan([], "ns", True)
    assert first == second
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.jobs_namespace = "elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.database_fixed_env["PGSSLMODE"] = "disable"  # type: ignore[index]


def test_worker_args_of_another_pool() -> None:
    """What the VM render's second worker runs: another pool, all of its queues, no limit."""
    assert worker_args("vm-docker", "docker") == ["worker", "--pool", "vm-docker", "--type", "docker",
                                                  "--port", "8080"]


def test_qualified_table() -> None:
    assert _plan([_set("spec.destination", {"schema": "mart"})], "ns", False).qualified_table == "mart.market_history"

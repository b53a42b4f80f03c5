"""Argo CD: the EvePipeline health check, run by tests/tools/argocd-health in gopher-lua with the
globals and libraries Argo CD gives a script from argocd-cm, over one fixture per state; and the
example Application."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.fixtures.argocd import ArgoHealth

from .conftest import CHART, ROOT

pytestmark = pytest.mark.helm

HEALTH_LUA = (CHART / "argocd" / "health.lua").read_text()
FIXTURES = sorted((Path(__file__).parent / "argocd-fixtures").glob("*.yaml"))
ARGO_STATES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def test_one_fixture_per_state() -> None:
    states = {yaml.safe_load(p.read_text())["expected"]["status"] for p in FIXTURES}
    assert {"Healthy", "Progressing", "Degraded", "Suspended"} <= states


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_health(path: Path, argo_health: ArgoHealth) -> None:
    fixture = yaml.safe_load(path.read_text())
    result = argo_health(fixture["object"])
    assert result["status"] in ARGO_STATES
    assert result == fixture["expected"]


@pytest.mark.parametrize("reason", ["InvalidSpec", "SecretNotFound", "PrefectAuthFailed", "PrefectRejected"])
def test_every_reason_the_user_must_fix_is_degraded(reason: str, argo_health: ArgoHealth) -> None:
    from eveflow_operator import status

    assert getattr(status, {"InvalidSpec": "INVALID_SPEC", "SecretNotFound": "SECRET_NOT_FOUND",
                            "PrefectAuthFailed": "PREFECT_AUTH_FAILED", "PrefectRejected": "PREFECT_REJECTED"}[reason]) == reason
    obj = {"metadata": {"generation": 2}, "spec": {},
           "status": {"observedGeneration": 2, "conditions": [
               {"type": "Ready", "status": "False", "reason": reason, "message": "fix it"}]}}
    assert argo_health(obj) == {"status": "Degraded", "message": f"{reason}: fix it"}


@pytest.mark.parametrize("reason", ["PrefectUnavailable", "WorkerUnavailable", "NotReconciled"])
def test_transient_reasons_are_progressing(reason: str, argo_health: ArgoHealth) -> None:
    obj = {"metadata": {"generation": 1}, "spec": {},
           "status": {"observedGeneration": 1, "conditions": [
               {"type": "Ready", "status": "False", "reason": reason, "message": "later"}]}}
    assert argo_health(obj)["status"] == "Progressing"


def _reduced(obs_kwargs: dict, suspend: bool = False) -> dict:
    from eveflow_etl.orchestration.types import SyncResult
    from eveflow_operator.status import Observation, Problem, WorkerState, reduce_status

    kwargs = dict(obs_kwargs)
    if "problem" in kwargs:
        kwargs["problem"] = Problem(*kwargs["problem"])
    if "worker" in kwargs:
        kwargs["worker"] = WorkerState(*kwargs["worker"])
    if kwargs.pop("synced", False):
        kwargs["sync"] = SyncResult(work_pool_name="eveflow-process", work_pool_id="p1",
                                    deployment_ids={"market-history": "d1"}, schedule_ids={"daily": "s1"})
    status = reduce_status(None, Observation(generation=3, suspended=suspend, **kwargs), "2025-01-01T00:00:00Z")
    return {"metadata": {"name": "market-history", "generation": 3}, "spec": {"suspend": suspend}, "status": status}


@pytest.mark.parametrize(("obs", "suspend", "expected"), [
    ({"synced": True, "worker": (1, 1)}, False, "Healthy"),
    ({"synced": True, "worker": (0, 0)}, True, "Suspended"),
    ({"synced": True, "worker": (1, 0)}, False, "Progressing"),
    ({}, False, "Progressing"),
    ({"problem": ("InvalidSpec", "spec.schedules[0].timezone: not an IANA name")}, False, "Degraded"),
    ({"problem": ("SecretNotFound", "Secret 'eveflow-postgres' not found")}, False, "Degraded"),
    ({"problem": ("PrefectUnavailable", "connection refused")}, False, "Progressing"),
], ids=["in-sync", "suspended", "worker-starting", "not-reconciled", "invalid-spec", "secret-missing",
        "prefect-down"])
def test_health_of_statuses_the_operator_writes(obs: dict, suspend: bool, expected: str,
                                               argo_health: ArgoHealth) -> None:
    """The operator's own status reducer, read by the health check."""
    result = argo_health(_reduced(obs, suspend))
    assert result["status"] == expected, result
    assert result["message"]


@pytest.mark.parametrize(("script", "error"), [
    ('return {status = string.upper("healthy")}', "attempt to index a non-table object(nil) with key 'upper'"),
    ('os.exit(1)', "attempt to index a non-table object(nil) with key 'exit'"),
    ('return {status = tostring(math.huge)}', "attempt to index a non-table object(nil) with key 'huge'"),
    ('return "Healthy"', "expect table output from Lua script, not string"),
], ids=["string", "os", "math", "not-a-table"])
def test_runner_opens_only_what_argocd_opens(script: str, error: str, argo_health: ArgoHealth, tmp_path: Path) -> None:
    """An argocd-cm script gets the base, table and package libraries only; one that needs more
    fails in Argo CD, so it fails here."""
    path = tmp_path / "health.lua"
    path.write_text(script)
    with pytest.raises(AssertionError, match=re.escape(error)):
        ArgoHealth(argo_health.binary, path)({"metadata": {"name": "x"}})


def test_runner_maps_an_unknown_status_like_argocd(argo_health: ArgoHealth, tmp_path: Path) -> None:
    path = tmp_path / "health.lua"
    path.write_text('local os = require("os"); return {status = "Fine", message = tostring(os.time() > 0)}')
    assert ArgoHealth(argo_health.binary, path)({}) == {
        "status": "Unknown", "message": "Lua returned an invalid health status"}


def test_documented_argocd_cm_snippet_is_the_shipped_script() -> None:
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "resource.customizations.health.eveflow.dev_EvePipeline: |" in doc
    block = doc.split("resource.customizations.health.eveflow.dev_EvePipeline: |", 1)[1].split("```", 1)[0]
    lines = [line[4:] if line.startswith("    ") else line.strip() for line in block.strip("\n").splitlines()]
    assert "\n".join(lines).strip() == HEALTH_LUA.strip(), "docs/kubernetes.md's argocd-cm snippet differs from health.lua"


def test_example_application() -> None:
    app = yaml.safe_load((CHART / "argocd" / "application.yaml").read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    chart_source, pipelines_source = app["spec"]["sources"]
    assert (ROOT / chart_source["path"] / "Chart.yaml").exists()
    assert (ROOT / pipelines_source["path"] / pipelines_source["directory"]["include"]).exists()
    # The values it passes are valid chart values.
    import json

    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out

    jsonschema.Draft202012Validator(schema).validate(merge(defaults, chart_source["helm"]["valuesObject"]))

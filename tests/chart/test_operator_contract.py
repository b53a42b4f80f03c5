"""The chart and the code agree: the operator Deployment's command, args, env and ports are what
`eveflow operator` accepts, the RBAC holds what the operator grants on, and the dashboard only
queries metrics the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eveflow_operator import entrypoint
from eveflow_operator import metrics as operator_metrics
from eveflow_operator.rbac import WORKER_RULES
from eveflow_operator.settings import OperatorSettings

from .conftest import CHART, RELEASE, ROOT, Helm, by_kind, one, values_files

pytestmark = pytest.mark.helm

def _kopf_run(settings: OperatorSettings) -> tuple[str | None, bool, list[str]]:
    """(liveness endpoint, cluster-wide?, namespaces) that `eveflow operator` gives kopf."""
    options = entrypoint.kopf_options(settings)
    return options.get("liveness_endpoint"), options["clusterwide"], list(options["namespaces"])


def _operator_container(manifests: list[dict]) -> dict:
    deployment = one(manifests, "Deployment", RELEASE)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _settings_from(container: dict, monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    for name in list(__import__("os").environ):
        if name.startswith("EVEFLOW_OPERATOR_"):
            monkeypatch.delenv(name)
    for entry in container["env"]:
        if entry["name"].startswith("EVEFLOW_OPERATOR_"):
            assert "value" in entry, f"{entry['name']} should be a literal setting"
            monkeypatch.setenv(entry["name"], entry["value"])
    return OperatorSettings()


@pytest.mark.parametrize("values", [None, *values_files()], ids=["defaults", *[p.stem for p in values_files()]])
def test_operator_env_names_are_settings(helm: Helm, values: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    container = _operator_container(helm.template(*([values] if values else [])))
    prefix = OperatorSettings.model_config["env_prefix"]
    fields = {prefix + name.upper() for name in OperatorSettings.model_fields}
    names = [e["name"] for e in container["env"] if e["name"].startswith(prefix)]
    assert names and set(names) <= fields, f"unknown settings: {set(names) - fields}"
    settings = _settings_from(container, monkeypatch)  # validates every value
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.metrics_port == ports["metrics"]
    assert settings.health_port == ports["health"]
    # kopf serves the liveness endpoint the probes call.
    liveness, _, _ = _kopf_run(settings)
    assert liveness == f"http://0.0.0.0:{ports['health']}/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert settings.worker_image == container["image"]


def test_watch_namespaces_reach_kopf(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    container = _operator_container(helm.template(ROOT / "tests/chart/values/watch-namespaces.yaml"))
    settings = _settings_from(container, monkeypatch)
    assert settings.namespaces == ["etl-dev", "etl-prod"]
    _, clusterwide, namespaces = _kopf_run(settings)
    assert not clusterwide and namespaces == ["etl-dev", "etl-prod"]
    assert settings.resync_seconds == 120
    assert settings.prefect_api_url == "http://prefect-server.prefect.svc:4200/api"


def test_command_and_args_are_accepted_by_eveflow_operator(helm: Helm) -> None:
    eveflow = shutil.which("eveflow", path=str(Path(sys.executable).parent)) or "eveflow"
    help_text = subprocess.run([eveflow, "operator", "--help"], capture_output=True, text=True,
                               timeout=120, check=True).stdout
    for log_level in ("normal", "verbose", "debug"):
        container = _operator_container(helm.template(extra=("--set", f"operator.logLevel={log_level}")))
        assert container["command"] == ["eveflow"]
        assert container["args"][0] == "operator"
        for option in container["args"][1:]:
            assert re.search(rf"{re.escape(option)}\b", help_text), f"`eveflow operator` has no {option}"


def test_operator_binds_workers_without_holding_their_rights(helm: Helm) -> None:
    """RBAC escalation prevention without the operator holding Job/pod rights: it may only `bind`
    the chart's worker ClusterRole, which holds exactly the worker's rules."""
    for values, kind in ((None, "ClusterRole"), (ROOT / "tests/chart/values/watch-namespaces.yaml", "Role")):
        manifests = helm.template(*([values] if values else []))
        worker = one(manifests, "ClusterRole", f"{RELEASE}-worker")
        granted = {(g, r, v) for rule in WORKER_RULES for g in rule["apiGroups"]
                   for r in rule["resources"] for v in rule["verbs"]}
        assert {(g, r, v) for rule in worker["rules"] for g in rule["apiGroups"]
                for r in rule["resources"] for v in rule["verbs"]} == granted
        for role in by_kind(manifests, kind):
            if role["metadata"]["name"] == f"{RELEASE}-worker":
                continue
            assert any(rule.get("verbs") == ["bind"] and rule.get("resourceNames") == [f"{RELEASE}-worker"]
                       for rule in role["rules"]), f"{kind} {role['metadata']['name']} cannot bind the worker role"


def _exported_metric_names() -> set[str]:
    names: set[str] = set()
    for collector in list(operator_metrics.REGISTRY._collector_to_names):  # noqa: SLF001
        for metric in collector.describe():
            names.add(metric.name)
            if metric.type == "counter":
                names.add(metric.name + "_total")
            if metric.type == "histogram":
                names |= {metric.name + s for s in ("_bucket", "_sum", "_count")}
    worker_source = "".join(p.read_text() for p in (ROOT / "etl/eveflow_etl/orchestration").glob("worker*.py"))
    for kind, name in re.findall(r'(Counter|Gauge|Histogram|Info)\("(eveflow_[a-z_]+)"', worker_source):
        names.add(name + ("_total" if kind == "Counter" else ""))
    return names


def test_dashboard_queries_exported_metrics() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(eveflow_[a-z_]+)", e)}
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("reconciles", "errors", "runs", "rows loaded"):
        assert topic in titles
    missing = used - _exported_metric_names()
    assert not missing, f"the dashboard queries metrics nobody exports: {sorted(missing)}"

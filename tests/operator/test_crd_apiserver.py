"""The committed CRD on a real kube-apiserver: accepted by `kubectl apply -f crds/` (structural
schema, every CEL rule compiled and within the cost budget), printer columns and `kubectl
explain` served, and hostile EvePipelines refused by the API server itself with the field named.
No operator runs here: what is refused never reaches it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .e2e import ROOT, example
from .test_crd import _DELETE, BAD, _mutate

pytestmark = [pytest.mark.k8s]

CRD_NAME = "evepipelines.eveflow.dev"


@pytest.fixture(scope="module")
def crd(kube) -> dict:
    out = kube.kubectl("apply", "-f", str(ROOT / "crds") + "/").stdout
    assert CRD_NAME in out, out
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    kube.forget_discovery()
    return kube.kubectl_json("get", "crd", CRD_NAME)


def test_crd_is_accepted_structural_and_established(crd) -> None:
    conditions = {c["type"]: c for c in crd["status"]["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert conditions["NamesAccepted"]["status"] == "True"
    # A non-structural schema or a CEL rule over the cost budget would be refused at apply, or
    # reported here as NonStructuralSchema.
    assert "NonStructuralSchema" not in conditions, conditions["NonStructuralSchema"]


def _spec_rules(node: Any) -> int:
    if isinstance(node, dict):
        return len(node.get("x-kubernetes-validations") or []) + sum(_spec_rules(v) for v in node.values())
    if isinstance(node, list):
        return sum(_spec_rules(v) for v in node)
    return 0


def test_crd_keeps_every_cel_rule(crd) -> None:
    committed = __import__("yaml").safe_load((ROOT / "crds" / f"{CRD_NAME}.yaml").read_text())
    stored = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _spec_rules(stored) == _spec_rules(committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) > 0


def test_get_evp_shows_the_printer_columns(kube, crd, kube_namespace) -> None:
    kube.kubectl("apply", "-n", kube_namespace, "-f", str(ROOT / "examples" / "pipeline.yaml"))
    header = kube.kubectl("get", "evp", "-n", kube_namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "POOL", "SCHEDULES", "LAST", "RUN", "AGE"], header
    wide = kube.kubectl("get", "evp", "-n", kube_namespace, "-o", "wide").stdout.splitlines()
    assert "REASON" in wide[0] and "NEXT RUN" in wide[0], wide[0]
    assert "market-history" in wide[1] and "eveflow-process" in wide[1], wide[1]
    assert "market-history" in kube.kubectl("get", "eveflow", "-n", kube_namespace).stdout  # category


def test_kubectl_explain_describes_the_fields(kube, crd) -> None:
    out = kube.kubectl("explain", "evepipeline.spec.workPool").stdout
    assert "FIELDS:" in out and "concurrencyLimit" in out and "type" in out, out
    out = kube.kubectl("explain", "evp.spec.schedules.cron").stdout
    assert "cron" in out.lower()


# Cases only a real API server can show (besides test_crd.BAD, which all run here too).
HOSTILE: dict[str, tuple[str, Any, str]] = {
    **{case: (dotted, value, expected) for case, (dotted, value, expected) in BAD.items()},
    "shell injection in the name": ("metadata.name", "x;rm -rf /", "metadata.name"),
    "upper case name": ("metadata.name", "MarketHistory", "metadata.name"),
    "command substitution in a queue name": ("spec.workPool.queues.0.name", "$(id)", "spec.workPool.queues[0].name"),
    "enormous region list": ("spec.source.regions", list(range(10000001, 10003001)), "spec.source.regions"),
    "enormous schedule list": ("spec.schedules", [{"slug": f"s{i}", "cron": "0 * * * *", "timezone": "UTC"}
                                                 for i in range(500)], "spec.schedules"),
    "replicas as a string": ("spec.worker.replicas", "one", "spec.worker.replicas"),
    "schedules as a map": ("spec.schedules", {"daily": "0 12 * * *"}, "spec.schedules"),
    "unknown top-level field": ("spec.image", "evil.example.org/x:latest", "spec.image"),
}


# Where the API server's wording differs from test_crd's (jsonschema/cel-python) expectation.
SERVER_FIELD = {
    "credentials in the Prefect URL": "spec.prefect.apiUrl: Forbidden",
    "duplicate queue names": "spec.workPool.queues",
    "duplicate slugs": "spec.schedules: Duplicate value",
    "memory quantity": "spec.worker.resources.limits.memory",
    "missing source": "spec.source: Required value",
    "repeated region": "spec.source.regions: Duplicate value",
    "typo in a field name": 'unknown field "spec.workPool.concurencyLimit"',
}


def _server_field(expected: str) -> str:
    """test_crd names fields the jsonschema way (`schedules.0.cron`); the API server says
    `spec.schedules[0].cron`. Messages (with spaces) are compared as they are."""
    if " " in expected or "'" in expected or expected.startswith(("spec.", "metadata.")):
        return expected
    return "spec." + re.sub(r"\.(\d+)", r"[\1]", expected)


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=lambda c: c.replace(" ", "-"))
def test_api_server_refuses_hostile_pipeline(kube, crd, kube_namespace, case: str) -> None:
    dotted, value, expected = HOSTILE[case]
    doc = _mutate(example(), dotted, value) if value is not _DELETE else _mutate(example(), dotted, _DELETE)
    # create, not apply: apply would first GET the object by its (hostile) name client-side.
    proc = kube.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode != 0, f"{case}: the API server accepted it:\n{proc.stdout}"
    err = proc.stderr
    print(f"{case}: {err.strip()}")
    assert "is invalid" in err or "unknown field" in err, err
    assert SERVER_FIELD.get(case, _server_field(expected)) in err, f"{case}: the message does not name {expected!r}:\n{err}"
    assert kube.kubectl("get", "evp", "-n", kube_namespace, "-o", "name").stdout.strip() == ""

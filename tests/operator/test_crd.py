"""The CRD is generated from the model, committed byte-identical, structural, and rejects bad specs.

Kubernetes validates a CR with its openAPIV3Schema and then its CEL rules. Here the schema is
checked with jsonschema (with unknown fields forbidden, like kubectl's strict field validation)
and every ``x-kubernetes-validations`` rule is evaluated with cel-python, so the committed YAML
is exercised the way an API server would use it.
"""

from __future__ import annotations

import copy
import re
import zoneinfo
from pathlib import Path
from typing import Any, Iterator

import celpy
import jsonschema
import pytest
import yaml
from croniter import croniter

from eveflow_operator.crd import CRD_PATHS, CRON_PATTERN, TIMEZONE_PATTERN, build_crd, render_crd
from tests.fixtures.urls import PREFECT_URL_SAMPLES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "examples" / "pipeline.yaml", ROOT / "examples" / "pipeline-kubernetes.yaml"]


def _schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for name, child in node.get("properties", {}).items():
            yield from _walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _strict(node: Any) -> Any:
    """The schema as the API server applies it with fieldValidation=Strict: unknown fields fail."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


_CEL = celpy.Environment()


def _cel_errors(schema: dict[str, Any], value: Any, path: str = "spec") -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = _CEL.program(_CEL.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            errors.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(child, value[name], f"{path}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def crd_errors(document: dict[str, Any]) -> list[str]:
    """Every error an API server with this CRD would report for ``document`` (schema, then CEL)."""
    schema = _schema()
    validator = jsonschema.Draft7Validator(_strict(schema))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    if errors:
        return errors
    return _cel_errors(schema["properties"]["spec"], document["spec"])


def _example(i: int = 0) -> dict[str, Any]:
    return yaml.safe_load(EXAMPLES[i].read_text())


# --- generated == committed ---------------------------------------------------------------


@pytest.mark.parametrize("relpath", CRD_PATHS)
def test_committed_crd_is_what_the_model_generates(relpath: str) -> None:
    path = ROOT / relpath
    assert path.exists(), f"{relpath} is missing: run `eveflow crd > {relpath}`"
    assert path.read_text() == render_crd(), f"{relpath} is stale: run `eveflow crd > {relpath}`"


def test_eveflow_crd_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    from eveflow_operator.cli import app  # the console script's app, with the operator commands

    from eveflow_etl.cli import run

    assert app is not None
    assert run(["crd"]) == 0
    assert capsys.readouterr().out == render_crd()


# --- shape ---------------------------------------------------------------------------------


def test_names_scope_subresource_and_columns() -> None:
    crd = build_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "evepipelines.eveflow.dev"
    assert spec["group"] == "eveflow.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["evp"] and spec["names"]["categories"] == ["eveflow"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Pool", "Schedules", "Last run", "Age"]


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "nullable", "$defs", "title"):
            assert forbidden not in node, f"{path or '<root>'} has {forbidden}"
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            assert node["default"] is not None, path


def test_free_form_maps_preserve_unknown_fields() -> None:
    nodes = dict(_walk(_schema()))
    for path in (".spec.workPool.jobVariables", ".status"):
        assert nodes[path].get("x-kubernetes-preserve-unknown-fields") is True, path


def test_every_cel_rule_compiles() -> None:
    rules = [r for _, n in _walk(_schema()) for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 5
    for rule in rules:
        _CEL.compile(rule["rule"])
        assert rule["message"]


# --- examples pass, mistakes fail -------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    assert crd_errors(yaml.safe_load(path.read_text())) == []


def _mutate(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()

BAD = {
    "unknown pool type": ("spec.workPool.type", "lambda", "workPool.type"),
    "pool name not a DNS label": ("spec.workPool.name", "Eveflow_Pool", "workPool.name"),
    "missing source": ("spec.source", _DELETE, "'source' is a required property"),
    "typo in a field name": ("spec.workPool.concurencyLimit", 3, "concurencyLimit"),
    "region out of range": ("spec.source.regions", [42], "source.regions.0"),
    "repeated region": ("spec.source.regions", [10000002, 10000002], "regions must not repeat"),
    "replicas too high": ("spec.worker.replicas", 500, "worker.replicas"),
    "replicas beside autoscaling": ("spec.worker.autoscaling", {"maxReplicas": 2},
                                    "worker.replicas and worker.autoscaling are both set"),
    "autoscaling min above max": ("spec.worker", {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}},
                                  "minReplicas is above maxReplicas"),
    "cron with four fields": ("spec.schedules.0.cron", "0 12 * *", "schedules.0.cron"),
    "cron minute 61": ("spec.schedules.0.cron", "61 * * * *", "schedules.0.cron"),
    "cron hour 24": ("spec.schedules.0.cron", "0 24 * * *", "schedules.0.cron"),
    "timezone not IANA": ("spec.schedules.0.timezone", "+02:00", "schedules.0.timezone"),
    "timezone lower case": ("spec.schedules.0.timezone", "europe/oslo", "schedules.0.timezone"),
    "duplicate slugs": ("spec.schedules.1.slug", "daily", "schedule slugs must be unique"),
    "duplicate queue names": ("spec.workPool.queues.1.name", "default", "work queue names must be unique"),
    "kubernetes settings on a process pool": (
        "spec.workPool.kubernetes", {"finishedJobTtlSeconds": 60}, "need workPool.type: kubernetes"),
    "worker queue not in the pool": ("spec.worker.queues", ["default", "gpu"], "worker.queues entry"),
    "bad deletion policy": ("spec.deletionPolicy", "Keep", "deletionPolicy"),
    "api key on a self-hosted server": (
        "spec.prefect.apiKeySecretRef", {"name": "prefect", "key": "key"}, "apiKeySecretRef is for Prefect Cloud"),
    "memory quantity": ("spec.worker.resources", {"limits": {"memory": "2 gigs"}}, "memory"),
    "credentials in the Prefect URL": (
        "spec.prefect.apiUrl", "https://admin:s3cret@prefect.example.org/api", "prefect.authStringSecretRef"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=lambda c: c.replace(" ", "-"))
def test_crd_rejects_mistakes(case: str) -> None:
    dotted, value, expected = BAD[case]
    errors = crd_errors(_mutate(_example(0), dotted, value))
    assert errors, f"{case}: accepted"
    assert any(expected in e for e in errors), errors


def test_the_model_rejects_what_the_crd_rejects() -> None:
    """The CRD is never looser than the model where both can say (same mistakes, both layers)."""
    from eveflow_etl.errors import ConfigError
    from eveflow_etl.spec import parse_pipeline

    for case, (dotted, value, _) in BAD.items():
        if case in {"cron hour 24", "timezone lower case"}:
            pass  # both reject; kept in the loop for symmetry
        with pytest.raises(ConfigError):
            parse_pipeline(_mutate(_example(0), dotted, value))


@pytest.mark.parametrize("url", PREFECT_URL_SAMPLES)
def test_crd_and_model_agree_on_credentials_in_the_prefect_url(url: str) -> None:
    """`kubectl apply` refuses userinfo in spec.prefect.apiUrl exactly where the model does."""
    from eveflow_etl.errors import ConfigError
    from eveflow_etl.spec import parse_pipeline

    doc = _mutate(_example(0), "spec.prefect", {"apiUrl": url})
    crd = crd_errors(doc)
    try:
        parse_pipeline(doc)
        model_accepts = True
    except ConfigError:
        model_accepts = False
    assert model_accepts == (crd == []), (url, crd)
    assert model_accepts == ("@" not in url.split("://", 1)[1].split("/")[0].split("?")[0].split("#")[0])
    assert all("s3cret" not in e for e in crd)


def test_cron_pattern_accepts_what_croniter_accepts() -> None:
    good = ["* * * * *", "15 12 * * *", "0 */6 * * *", "*/15 * * * *", "0 0 1,15 * MON-FRI",
            "5 4 * JAN,JUL sun", "0 9-17/2 * * 1-5", "59 23 31 12 7", "0 0 L * *", "0 0 * * 5#2",
            "0 09 * * *", "00 00 01 01 *", "05 4 * 03 01"]
    bad = ["61 * * * *", "* 24 * * *", "* * 32 * *", "* * * 13 *", "* * * * 8", "0 12 * *",
           "0 0 0 * *", "@daily", "a b c d e", "0 12 * * * *", "0 24 * * *", "0 0 00 * *", "0 0 * 00 *", "0 0 * * 08"]
    for cron in good:
        assert re.match(CRON_PATTERN, cron), cron
        assert croniter.is_valid(cron), cron
    for cron in bad:
        assert not re.match(CRON_PATTERN, cron), cron


def test_timezone_pattern_accepts_every_zoneinfo_name() -> None:
    names = sorted(zoneinfo.available_timezones() - {"localtime"})
    assert names
    rejected = [n for n in names if not re.match(TIMEZONE_PATTERN, n)]
    assert rejected == []
    for bad in ("oslo", "europe/oslo", "+02:00", "UTC+2", "UTC-2", "Europe/Oslo "):
        assert not re.match(TIMEZONE_PATTERN, bad), bad

"""Issue 12, item 6: every list in the model is bounded so that the largest valid EvePipeline still
fits in what Kubernetes keeps of it. All annotations of an object share 256 KiB; `kubectl apply`
keeps the whole document in one (last-applied-configuration) and kopf the spec in another
(last-handled-configuration): a spec that does not fit can never be patched again, and the
operator would retry it forever. Schedule parameters go through the same model as the spec."""

from __future__ import annotations

import json

import kopf
import pytest

from eveflow_etl.errors import ConfigError
from eveflow_etl.spec import (
    MAX_JOB_VARIABLES_BYTES,
    MAX_REGIONS,
    MAX_SCHEDULE_TYPES,
    MAX_SCHEDULES,
    MAX_TYPES,
    EvePipelineSpec,
    parse_pipeline,
)

ANNOTATIONS_LIMIT = 256 * 1024
BIGGEST_TYPE = 2_147_483_647


def _name(i: int, length: int = 63) -> str:
    return f"q{i:03d}-".ljust(length, "x")


def _cron() -> str:
    """A valid five-field cron expression of the longest allowed length (120)."""
    minutes = ",".join(str(m) for m in range(60))
    cron = f"{minutes[:100].rstrip(',')} * * * *"
    return cron.rjust(120)


def largest_document() -> dict:
    """The biggest EvePipeline the model accepts, every list and string at its bound."""
    regions = list(range(19_999_999 - MAX_REGIONS + 1, 19_999_999 + 1))
    queues = [{"name": _name(i), "priority": 100, "concurrencyLimit": 10_000} for i in range(20)]
    job_variables = {f"k{i:02d}": "v" * 200 for i in range(32)}
    while len(json.dumps(job_variables)) > MAX_JOB_VARIABLES_BYTES:
        job_variables.popitem()
    ref = {"name": "s".ljust(253, "s"), "key": "k".ljust(253, "k")}
    schedules = [{
        "slug": _name(i), "cron": _cron(), "timezone": "America/Argentina/ComodRivadavia", "active": True,
        "parameters": {"regions": regions, "types": [BIGGEST_TYPE - j for j in range(MAX_SCHEDULE_TYPES)],
                       "fan_out": True, "retries": 10, "retry_delay_seconds": 3600, "timeout_seconds": 86_400},
    } for i in range(MAX_SCHEDULES)]
    spec = {
        "prefect": {"mode": "selfHosted", "apiUrl": "https://" + "p" * 2024 + ".example/api", "authStringSecretRef": ref},
        "workPool": {"name": _name(0), "type": "kubernetes", "concurrencyLimit": 10_000, "queues": queues,
                     "jobVariables": job_variables,
                     "kubernetes": {"namespace": _name(1), "finishedJobTtlSeconds": 604_800,
                                    "imagePullPolicy": "IfNotPresent"}},
        "worker": {"replicas": 50, "image": "r" * 512, "queues": [q["name"] for q in queues],
                   "resources": {"requests": {"cpu": "1000000.000m", "memory": "1000000.000Mi"},
                                 "limits": {"cpu": "1000000.000m", "memory": "1000000.000Mi"}}},
        "source": {"kind": "esi-history", "regions": regions, "fanOut": True,
                   "types": [BIGGEST_TYPE - j for j in range(MAX_TYPES)]},
        "destination": {"profile": "crunchy", "secretRef": "d".ljust(253, "d"), "schema": "s" * 63, "table": "t" * 63},
        "schedules": schedules,
        "maintenance": {"enabled": True, "cron": _cron(), "retentionDays": 3650},
        "retries": 10, "retryDelaySeconds": 3600, "timeoutSeconds": 86_400, "suspend": True,
        "deletionPolicy": "Orphan",
    }
    return {"apiVersion": "eveflow.dev/v1alpha1", "kind": "EvePipeline",
            "metadata": {"name": "n" * 53, "namespace": "m" * 63}, "spec": spec}


def test_the_largest_valid_spec_fits_in_the_annotations_kubernetes_keeps() -> None:
    document = largest_document()
    parse_pipeline(json.loads(json.dumps(document)))  # valid: every field at its bound
    # What `kubectl apply` (client-side) keeps: the whole document, compact JSON.
    last_applied = json.dumps(document, separators=(",", ":")) + "\n"
    # What kopf keeps, computed by kopf's own storage (the operator's prefix and key).
    storage = kopf.AnnotationsDiffBaseStorage(prefix="eveflow.dev", key="last-handled-configuration")
    body = kopf.Body({**document, "metadata": {**document["metadata"], "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": last_applied}}})
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    kopf_annotations = patch["metadata"]["annotations"]
    used = len(last_applied) + sum(len(k) + len(v) for k, v in kopf_annotations.items()) \
        + len("kubectl.kubernetes.io/last-applied-configuration")
    # Room left for kopf's progress annotations and the user's own labels/annotations.
    assert used + 16 * 1024 <= ANNOTATIONS_LIMIT, f"{used} bytes of annotations for the largest spec"


@pytest.mark.parametrize("path, value", [
    (("source", "types"), list(range(1, MAX_TYPES + 2))),
    (("workPool", "jobVariables"), {f"k{i}": "v" for i in range(33)}),
    (("workPool", "jobVariables"), {"env": {"X": "v" * (MAX_JOB_VARIABLES_BYTES + 1)}}),
])
def test_one_past_a_bound_is_refused_naming_the_field(path, value) -> None:
    document = largest_document()
    document["spec"]["workPool"]["jobVariables"] = {}
    node = document["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=rf"spec\.{path[0]}"):
        parse_pipeline(document)


@pytest.mark.parametrize("parameters, field", [
    ({"regions": list(range(10_000_000, 10_001_000))}, "regions"),  # 1,000 regions through a schedule
    ({"regions": [1]}, "regions"),  # not a region id
    ({"types": list(range(1, MAX_SCHEDULE_TYPES + 2))}, "types"),
    ({"destination": "local"}, "destination"),  # not a parameter a schedule may change
    ({"retries": 1000}, "retries"),
])
def test_schedule_parameters_are_validated_by_the_same_model(parameters, field) -> None:
    document = largest_document()
    document["spec"]["schedules"] = [{"slug": "s", "cron": "5 12 * * *", "parameters": parameters}]
    with pytest.raises(ConfigError, match=rf"spec\.schedules\[0\]\.parameters\.{field}"):
        parse_pipeline(document)


def test_every_list_in_the_crd_is_bounded() -> None:
    from eveflow_operator.crd import openapi_schema

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "array":
                assert "maxItems" in node, f"{path} has no maxItems"
            if node.get("type") == "object" and node.get("x-kubernetes-preserve-unknown-fields") and path.endswith("jobVariables"):
                assert "maxProperties" in node, path
            for key, value in node.items():
                walk(value, f"{path}.{key}" if key not in ("properties", "items") else path)
    walk(openapi_schema()["properties"]["spec"], "spec")
    assert EvePipelineSpec.model_fields["schedules"].metadata  # bounded in the model itself

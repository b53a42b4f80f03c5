"""The EvePipeline CustomResourceDefinition, generated from the pydantic model.

The model in :mod:`eveflow_etl.spec` is the single source of truth. This module turns its JSON
schema into a *structural* openAPIV3Schema (every ``$ref`` inlined, ``X | None`` turned into an
optional ``X``, free-form maps marked ``x-kubernetes-preserve-unknown-fields``) and adds the
cross-field rules pydantic checks in Python as CEL ``x-kubernetes-validations``, so the API
server rejects the same mistakes ``eveflow apply`` does before the operator ever sees them.

``render_crd()`` is deterministic: the committed YAML (``crds/`` and the chart's copy) is
compared byte for byte with it in the tests.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from eveflow_etl.spec import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    SHORT_NAME,
    URL_WITH_USERINFO,
    EvePipelineSpec,
    EvePipelineStatus,
)

CRD_NAME = f"{PLURAL}.{API_GROUP}"
CATEGORY = "eveflow"
CRD_PATHS = ("crds/evepipelines.eveflow.dev.yaml", "charts/eveflow/crds/evepipelines.eveflow.dev.yaml")

# Stricter than the model's CRON_SHAPE (five non-blank fields): each field must use the
# characters and number ranges of its position, so '61 * * * *' or '0 0 * *' fail at
# `kubectl apply`. croniter in the operator remains the full check.
_N = {
    "minute": r"([0-5]?[0-9])",
    # Leading zeros ('09', '01') are valid cron and common.
    "hour": r"([01]?[0-9]|2[0-3])",
    "dom": r"(0?[1-9]|[12][0-9]|3[01]|L)",
    "month": r"(0?[1-9]|1[0-2]|[A-Za-z]{3})",
    "dow": r"(0?[0-7]|[A-Za-z]{3})",
}


def _cron_field(n: str, extra: str = "") -> str:
    item = rf"(\*|{n}(-{n})?{extra})(/[0-9]{{1,2}})?"
    return rf"{item}(,{item})*"


CRON_PATTERN = (
    r"^\s*"
    + _cron_field(_N["minute"])
    + r"\s+"
    + _cron_field(_N["hour"])
    + r"\s+"
    + _cron_field(_N["dom"], "W?")
    + r"\s+"
    + _cron_field(_N["month"])
    + r"\s+"
    + _cron_field(_N["dow"], "(#[1-5]|L)?")
    + r"\s*$"
)
# IANA names are Area/Location[/Sub] or a capitalised legacy single name (UTC, CET, Japan, EST5EDT).
# Catches 'oslo', 'europe/oslo', '+02:00', 'Europe/Oslo ' at `kubectl apply`; the exact list check
# (zoneinfo) stays in the model and surfaces as Ready=False / InvalidSpec. Hard-coded rather than
# built from the machine's tzdata so the generated CRD is the same everywhere.
TIMEZONE_PATTERN = (
    r"^([A-Z][A-Za-z]{0,12}([0-9][A-Z]{3}|-[A-Za-z]{2,4}|[+-]?0)?|"
    r"(Africa|America|Antarctica|Arctic|Asia|Atlantic|Australia|Brazil|Canada|Chile|Etc|Europe|"
    r"Indian|Mexico|Pacific|US)/[A-Za-z0-9_+-]{1,30}(/[A-Za-z0-9_+-]{1,30})?)$"
)

# CEL rules keyed by the JSON path of the schema node they sit on ("" = spec root).
_RULES: dict[str, list[dict[str, str]]] = {
    "": [
        {
            "rule": "!has(self.worker) || !has(self.worker.queues) || self.worker.queues.all(q, "
            "has(self.workPool.queues) ? self.workPool.queues.exists(p, p.name == q) : q == 'default')",
            "message": "every worker.queues entry must be the name of a queue in workPool.queues",
            "reason": "FieldValueInvalid",
            "fieldPath": ".worker.queues",
        },
        {
            "rule": "!has(self.prefect) || !has(self.prefect.mode) || self.prefect.mode != 'cloud' "
            "|| !has(self.prefect.authStringSecretRef)",
            "message": "prefect.authStringSecretRef is for a self-hosted server; Prefect Cloud uses apiKeySecretRef",
            "fieldPath": ".prefect.authStringSecretRef",
        },
        {
            "rule": "!has(self.prefect) || (has(self.prefect.mode) && self.prefect.mode == 'cloud') "
            "|| !has(self.prefect.apiKeySecretRef)",
            "message": "prefect.apiKeySecretRef is for Prefect Cloud (mode: cloud); a self-hosted server "
            "uses authStringSecretRef",
            "fieldPath": ".prefect.apiKeySecretRef",
        },
        {
            "rule": "!has(self.worker) || !has(self.worker.autoscaling) || "
            "(has(self.workPool.type) ? self.workPool.type : 'process') == 'process'",
            "message": "worker.autoscaling is for process pools: a kubernetes or docker pool runs flow runs "
            "in their own Jobs/containers, not in the worker, so more worker replicas add nothing",
            "fieldPath": ".worker.autoscaling",
        },
    ],
    "worker": [
        {
            "rule": "!has(self.autoscaling) || !has(self.replicas)",
            "message": "worker.replicas and worker.autoscaling are both set: autoscaling decides the "
            "replica count; remove replicas (or remove autoscaling for a fixed count)",
            "fieldPath": ".replicas",
        }
    ],
    "worker.autoscaling": [
        {
            "rule": "(has(self.minReplicas) ? self.minReplicas : 0) <= (has(self.maxReplicas) ? self.maxReplicas : 3)",
            "message": "worker.autoscaling.minReplicas is above maxReplicas; lower minReplicas or raise maxReplicas",
            "fieldPath": ".minReplicas",
        }
    ],
    "prefect.apiUrl": [
        {
            # The model's check, same regex (RE2 and Python agree on it). The message never
            # includes the value: it holds the password.
            "rule": f"!self.matches('{URL_WITH_USERINFO}')",
            "message": "prefect.apiUrl must not contain credentials ('user:password@' before the host): "
            "anyone who can read the worker Deployment can read the URL; put them in a Secret referenced by "
            "prefect.authStringSecretRef (self-hosted) or prefect.apiKeySecretRef (mode: cloud)",
            "reason": "FieldValueForbidden",
        }
    ],
    "schedules": [
        {
            "rule": "self.all(x, self.exists_one(y, y.slug == x.slug))",
            "message": "schedule slugs must be unique within the pipeline",
            "reason": "FieldValueDuplicate",
        }
    ],
    "workPool": [
        {
            "rule": "!has(self.kubernetes) || (has(self.type) && self.type == 'kubernetes')",
            "message": "workPool.kubernetes settings need workPool.type: kubernetes",
            "fieldPath": ".kubernetes",
        }
    ],
    "workPool.queues": [
        {
            "rule": "self.all(x, self.exists_one(y, y.name == x.name))",
            "message": "work queue names must be unique within the pool",
            "reason": "FieldValueDuplicate",
        }
    ],
    "source.regions": [
        {"rule": "self.all(x, self.exists_one(y, y == x))", "message": "regions must not repeat",
         "reason": "FieldValueDuplicate"}
    ],
}
# Tighter patterns than the model's, keyed like _RULES.
_PATTERNS = {
    "schedules[].cron": CRON_PATTERN,
    "maintenance.cron": CRON_PATTERN,
    "schedules[].timezone": TIMEZONE_PATTERN,
}
# Bounds the model leaves open but the API server's CEL cost estimate needs (a rule iterating an
# unbounded list is rejected when the CRD is created).
_BOUNDS: dict[str, dict[str, Any]] = {}
# Keys of pydantic's JSON schema that mean nothing to (or are forbidden in) a CRD schema.
_DROP = {"title", "$defs", "examples"}


def _structural(node: Any, defs: dict[str, Any], path: str) -> Any:
    """Inline refs, flatten ``anyOf [X, null]`` into X, drop non-structural keys."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        # Siblings of $ref (a field's description) win over the referenced model's.
        node = {**target, **node}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"{path}: a union of several types is not structural: {options}")
        option = _structural(options[0], defs, path)
        node = {**option, **node}
        if node.get("default", 0) is None:
            node.pop("default")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and (value is None or isinstance(value, (dict, list)))):
            continue
        if key == "properties":
            out[key] = {
                name: _structural(prop, defs, f"{path}.{name}" if path else name)
                for name, prop in value.items()
            }
        elif key == "items":
            out[key] = _structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _structural(value, defs, f"{path}{{}}")
            # False: a structural schema prunes unknown fields; it may not say so explicitly.
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    if path in _PATTERNS:
        out["pattern"] = _PATTERNS[path]
    out.update(_BOUNDS.get(path, {}))
    if path in _RULES:
        out["x-kubernetes-validations"] = _RULES[path]
    return out


def structural_schema(model: type, *, root_path: str = "") -> dict[str, Any]:
    """The structural openAPIV3Schema of one pydantic model (aliases = document field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}), root_path)


def openapi_schema() -> dict[str, Any]:
    """The whole object's schema: spec (validated), status (written by the operator)."""
    spec = structural_schema(EvePipelineSpec)
    spec["description"] = "Desired state: a Prefect work pool, deployments with schedules, and a worker."
    # A root path no rule is keyed by: rules and tighter patterns belong to the spec only.
    status = structural_schema(EvePipelineStatus, root_path="status")
    # Status is written by the operator (and kopf's own bookkeeping): keep unknown fields.
    status["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "type": "object",
        "description": "An EvePipeline: one ETL pipeline orchestrated by Prefect on Kubernetes.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }


PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Pool", "type": "string", "jsonPath": ".spec.workPool.name"},
    {"name": "Schedules", "type": "integer", "jsonPath": ".status.schedules"},
    {"name": "Last run", "type": "string", "jsonPath": ".status.lastRun.state"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Reason", "type": "string", "priority": 1,
     "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    {"name": "Next run", "type": "string", "priority": 1, "jsonPath": ".status.nextRun.time"},
]


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition object for ``evepipelines.eveflow.dev``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "eveflow", "app.kubernetes.io/part-of": "eveflow"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as the YAML committed in ``crds/`` (stable key order, no line wrapping)."""
    header = (
        "# Generated by `eveflow crd` from eveflow_etl.spec (the pydantic model). Do not edit:\n"
        "# change the model and run `eveflow crd > crds/evepipelines.eveflow.dev.yaml` (and the chart's copy).\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=10_000, allow_unicode=True)

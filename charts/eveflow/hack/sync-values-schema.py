#!/usr/bin/env python3
"""Regenerate the examplePipeline.spec part of values.schema.json from the EvePipeline model.

The pydantic model in eveflow_etl.spec is the single source of truth for a pipeline spec; the
chart's values schema embeds its JSON schema (refs inlined) so `helm install` rejects the same
mistakes `kubectl apply` does. Run after changing the model (tests/chart fails until you do):

    .venv/bin/python charts/eveflow/hack/sync-values-schema.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "values.schema.json"
# Keywords of pydantic's output that mean nothing to a values schema (or only to Kubernetes).
_DROP = {"title", "x-kubernetes-preserve-unknown-fields"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
            extra = {k: _inline(v, defs) for k, v in node.items() if k != "$ref" and k not in _DROP}
            return {**target, **extra}
        return {k: _inline(v, defs) for k, v in node.items() if k not in _DROP and k != "$defs"}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def spec_schema() -> dict[str, Any]:
    """The EvePipeline spec as a self-contained JSON schema (no $ref)."""
    from eveflow_etl.spec import EvePipelineSpec

    raw = EvePipelineSpec.model_json_schema(by_alias=True, mode="validation")
    schema = _inline(raw, raw.get("$defs", {}))
    schema["description"] = (
        "The EvePipeline spec, generated from eveflow_etl.spec.EvePipelineSpec by "
        "hack/sync-values-schema.py (cron syntax, time zones and cross-field rules are checked "
        "by the CRD and the operator)."
    )
    return schema


def render() -> str:
    """values.schema.json as it should be on disk."""
    values_schema = json.loads(SCHEMA_PATH.read_text())
    values_schema["properties"]["examplePipeline"]["properties"]["spec"] = spec_schema()
    return json.dumps(values_schema, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

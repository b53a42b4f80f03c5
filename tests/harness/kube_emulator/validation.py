"""Custom resources against their CRD's openAPIV3Schema: defaulting, pruning, validation.

Approximates the API server's structural-schema handling; `x-kubernetes-validations` (CEL) rules
are not evaluated.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema

_META_KEYS = {"apiVersion", "kind", "metadata"}


def apply_defaults(schema: dict | None, obj: Any) -> None:
    """Fill in `default`s of missing properties, in place (like the API server on read/write)."""
    if not isinstance(schema, dict):
        return
    if isinstance(obj, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in obj and isinstance(sub, dict) and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                apply_defaults(sub, obj[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, value in obj.items():
                if name not in (schema.get("properties") or {}):
                    apply_defaults(extra, value)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(schema["items"], item)


def prune(schema: dict | None, obj: Any, path: str = "", root: bool = True) -> list[str]:
    """Drop fields the schema does not declare, in place; return their paths."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    unknown: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name in list(obj):
            sub_path = f"{path}.{name}" if path else name
            if root and name in _META_KEYS:
                continue
            if props is not None and name in props:
                unknown += prune(props[name], obj[name], sub_path, False)
            elif isinstance(extra, dict):
                unknown += prune(extra, obj[name], sub_path, False)
            elif extra is True:
                continue
            elif props is not None or schema.get("type") == "object":
                unknown.append(sub_path)
                del obj[name]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(obj):
            unknown += prune(schema["items"], item, f"{path}[{n}]", False)
    return unknown


def _to_jsonschema(schema: Any) -> Any:
    """OpenAPI v3.0 flavour -> JSON Schema draft 4 (nullable, int-or-string, drop extensions)."""
    if isinstance(schema, list):
        return [_to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format", "default", "example"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _to_jsonschema(v) for k, v in value.items()}
        else:
            out[key] = _to_jsonschema(value)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _field(error: jsonschema.ValidationError) -> str:
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: jsonschema.ValidationError) -> tuple[str, str, str]:
    """(field, reason, message) in the API server's wording; message excludes the field."""
    field = _field(error)
    value = json.dumps(error.instance)
    v = error.validator
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        field = f"{field}.{missing}" if field else missing
        return field, "FieldValueRequired", "Required value"
    if v == "enum":
        allowed = ", ".join(json.dumps(x) for x in error.validator_value)
        return field, "FieldValueNotSupported", \
            f"Unsupported value: {value}: supported values: {allowed}"
    where = f"{field} in body"
    messages = {
        "type": f"{where} must be of type {error.validator_value}",
        "pattern": f"{where} should match '{error.validator_value}'",
        "minimum": f"{where} should be greater than or equal to {error.validator_value}",
        "maximum": f"{where} should be less than or equal to {error.validator_value}",
        "minLength": f"{where} should be at least {error.validator_value} chars long",
        "maxLength": f"{where} may not be longer than {error.validator_value}",
        "minItems": f"{where} should have at least {error.validator_value} items",
        "maxItems": f"{where} must have at most {error.validator_value} items",
    }
    return field, "FieldValueInvalid", \
        f"Invalid value: {value}: {messages.get(v, error.message)}"


def validate(schema: dict | None, obj: dict) -> list[dict]:
    """Schema violations as Kubernetes StatusCause dicts (field, reason, message)."""
    if not isinstance(schema, dict):
        return []
    body = {k: v for k, v in obj.items() if k not in _META_KEYS}
    js = _to_jsonschema(schema)
    props = js.get("properties") or {}
    js["properties"] = {k: v for k, v in props.items() if k not in _META_KEYS}
    if "required" in js:
        js["required"] = [r for r in js["required"] if r not in _META_KEYS]
    validator = jsonschema.Draft4Validator(js)
    causes = []
    for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        field, reason, message = _describe(error)
        causes.append({"reason": reason, "message": message, "field": field})
    return causes

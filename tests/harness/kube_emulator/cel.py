"""CRD `x-kubernetes-validations` rules evaluated with cel-python, when it is installed.

Standard CEL (macros, size, matches, has, ...) works; Kubernetes-only library functions (isSorted,
quantity, url, ...) are unknown to cel-python: rules using them are skipped rather than guessed.
Transition rules (using `oldSelf`) run only on updates.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

try:
    import celpy
except ImportError:  # optional: without it, CEL rules are not evaluated
    celpy = None

_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number"}
_PREFIX = {"FieldValueRequired": "Required value", "FieldValueForbidden": "Forbidden",
           "FieldValueDuplicate": "Duplicate value"}


@lru_cache(maxsize=512)
def _program(rule: str):
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _holds(rule: str, value: Any, old: Any) -> bool | None:
    """True/False when the rule evaluates; None when it cannot (unsupported function, ...)."""
    try:
        act = {"self": celpy.json_to_cel(value)}
        if old is not None:
            act["oldSelf"] = celpy.json_to_cel(old)
        result = _program(rule).evaluate(act)
    except Exception:  # noqa: BLE001 -- compile/eval errors mean "cannot judge here"
        return None
    if isinstance(result, bool) or type(result).__name__ == "BoolType":
        return bool(result)
    return None


def check(schema: dict | None, value: Any, old: Any = None, path: str = "") -> list[dict]:
    """Causes (field, reason, message) for every rule that evaluates to false."""
    if celpy is None or not isinstance(schema, dict):
        return []
    causes = []
    for rule in schema.get("x-kubernetes-validations") or []:
        text = rule.get("rule", "")
        if "oldSelf" in text and old is None:
            continue
        if _holds(text, value, old) is False:
            field = path + (rule.get("fieldPath") or "")
            reason = rule.get("reason") or "FieldValueInvalid"
            msg = rule.get("message") or f"failed rule: {text}"
            prefix = _PREFIX.get(reason) or \
                f'Invalid value: "{_TYPE_NAMES.get(type(value), "object")}"'
            causes.append({"field": field or "<nil>", "reason": reason,
                           "message": f"{prefix}: {msg}"})
    props = schema.get("properties") or {}
    if isinstance(value, dict):
        extra = schema.get("additionalProperties")
        for name, sub in value.items():
            sub_schema = props.get(name, extra if isinstance(extra, dict) else None)
            sub_old = old.get(name) if isinstance(old, dict) else None
            causes += check(sub_schema, sub, sub_old, f"{path}.{name}" if path else name)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            causes += check(schema["items"], item, None, f"{path}[{i}]")
    return causes

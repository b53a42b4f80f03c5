"""JSON patch (RFC 6902), merge patch (RFC 7386) and an approximation of strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """A patch that cannot apply; `test_failed` marks a failed `test` op (kopf relies on 422)."""

    def __init__(self, message: str, test_failed: bool = False):
        super().__init__(message)
        self.test_failed = test_failed


# --- JSON patch -------------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise PatchError(f"path {path!r} not found")
    return cur


def _get(doc: Any, path: str) -> Any:
    return _walk(doc, _pointer(path), path)


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"index out of range in {path!r}")
    else:
        raise PatchError(f"cannot add at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"unable to remove nonexistent key {path!r}")


def json_patch(doc: Any, ops: list[dict]) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "test":
            try:
                actual = _get(doc, path)
            except PatchError:
                actual = None
            if actual != op.get("value"):
                raise PatchError(
                    f"the server rejected our request due to an error in our request: "
                    f"testing value {path} failed", test_failed=True)
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        else:
            raise PatchError(f"unexpected JSON patch op {kind!r}")
    return doc


# --- merge patch ------------------------------------------------------------------------------

def merge_patch(doc: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# --- strategic merge patch (approximate) ------------------------------------------------------
# Built-in list fields that merge by a key instead of being replaced (patchMergeKey in the API
# types). Primitive lists with patchStrategy=merge are unioned.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "imagePullSecrets": "name", "volumeMounts": "mountPath",
    "volumeDevices": "devicePath", "conditions": "type", "ownerReferences": "uid",
    "hostAliases": "ip", "topologySpreadConstraints": "topologyKey", "resourceClaims": "name",
}
PRIMITIVE_MERGE = {"finalizers"}


def _merge_key(field: str, items: list) -> str | None:
    if field == "ports":
        dicts = [i for i in items if isinstance(i, dict)]
        if dicts and all("containerPort" in i for i in dicts):
            return "containerPort"
        if dicts and all("port" in i for i in dicts):
            return "port"
        return None
    return MERGE_KEYS.get(field)


def _merge_list(field: str, old: Any, patch: list, directives: dict) -> list:
    old = old if isinstance(old, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [i for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    key = _merge_key(field, patch + old)
    if field in PRIMITIVE_MERGE:
        out = list(old)
        out += [v for v in patch if v not in out]
        gone = directives.get(f"$deleteFromPrimitiveList/{field}") or []
        return [v for v in out if v not in gone]
    if key is None:
        return copy.deepcopy(patch)
    out = [copy.deepcopy(i) for i in old]
    for item in patch:
        if not isinstance(item, dict):
            continue
        idx = next((n for n, o in enumerate(out)
                    if isinstance(o, dict) and o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge({}, item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    order = directives.get(f"$setElementOrder/{field}")
    if order:
        wanted = [o.get(key) for o in order if isinstance(o, dict)]
        rank = {v: n for n, v in enumerate(wanted)}
        out.sort(key=lambda i: rank.get(i.get(key) if isinstance(i, dict) else None, len(rank)))
    return out


def strategic_merge(doc: Any, patch: Any) -> Any:
    """Strategic merge for the common shapes kubectl apply sends (keyed lists, directives)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    directives = {k: v for k, v in patch.items() if k.startswith("$")}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and value.get("$patch") == "delete":
            out.pop(key, None)
        elif isinstance(value, list):
            out[key] = _merge_list(key, out.get(key), value, directives)
        else:
            out[key] = strategic_merge(out.get(key), value)
    for key in list(directives):
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if field not in patch and isinstance(out.get(field), list):
                out[field] = [v for v in out[field] if v not in directives[key]]
    if "$retainKeys" in directives:
        keep = set(directives["$retainKeys"])
        out = {k: v for k, v in out.items() if k in keep}
    return out


# --- server-side apply (approximate: merge plus removal of what this manager dropped) ---------

def removed_fields(previous: Any, current: Any) -> Any:
    """A merge patch nulling fields a manager applied before and no longer applies."""
    if not isinstance(previous, dict) or not isinstance(current, dict):
        return None
    out: dict = {}
    for key, value in previous.items():
        if key not in current:
            out[key] = None
        elif isinstance(value, dict) and isinstance(current[key], dict):
            sub = removed_fields(value, current[key])
            if sub:
                out[key] = sub
    return out


def apply_patch(doc: dict, applied: dict, previous: dict | None) -> dict:
    base = merge_patch(doc, removed_fields(previous, applied) or {}) if previous else doc
    return strategic_merge(base, applied)
